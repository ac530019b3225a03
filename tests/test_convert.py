"""An event payload (a protobuf Struct) becomes exactly the JSON values json_format would give."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from aivcs_ledgerd.ledger.errors import InvalidArgument
from aivcs_ledgerd.transport.convert import fill_struct, struct_to_dict

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
