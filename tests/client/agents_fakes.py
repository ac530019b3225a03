"""An offline `agents.Model` for tests and examples: replies from a script, with generation spans."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from agents import Model, ModelResponse, Usage
from agents.tracing import generation_span
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText


def say(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id="msg",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


def call(name: str, arguments: dict[str, Any], call_id: str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        id=call_id, call_id=call_id, type="function_call", name=name, arguments=json.dumps(arguments)
    )


class ScriptedModel(Model):
    """Answers each model call with the next turn of its script, as a real model would: the SDK's
    `ModelResponse` with usage, inside a `generation_span` carrying the model name and the usage."""

    def __init__(
        self, turns: list[list[Any]], name: str = "scripted-model-1", usage: tuple[int, int] = (13, 5)
    ) -> None:
        self.turns = list(turns)
        self.name = name
        self.usage = usage

    async def get_response(
        self,
        system_instructions: Any,
        input: Any,
        model_settings: Any,
        tools: Any,
        output_schema: Any,
        handoffs: Any,
        tracing: Any,
        *,
        previous_response_id: Any = None,
        conversation_id: Any = None,
        prompt: Any = None,
    ) -> ModelResponse:
        output = self.turns.pop(0)
        prompt_tokens, completion_tokens = self.usage
        with generation_span(
            model=self.name,
            disabled=tracing.is_disabled(),
            input=[{"role": "system", "content": system_instructions or ""}],
        ) as span:
            span.span_data.output = [item.model_dump() for item in output]
            span.span_data.usage = {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}
        return ModelResponse(
            output=output,
            response_id=None,
            usage=Usage(
                requests=1,
                input_tokens=prompt_tokens,
                output_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("ScriptedModel does not stream")
