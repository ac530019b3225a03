"""An event payload (a protobuf Struct) becomes exactly the JSON values json_format would give."""

from __future__ import annotations

import math
from typing import Any

import pytest
from aivcs.ledger.v1 import event_pb2, event_stream_pb2
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from aivcs_ledgerd.ledger.errors import InvalidArgument
from aivcs_ledgerd.transport.convert import NANOS, event_timestamp_ns, fill_struct, new_events, struct_to_dict

scalars = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**60), 2**60)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_matches_message_to_dict(value: dict[str, Any]) -> None:
    message = _struct(value)
    converted = struct_to_dict("payload", message)
    expected = json_format.MessageToDict(message)
    assert converted == expected
    # == treats 1 and 1.0 alike; the stored type must match too.
    assert repr(converted) == repr(expected)


def test_a_value_with_nothing_set_is_null() -> None:
    message = struct_pb2.Struct()
    message.fields["empty"].CopyFrom(struct_pb2.Value())
    message.fields["nested"].list_value.values.add()
    assert struct_to_dict("payload", message) == json_format.MessageToDict(message) == {"empty": None, "nested": [None]}


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_naming_the_field(number: float) -> None:
    message = _struct({"outer": {"list": [1, number]}})
    with pytest.raises(InvalidArgument) as refused:
        struct_to_dict("events[3].payload", message)
    assert refused.value.field == "events[3].payload"
    assert "finite" in str(refused.value)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_a_payload_is_written_as_struct_update_writes_it(value: dict[str, Any]) -> None:
    """The read path's own Struct filling gives the very message Struct.update does."""
    filled = struct_pb2.Struct()
    fill_struct(filled, value)
    assert filled == _struct(value)
    assert filled.SerializeToString(deterministic=True) == _struct(value).SerializeToString(deterministic=True)


def test_values_of_other_types_are_written_or_refused_as_struct_update_does() -> None:
    filled = struct_pb2.Struct()
    fill_struct(filled, {"tuple": (1, "a"), "sub": {"ok": True}})
    assert filled == _struct({"tuple": (1, "a"), "sub": {"ok": True}})
    with pytest.raises(ValueError):
        fill_struct(struct_pb2.Struct(), {"x": object()})


# Around the event-time bounds (2**63 - 1 ns and -2**63 ns after the epoch) and well inside them.
edge_seconds = st.sampled_from([9_223_372_034, 9_223_372_035, 9_223_372_036, 9_223_372_037]).flatmap(
    lambda s: st.sampled_from([s, -s])
) | st.integers(-(2**40), 2**40)


@settings(max_examples=300, deadline=None)
@given(edge_seconds, st.integers(-5, NANOS + 5) | st.sampled_from([0, 775_807, 854_775_807, 999_999_999]))
def test_event_times_are_taken_or_refused_as_event_timestamp_ns_has_them(seconds: int, nanos: int) -> None:
    """new_events' shortcut for ordinary times agrees with the exact check at every bound."""
    stamp = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    item = event_pb2.EventInput(kind="k", timestamp=stamp)
    try:
        expected: int | str = event_timestamp_ns("events[0].timestamp", stamp)
    except InvalidArgument as error:
        expected = str(error)
    try:
        got: int | str | None = new_events("events", [item], 1 << 20, item.ByteSize()).pop().timestamp_ns
    except InvalidArgument as error:
        got = str(error)
    assert got == expected


def test_an_oversized_payload_is_refused_by_its_index_and_smaller_ones_are_not_measured_away() -> None:
    small = event_pb2.EventInput(kind="k")
    small.payload.update({"text": "x" * 10})
    large = event_pb2.EventInput(kind="k")
    large.payload.update({"text": "x" * 200})
    limit = large.payload.ByteSize() - 1
    request = event_stream_pb2.AppendEventsRequest(run_id="r", events=[small, small, large])
    with pytest.raises(InvalidArgument, match=rf"^events\[2\]\.payload: is {limit + 1} bytes; the limit is {limit}$"):
        new_events("events", request.events, limit, request.ByteSize())
    fits = event_stream_pb2.AppendEventsRequest(run_id="r", events=[small, small])
    assert [e.payload for e in new_events("events", fits.events, limit, fits.ByteSize())] == [{"text": "x" * 10}] * 2
