"""The span mapping on its own: attribute values to bounded JSON, spans to run identity and events."""

from __future__ import annotations

import hashlib

import pytest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from aivcs_ledgerd.otlp.spans import SpanRefused, map_span
from aivcs_ledgerd.otlp.values import DEEPER, MAX_ITEMS, MAX_VALUE_BYTES, Bounds, any_value, attributes

SCOPE = common_pb2.InstrumentationScope(name="tests")


def kv(key: str, **value: object) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))  # type: ignore[arg-type]


def resource(**attributes: str) -> resource_pb2.Resource:
    return resource_pb2.Resource(attributes=[kv(key, string_value=value) for key, value in attributes.items()])


def span(parent: bytes = b"", **fields: object) -> trace_pb2.Span:
    base = trace_pb2.Span(
        trace_id=b"\x11" * 16,
        span_id=b"\x22" * 8,
        parent_span_id=parent,
        name="s",
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_250_000_000,
    )
    for name, value in fields.items():
        if name == "attributes":
            base.attributes.extend(value)  # type: ignore[arg-type]
        elif name == "status":
            base.status.CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(base, name, value)
    return base


def test_integers_beyond_json_precision_become_text_and_the_boundary_stays_a_number() -> None:
    bounds = Bounds()
    assert any_value(common_pb2.AnyValue(int_value=2**53 - 1), bounds) == 2**53 - 1
    assert any_value(common_pb2.AnyValue(int_value=2**53), bounds) == str(2**53)
    assert any_value(common_pb2.AnyValue(int_value=-(2**63)), bounds) == str(-(2**63))
    assert any_value(common_pb2.AnyValue(double_value=float("-inf")), bounds) == "-Infinity"
    assert any_value(common_pb2.AnyValue(), bounds) is None
    assert bounds.truncated == 0


def test_strings_are_cut_on_a_character_boundary_and_counted() -> None:
    bounds = Bounds()
    text = any_value(common_pb2.AnyValue(string_value="€" * MAX_VALUE_BYTES), bounds)
    assert isinstance(text, str) and set(text) == {"€"}
    assert len(text.encode()) <= MAX_VALUE_BYTES < len(text.encode()) + 3
    raw = any_value(common_pb2.AnyValue(bytes_value=b"\x01" * MAX_VALUE_BYTES), bounds)
    assert isinstance(raw, str) and len(raw) <= MAX_VALUE_BYTES
    assert bounds.truncated == 2


def test_nesting_and_width_are_bounded() -> None:
    value = common_pb2.AnyValue(string_value="x")
    for _ in range(12):
        value = common_pb2.AnyValue(
            kvlist_value=common_pb2.KeyValueList(values=[common_pb2.KeyValue(key="k", value=value)])
        )
    bounds = Bounds()
    result = any_value(value, bounds)
    for _ in range(8):
        result = result["k"]
    assert result == DEEPER and bounds.truncated == 1
    wide = attributes([kv(f"a{i}", int_value=i) for i in range(MAX_ITEMS + 7)], bounds)
    assert len(wide) == MAX_ITEMS and bounds.dropped == 7


def test_a_child_span_names_the_service_and_a_root_its_agent() -> None:
    res = resource(**{"service.name": "svc", "service.version": "3"})
    child = map_span(
        res, SCOPE, span(parent=b"\x33" * 8, attributes=[kv("gen_ai.agent.name", string_value="a")]), 1 << 20
    )
    assert not child.root and child.identity.agent_name == "svc"
    root = map_span(
        res,
        SCOPE,
        span(
            attributes=[
                kv("gen_ai.agent.name", string_value="a"),
                kv("gen_ai.operation.name", string_value="invoke_agent"),
                kv("gen_ai.usage.input_tokens", int_value=9),
                kv("gen_ai.usage.output_tokens", int_value=-4),
            ]
        ),
        1 << 20,
    )
    assert root.root and root.identity.agent_name == "a"
    assert root.identity.spec_digest == hashlib.sha256(b"a\n3").hexdigest() and not root.identity.explicit_digest
    assert root.ending is not None and root.ending.duration_ms == 250 and not root.ending.failed
    assert (root.event.kind, root.event.input_tokens, root.event.output_tokens) == ("invoke_agent", 9, 0)
    assert root.event.timestamp_ns == 1_700_000_000_250_000_000
    assert root.run_id == "11" * 16 and root.idempotency_key == "otlp:" + "22" * 8


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"trace_id": b"\x00" * 16}, "trace_id"),
        ({"span_id": b"\x01" * 7}, "span_id"),
        ({"parent_span_id": b"\x01" * 3}, "parent_span_id"),
        ({"end_time_unix_nano": 0}, "end_time_unix_nano"),
        ({"attributes": [kv("aivcs.spec_digest", string_value="not hex")]}, "aivcs.spec_digest"),
    ],
)
def test_malformed_spans_are_refused_naming_the_field(fields: dict[str, object], words: str) -> None:
    with pytest.raises(SpanRefused, match=words):
        map_span(resource(), SCOPE, span(**fields), 1 << 20)


def test_an_error_status_fails_and_an_oversized_payload_is_refused() -> None:
    failed = map_span(
        resource(), SCOPE, span(status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR)), 1 << 20
    )
    assert failed.ending is not None and failed.ending.failed and "ERROR" in failed.ending.reason
    with pytest.raises(SpanRefused, match="the limit is 1000"):
        map_span(resource(), SCOPE, span(attributes=[kv("text", string_value="x" * 2000)]), 1000)
