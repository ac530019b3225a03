"""The Agents SDK tracing processor against the real daemon: real Runner, real tracing, an offline model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrailTripwireTriggered,
    Runner,
    function_tool,
    input_guardrail,
    set_trace_processors,
    trace,
)
from aivcs.ledger import Client, RunStatus
from aivcs.ledger.openai_agents import LedgerTracingProcessor, agent_spec, agent_spec_digest

from harness.data import unique
from tests.client.agents_fakes import ScriptedModel, call, say
from tests.client.conftest import events_of


@function_tool
def lookup(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@input_guardrail
async def polite(context: Any, agent: Any, user_input: Any) -> GuardrailFunctionOutput:
    rude = "stupid" in str(user_input)
    return GuardrailFunctionOutput(output_info={"rude": rude}, tripwire_triggered=rude)


def agents_for(name: str) -> tuple[Agent[Any], Agent[Any]]:
    name = name.replace("-", "_")  # handoff tool names allow letters, digits and underscores
    weather = Agent(
        name=f"{name}_weather",
        instructions="Report the weather.",
        model=ScriptedModel([[say("It is sunny in Oslo.")]], usage=(20, 8)),
    )
    triage = Agent(
        name=name,
        instructions="Find the city, then hand off.",
        tools=[lookup],
        handoffs=[weather],
        input_guardrails=[polite],
        model=ScriptedModel(
            [[call("lookup", {"city": "Oslo"}, "call-1")], [call(f"transfer_to_{weather.name}", {}, "call-2")]]
        ),
    )
    return triage, weather


@pytest.fixture
def processor(client: Client) -> Iterator[LedgerTracingProcessor]:
    proc = LedgerTracingProcessor(client, tags={"suite": "adapters"})
    set_trace_processors([proc])  # only ours: nothing is exported anywhere else
    yield proc
    set_trace_processors([])
    proc.shutdown()


def only_run(proc: LedgerTracingProcessor) -> str:
    assert len(proc.run_ids) == 1
    return next(iter(proc.run_ids.values()))


async def test_a_traced_agent_run_is_one_run_with_a_span_per_event(client: Client) -> None:
    triage, weather = agents_for(unique("triage"))
    name = triage.name
    proc = LedgerTracingProcessor(client, agents=[triage], tags={"suite": "adapters"})
    set_trace_processors([proc])
    try:
        result = await Runner.run(triage, "weather in Oslo?")
        assert proc.flush(timeout=30)
    finally:
        set_trace_processors([])
    assert result.final_output == "It is sunny in Oslo."
    run_id = only_run(proc)
    run = client.runs.get(run_id)
    assert run.status is RunStatus.COMPLETED, run.status_reason
    assert run.agent_name == name  # the trace kept the default name: the first agent span names it
    assert run.spec_digest == agent_spec_digest(triage)
    assert run.tags["framework"] == "openai-agents" and run.tags["suite"] == "adapters"
    assert run.tags["workflow"] == "Agent workflow"
    events = events_of(client, run_id)
    assert run.total_events == len(events)
    kinds = [e.kind for e in events]
    assert kinds[0] == "agent_start" and events[0].payload["name"] == name
    assert kinds.count("agent_start") == kinds.count("agent_end") == 2
    assert kinds.count("generation") == 3
    assert kinds.count("function") == 1 and kinds.count("handoff") == 1 and kinds.count("guardrail") == 1
    assert kinds.index("function") < kinds.index("handoff")  # spans in the order they ended

    spans = {e.payload["span_id"]: e.payload for e in events if e.kind != "agent_start"}
    generations = [e.payload for e in events if e.kind == "generation"]
    assert [g["model"] for g in generations] == ["scripted-model-1"] * 3
    assert [g["usage"] for g in generations] == [{"input_tokens": 13, "output_tokens": 5}] * 2 + [
        {"input_tokens": 20, "output_tokens": 8}
    ]
    function = next(e.payload for e in events if e.kind == "function")
    assert function["data"]["name"] == "lookup" and "sunny in Oslo" in str(function["data"]["output"])  # type: ignore[index]
    handoff = next(e.payload for e in events if e.kind == "handoff")
    assert handoff["data"]["from_agent"] == name and handoff["data"]["to_agent"] == weather.name  # type: ignore[index]
    guardrail = next(e.payload for e in events if e.kind == "guardrail")
    assert guardrail["data"]["name"] == "polite" and guardrail["data"]["triggered"] is False  # type: ignore[index]
    # the tree: every span but the outermost has its parent among the run's spans; tools under agents
    assert [p for p in spans.values() if p["parent_id"] is None] == [events[-1].payload]
    for payload in spans.values():
        if payload["parent_id"] is not None:
            assert payload["parent_id"] in spans
    agent_of_function = spans[spans[function["span_id"]]["parent_id"]]  # type: ignore[index]
    while agent_of_function["data"]["type"] != "agent":  # type: ignore[index]
        agent_of_function = spans[agent_of_function["parent_id"]]  # type: ignore[index]
    assert agent_of_function["data"]["name"] == name  # type: ignore[index]


async def test_a_tripped_guardrail_fails_the_run_with_the_reason(
    client: Client, processor: LedgerTracingProcessor
) -> None:
    triage, _ = agents_for(unique("triage"))
    with pytest.raises(InputGuardrailTripwireTriggered):
        await Runner.run(triage, "you stupid bot")
    assert processor.flush(timeout=30)
    run = client.runs.get(only_run(processor))
    assert run.status is RunStatus.FAILED
    assert "Guardrail tripwire triggered" in run.status_reason and "polite" in run.status_reason
    guardrail = next(e for e in events_of(client, run.run_id) if e.kind == "guardrail")
    assert guardrail.payload["data"]["triggered"] is True  # type: ignore[index]


async def test_a_named_trace_of_two_runs_is_one_run_named_after_it(
    client: Client, processor: LedgerTracingProcessor
) -> None:
    workflow = unique("support-desk")
    first, _ = agents_for(unique("triage"))
    second, _ = agents_for(unique("triage"))
    with trace(workflow, group_id="conversation-7"):
        await Runner.run(first, "weather in Oslo?")
        await Runner.run(second, "and tomorrow?")
    assert processor.flush(timeout=30)
    run = client.runs.get(only_run(processor))
    assert run.status is RunStatus.COMPLETED and run.agent_name == workflow
    assert run.tags["group_id"] == "conversation-7"
    kinds = [e.kind for e in events_of(client, run.run_id)]
    assert kinds.count("agent_start") == 4 and kinds.count("generation") == 6


def test_the_agent_digest_follows_instructions_tools_and_model() -> None:
    one, _ = agents_for("same")
    two, _ = agents_for("same")
    assert agent_spec_digest(one) == agent_spec_digest(two)
    spec = agent_spec(one)
    assert spec["instructions"] == "Find the city, then hand off." and spec["model"] == "ScriptedModel"
    assert [t["name"] for t in spec["tools"]] == ["lookup"]  # type: ignore[index,union-attr]
    assert agent_spec_digest(one.clone(instructions="Be brief.")) != agent_spec_digest(one)
    assert agent_spec_digest(one.clone(tools=[])) != agent_spec_digest(one)
    assert agent_spec_digest(one.clone(model="gpt-x")) != agent_spec_digest(one)
