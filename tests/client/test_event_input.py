"""The library's EventInput: the same message whichever way its payload and timestamp are given."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import cast

import pytest
from aivcs.ledger import InvalidArgument, NewEvent
from aivcs.ledger._models import _check_json, event_input
from aivcs.ledger.v1 import event_pb2
from google.protobuf import struct_pb2, timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st


def _expected(kind: str, payload: dict[str, object] | None, seconds: int, nanos: int) -> event_pb2.EventInput:
    message = event_pb2.EventInput(kind=kind, timestamp=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    if payload is not None:
        struct = struct_pb2.Struct()
        struct.update(payload)
        message.payload.CopyFrom(struct)
    return message


@pytest.mark.parametrize(
    ("timestamp", "seconds", "nanos"),
    [
        (1_700_000_000_123_456_789, 1_700_000_000, 123_456_789),
        (-1, -1, 999_999_999),  # before the epoch: whole seconds down, nanos up, as Timestamp wants
        (datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=timezone(timedelta(hours=2))), 1_767_315_845, 678_000_000),
    ],
)
def test_a_given_time_is_the_events_timestamp(timestamp: int | datetime, seconds: int, nanos: int) -> None:
    payload = {"text": "x", "n": 1.5, "deep": {"list": [1, None, True]}}
    assert event_input("k", payload, timestamp) == _expected("k", payload, seconds, nanos)


def test_an_empty_payload_is_sent_and_none_is_not() -> None:
    assert event_input("k", {}, 0).HasField("payload")
    assert not event_input("k", None, 0).HasField("payload")


def test_without_a_time_the_event_is_stamped_now() -> None:
    before = time.time_ns()
    stamp = event_input("k", None).timestamp
    assert before <= stamp.seconds * 1_000_000_000 + stamp.nanos <= time.time_ns()


def test_a_bad_payload_or_time_is_refused_by_name() -> None:
    with pytest.raises(InvalidArgument, match="payload"):
        event_input("k", {"x": object()})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match="payload"):
        event_input("k", ["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="timezone"):
        NewEvent("k", None, datetime(2026, 1, 1)).to_proto()
    assert NewEvent("k", None, datetime(2026, 1, 1, tzinfo=UTC)).to_proto().timestamp.seconds == 1_767_225_600


_scalars = (
    st.none()
    | st.booleans()
    | st.floats()  # NaN and infinities included: refused either way
    | st.integers(-(2**60), 2**60)  # beyond 2**53 refused either way
    | st.text()
)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)  # a sequence that is not a list
        | st.dictionaries(st.text(max_size=6), children, max_size=4)
        | st.dictionaries(st.text(max_size=6), children, max_size=2).map(MappingProxyType)
    ),  # a mapping, not a dict
    max_leaves=25,
)


def _as_plain_json(value: object) -> object:
    """`value` with every mapping a dict and every sequence but a string a list."""
    if isinstance(value, Mapping):
        return {key: _as_plain_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_plain_json(item) for item in value]
    return value


def _checked_then_updated(payload: dict[str, object]) -> event_pb2.EventInput | str:
    """The generic way: the check, then Struct.update of the same value as plain JSON."""
    try:
        _check_json("payload", payload)
    except InvalidArgument as error:
        return repr(error)
    return _expected("k", cast(dict[str, object], _as_plain_json(payload)), 1, 2)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _json, max_size=5))
def test_any_payload_is_built_as_plain_json_or_refused_by_name(payload: dict[str, object]) -> None:
    """Whatever mappings and sequences it nests, a payload is sent as the same JSON, or refused
    with InvalidArgument naming where (never a ValueError from protobuf)."""
    try:
        built: event_pb2.EventInput | str = event_input("k", payload, 1_000_000_002)
    except InvalidArgument as error:
        built = repr(error)
    assert built == _checked_then_updated(payload)
