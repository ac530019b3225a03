"""Record OpenAI Agents SDK traces as ledger runs: `LedgerTracingProcessor`.

    from agents import add_trace_processor
    add_trace_processor(LedgerTracingProcessor(client, agents=[triage]))

Needs the `openai-agents` extra (`pip install "aivcs-ledger[openai-agents]"`).

Each trace (one `Runner.run`, or everything inside `with trace(...)`)
becomes one run. Its agent name is `agent_name` if given, else the trace's
name unless it is the SDK's default ("Agent workflow"), else the name of
the trace's first agent span; so the run is created when the first agent
span starts (or when the trace ends, for a trace without one), the events
seen before that going in first. Every span becomes one event when it ends,
its kind the span's type (`generation` with `model` and `usage`,
`response` with the same from the Responses API, `function` for tools,
`handoff`, `guardrail`, `mcp_tools`, `custom`, ...), plus `agent_start` when
an agent span starts; each carries `span_id`, `parent_id`, `started_at`,
`ended_at`, `error` and the span's exported data. The run ends with the
trace: failed, with the error as reason, if an agent, task or turn span
ended with one (the SDK puts model errors, max turns and guardrail
tripwires there; a failing tool's error goes back to the model and does
not fail the run), completed otherwise.

Spec digest: `spec_digest` if given; else, for an agent passed in
`agents`, `agent_spec_digest(agent)` (its instructions, model, tools,
handoffs and output type); else the SHA-256 of the first agent span's
`{"name", "handoffs", "output_type"}` as canonical JSON.

Like the LangChain handler, it only queues: ledger calls run on a
background thread (`aivcs.ledger._recorder`), so the agent never waits
for the ledger; `force_flush()` waits, `shutdown()` also stops the thread.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Unpack

from agents import Agent
from agents.tracing import Span, Trace, TracingProcessor
from agents.tracing.span_data import AgentSpanData, GenerationSpanData, ResponseSpanData

from aivcs.ledger._client import Client
from aivcs.ledger._jsonable import digest_of, jsonable
from aivcs.ledger._models import JSON
from aivcs.ledger._recorder import Recorder
from aivcs.ledger._session import Ending
from aivcs.ledger._settings import WriterOptions, WriterSettings, resolve_settings

__all__ = ["DEFAULT_WORKFLOW_NAME", "LedgerTracingProcessor", "agent_spec", "agent_spec_digest"]

DEFAULT_WORKFLOW_NAME = "Agent workflow"  # the SDK's trace name when the caller sets none
# Spans that stand for the agent's own progress: the SDK puts the errors that end a run on them
# (model errors, max turns, guardrail tripwires); a tool's error is handed back to the model instead.
_PROGRESS_SPANS = frozenset({"agent", "task", "turn"})


def agent_spec(agent: Agent[Any]) -> dict[str, JSON]:
    """What an agent is made of: its name, instructions (a function: its qualified name), model (a
    `Model` object: its class name), tools (name, description, JSON schema of the parameters), handoffs
    (names) and output type."""
    instructions = agent.instructions
    model = agent.model
    tools: list[JSON] = []
    for tool in agent.tools:
        tools.append(
            {
                "name": str(getattr(tool, "name", type(tool).__name__)),
                "description": jsonable(getattr(tool, "description", None)),
                "parameters": jsonable(getattr(tool, "params_json_schema", None)),
            }
        )
    handoffs: list[JSON] = sorted(
        str(getattr(h, "name", None) or getattr(h, "agent_name", None) or h) for h in agent.handoffs
    )
    output = agent.output_type
    return {
        "name": agent.name,
        "instructions": instructions
        if isinstance(instructions, str) or instructions is None
        else getattr(instructions, "__qualname__", repr(instructions)),
        "model": model if isinstance(model, str) or model is None else type(model).__qualname__,
        "tools": sorted(tools, key=lambda t: str(t["name"])),
        "handoffs": handoffs,
        "output_type": None if output is None else getattr(output, "__qualname__", repr(output)),
    }


def agent_spec_digest(agent: Agent[Any]) -> str:
    """SHA-256 of `agent_spec(agent)` as canonical JSON (sorted keys, no spaces): changes when the
    instructions, model, tools, handoffs or output type change."""
    return digest_of(agent_spec(agent))


@dataclass(slots=True)
class _Trace:
    trace_id: str
    name: str
    tags: dict[str, JSON]
    run_id: str | None = None  # set once the run is created
    waiting: list[tuple[str, dict[str, JSON], int]] = field(default_factory=list)  # events before that
    error: str | None = None


def _usage(data: Any) -> JSON:
    if isinstance(data, GenerationSpanData):
        return jsonable(data.usage)
    if isinstance(data, ResponseSpanData):
        usage = data.usage if data.usage is not None else getattr(data.response, "usage", None)
        return jsonable(usage)
    return None


def _model(data: Any) -> JSON:
    if isinstance(data, GenerationSpanData):
        return data.model
    if isinstance(data, ResponseSpanData):
        return jsonable(getattr(data.response, "model", None))
    return None


class LedgerTracingProcessor(TracingProcessor):
    """An Agents SDK tracing processor that records each trace as one run (module docstring).

    `tags` go on every run, with `framework`, `trace_id`, `workflow` and the
    trace's `group_id`. `settings` / keyword options tune the writers;
    `when_full` is what happens when the ledger stays away: "block"
    (default; the agent waits once `max_buffered_events` are waiting) or
    "drop" (events dropped and counted in `dropped`, with a warning).
    """

    def __init__(
        self,
        client: Client,
        *,
        agent_name: str | None = None,
        spec_digest: str | None = None,
        agents: Sequence[Agent[Any]] = (),
        tags: Mapping[str, JSON] | None = None,
        inactivity_timeout: float | timedelta | None = None,
        settings: WriterSettings | None = None,
        **options: Unpack[WriterOptions],
    ) -> None:
        self.agent_name = agent_name
        self.spec_digest = spec_digest
        self._digests = {agent.name: agent_spec_digest(agent) for agent in agents}
        self.tags = dict(tags or {})
        self._inactivity_timeout = inactivity_timeout
        self._recorder = Recorder(client, resolve_settings(settings, options))
        self._lock = threading.Lock()
        self._traces: dict[str, _Trace] = {}
        self.run_ids: dict[str, str] = {}
        """Ledger run id per trace id, in the order the runs were created."""

    @property
    def dropped(self) -> int:
        return self._recorder.dropped

    def run_id_of(self, trace_id: str) -> str:
        return self.run_ids[trace_id]

    # -- TracingProcessor ------------------------------------------------------------

    def on_trace_start(self, trace: Trace) -> None:
        exported = trace.export() or {}
        tags: dict[str, JSON] = {
            **self.tags,
            "framework": "openai-agents",
            "trace_id": trace.trace_id,
            "workflow": trace.name,
        }
        if exported.get("group_id"):
            tags["group_id"] = str(exported["group_id"])
        with self._lock:
            self._traces[trace.trace_id] = _Trace(trace.trace_id, trace.name, tags)

    def on_span_start(self, span: Span[Any]) -> None:
        data = span.span_data
        if not isinstance(data, AgentSpanData):
            return
        with self._lock:
            state = self._traces.get(span.trace_id)
            if state is None:
                return
            if state.run_id is None:
                self._create(state, data)
            self._emit(
                state,
                "agent_start",
                {
                    "span_id": span.span_id,
                    "parent_id": span.parent_id,
                    "name": data.name,
                    "started_at": span.started_at,
                },
            )

    def on_span_end(self, span: Span[Any]) -> None:
        data = span.span_data
        exported = span.export() or {}
        payload: dict[str, JSON] = {
            "span_id": span.span_id,
            "parent_id": span.parent_id,
            "started_at": span.started_at,
            "ended_at": span.ended_at,
            "error": jsonable(span.error),
            "data": jsonable(exported.get("span_data")),
        }
        if isinstance(data, GenerationSpanData | ResponseSpanData):
            payload["model"] = _model(data)
            payload["usage"] = _usage(data)
        with self._lock:
            state = self._traces.get(span.trace_id)
            if state is None:
                return
            if data.type in _PROGRESS_SPANS and span.error is not None and state.error is None:
                error = span.error
                detail = error.get("data")
                state.error = f"{error.get('message')}: {detail}" if detail else str(error.get("message"))
            self._emit(state, "agent_end" if isinstance(data, AgentSpanData) else data.type, payload)

    def on_trace_end(self, trace: Trace) -> None:
        with self._lock:
            state = self._traces.pop(trace.trace_id, None)
            if state is None:
                return
            if state.run_id is None:
                self._create(state, None)
        ending = Ending("fail", state.error) if state.error else Ending("complete")
        self._recorder.end(state.trace_id, ending)

    def shutdown(self) -> None:
        self._recorder.close()

    def force_flush(self) -> None:
        self._recorder.flush()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every trace seen so far is in the ledger; False on timeout."""
        return self._recorder.flush(timeout)

    # -- under the lock ---------------------------------------------------------------

    def _create(self, state: _Trace, agent: AgentSpanData | None) -> None:
        first = agent.name if agent is not None else None
        name = self.agent_name or (state.name if state.name != DEFAULT_WORKFLOW_NAME or first is None else first)
        digest = (
            self.spec_digest
            or self._digests.get(first or name)
            or digest_of(
                {
                    "name": first or name,
                    "handoffs": jsonable(agent.handoffs if agent else None),
                    "output_type": agent.output_type if agent else None,
                }
            )
        )
        state.run_id = str(uuid.uuid4())
        self.run_ids[state.trace_id] = state.run_id
        self._recorder.start(
            state.trace_id,
            run_id=state.run_id,
            spec_digest=digest,
            agent_name=name,
            tags=state.tags,
            inactivity_timeout=self._inactivity_timeout,
        )
        for kind, payload, stamp in state.waiting:
            self._recorder.emit(state.trace_id, kind, payload, stamp)
        state.waiting.clear()

    def _emit(self, state: _Trace, kind: str, payload: dict[str, JSON]) -> None:
        if state.run_id is None:
            state.waiting.append((kind, payload, time.time_ns()))
        else:
            self._recorder.emit(state.trace_id, kind, payload)
