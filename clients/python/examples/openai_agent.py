"""An OpenAI Agents SDK agent recorded in the ledger by one tracing processor; runs offline.

    aivcs-ledgerd --listen 127.0.0.1:50051 &       # or any daemon, via AIVCS_LEDGER_TARGET
    python clients/python/examples/openai_agent.py

`OfflineModel` implements the SDK's `Model` interface with canned replies
(and a generation span, as the SDK's own models make), so no API key or
network is needed; with a real model, drop `model=` and nothing else changes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agents import Agent, Model, ModelResponse, Runner, Usage, function_tool, set_trace_processors
from agents.tracing import generation_span
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from aivcs.ledger import Client
from aivcs.ledger.openai_agents import LedgerTracingProcessor


class OfflineModel(Model):
    """First asks for the `forecast` tool, then answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_response(
        self,
        system_instructions: Any,
        input: Any,
        model_settings: Any,
        tools: Any,
        output_schema: Any,
        handoffs: Any,
        tracing: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        self.calls += 1
        output: list[Any]
        if self.calls == 1:
            output = [
                ResponseFunctionToolCall(
                    id="c1", call_id="c1", type="function_call", name="forecast", arguments=json.dumps({"city": "Oslo"})
                )
            ]
        else:
            output = [
                ResponseOutputMessage(
                    id="m1",
                    type="message",
                    role="assistant",
                    status="completed",
                    content=[ResponseOutputText(type="output_text", annotations=[], text="Take an umbrella.")],
                )
            ]
        with generation_span(model="offline-model", disabled=tracing.is_disabled()) as span:
            span.span_data.usage = {"input_tokens": 12, "output_tokens": 3}
        return ModelResponse(
            output=output, response_id=None, usage=Usage(requests=1, input_tokens=12, output_tokens=3, total_tokens=15)
        )

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


@function_tool
def forecast(city: str) -> str:
    """Tomorrow's weather in a city."""
    return f"rain in {city}"


agent = Agent(name="weather-bot", instructions="Answer with the forecast.", tools=[forecast], model=OfflineModel())


async def main() -> None:
    with Client() as client:  # $AIVCS_LEDGER_TARGET, default 127.0.0.1:50051
        processor = LedgerTracingProcessor(client, agents=[agent])  # digest: instructions, tools, model
        set_trace_processors([processor])  # add_trace_processor(...) keeps the SDK's own exporter too
        result = await Runner.run(agent, "Will it rain in Oslo?")
        processor.force_flush()
        run = client.runs.get(next(iter(processor.run_ids.values())))
        print(f"answer: {result.final_output}")
        print(f"run {run.run_id}: {run.agent_name} {run.status.value}, {run.total_events} events")
        for event in client.events.read(run.run_id):
            model, usage = event.payload.get("model") or "", event.payload.get("usage") or ""
            print(f"  {event.seq:>2} {event.kind:<12} {model} {usage}")
        processor.shutdown()


asyncio.run(main())
