"""Conversions between proto well-known types and domain values."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aivcs.ledger.v1 import event_pb2, run_pb2
from google.protobuf import struct_pb2, timestamp_pb2

from aivcs_ledgerd.ledger.errors import InvalidArgument
from aivcs_ledgerd.model import Event, NewEvent, Run, RunStatus
from aivcs_ledgerd.util.timeutil import datetime_to_ns

NANOS = 1_000_000_000


def timestamp_ns(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * NANOS + ts.nanos


# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799


def checked_timestamp_ns(field: str, ts: timestamp_pb2.Timestamp) -> int:
    if not MIN_SECONDS <= ts.seconds <= MAX_SECONDS or not 0 <= ts.nanos < NANOS:
        raise InvalidArgument(field, "is outside the range of google.protobuf.Timestamp")
    return timestamp_ns(ts)


# Event times are stored as signed 64-bit nanoseconds since the epoch.
MIN_EVENT_NS, MAX_EVENT_NS = -(2**63), 2**63 - 1


def event_timestamp_ns(field: str, ts: timestamp_pb2.Timestamp) -> int:
    ns = checked_timestamp_ns(field, ts)
    if not MIN_EVENT_NS <= ns <= MAX_EVENT_NS:
        raise InvalidArgument(field, "must lie between 1677-09-21T00:12:43Z and 2262-04-11T23:47:16Z")
    return ns


def to_timestamp(ns: int) -> timestamp_pb2.Timestamp:
    seconds, nanos = divmod(ns, NANOS)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def datetime_to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def timestamp_to_datetime(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def struct_to_dict(field: str, value: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as JSON values; NaN and infinities, which JSON cannot hold, are refused.

    The same values as json_format.MessageToDict (tests/test_convert.py holds them equal), without
    its generic field-by-descriptor walk, which cost more than anything else of an append's handler.
    """
    try:
        return _struct(value)
    except _NotFinite:
        raise InvalidArgument(field, _NOT_FINITE) from None


_NOT_FINITE = "numbers must be finite; NaN and infinities have no JSON form"


class _NotFinite(Exception):
    pass


def _struct(message: struct_pb2.Struct) -> dict[str, Any]:
    fields = message.fields  # keys, then lookups: the map's items() view is iterated in Python
    return {key: _value(fields[key]) for key in fields}


def _value(message: struct_pb2.Value) -> Any:
    kind = message.WhichOneof("kind")
    if kind == "string_value":
        return message.string_value
    if kind == "number_value":
        number = message.number_value
        if not math.isfinite(number):
            raise _NotFinite
        return number
    if kind == "struct_value":
        return _struct(message.struct_value)
    if kind == "bool_value":
        return message.bool_value
    if kind == "list_value":
        return [_value(item) for item in message.list_value.values]
    return None  # null_value, or a Value with nothing set (MessageToDict reads both as null)


# Every timestamp whose seconds lie strictly within this bound is an event time (MIN/MAX_EVENT_NS).
_EVENT_SECONDS = 9_223_372_035


def new_events(
    field: str, inputs: Iterable[event_pb2.EventInput], max_payload_bytes: int, message_bytes: int
) -> list[NewEvent]:
    """EventInputs as domain values; oversized payloads and bad timestamps refused by field.

    `message_bytes`, the size of the message holding `inputs`, bounds every payload's size: when it is
    within the limit, no payload is measured. On the path of every appended event, so field paths are
    built only for an error.
    """
    measure = message_bytes > max_payload_bytes
    events = []
    for index, item in enumerate(inputs):
        payload = item.payload
        if measure and (size := payload.ByteSize()) > max_payload_bytes:
            raise InvalidArgument(f"{field}[{index}].payload", f"is {size} bytes; the limit is {max_payload_bytes}")
        timestamp = None
        if item.HasField("timestamp"):
            stamp = item.timestamp
            seconds, nanos = stamp.seconds, stamp.nanos
            if -_EVENT_SECONDS < seconds < _EVENT_SECONDS and 0 <= nanos < NANOS:
                timestamp = seconds * NANOS + nanos
            else:  # near or beyond a bound: checked exactly, refused by its path
                timestamp = event_timestamp_ns(f"{field}[{index}].timestamp", stamp)
        try:
            values = _struct(payload)
        except _NotFinite:
            raise InvalidArgument(f"{field}[{index}].payload", _NOT_FINITE) from None
        events.append(NewEvent(item.kind, values, timestamp))
    return events


def run_to_proto(run: Run) -> run_pb2.Run:
    message = run_pb2.Run(
        run_id=run.run_id,
        spec_digest=run.spec_digest,
        agent_name=run.agent_name,
        evaluation=run_pb2.EvaluationMetadata(
            rubric_path=run.evaluation.rubric_path,
            is_promotion_gate=run.evaluation.is_promotion_gate,
            agent_phase=run.evaluation.agent_phase,
        ),
        status=RUN_STATUS_TO_PROTO[run.status],
        total_events=run.total_events,
        duration_ms=run.duration_ms,
        success=run.success,
        created_at=to_timestamp(run.created_ns),
        events_digest=run.events_digest,
        status_reason=run.status_reason,
        inactivity_timeout_ms=run.inactivity_timeout_ms,
        input_tokens=run.input_tokens,
        output_tokens=run.output_tokens,
    )
    # Stored datetimes keep microseconds; never show the last activity before the creation's nanoseconds.
    last_ns = (
        run.created_ns if run.last_activity_at is None else max(run.created_ns, datetime_to_ns(run.last_activity_at))
    )
    message.last_activity_at.CopyFrom(to_timestamp(last_ns))
    message.tags.update(run.tags)
    if run.git_sha is not None:
        message.git_sha = run.git_sha
    if run.final_state_digest is not None:
        message.final_state_digest = run.final_state_digest
    if run.completed_at is not None:
        message.completed_at.CopyFrom(datetime_to_timestamp(run.completed_at))
    return message


def event_to_proto(event: Event) -> event_pb2.Event:
    message = event_pb2.Event()
    fill_event(message, event)
    return message


def fill_event(message: event_pb2.Event, event: Event) -> None:
    """Write `event` into an empty `message`. On the read path for every event, so every field is set in
    place: a Timestamp or Struct built apart and copied in cost as much as all the rest, and so does a
    list of Events handed to a response's constructor (transport/event_stream.py `chunks` adds them)."""
    message.run_id = event.run_id
    message.seq = event.seq
    message.kind = event.kind
    message.digest = event.digest
    stamp = message.timestamp
    stamp.seconds, stamp.nanos = divmod(event.timestamp_ns, NANOS)
    fill_struct(message.payload, event.payload)


def fill_struct(struct: struct_pb2.Struct, value: dict[str, Any]) -> None:
    """`struct.update(value)` for JSON values, without its generic per-value dispatch (the most of a read's
    conversion); tests/test_convert.py holds the two equal."""
    fields = struct.fields
    for key, item in value.items():
        _fill_value(fields[key], item)


def _fill_value(target: struct_pb2.Value, item: Any) -> None:
    kind = type(item)
    if kind is str:
        target.string_value = item
    elif kind is float or kind is int:
        target.number_value = item
    elif kind is bool:
        target.bool_value = item
    elif item is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif kind is dict:
        nested = target.struct_value
        nested.SetInParent()  # an empty object is still an object, not a Value with nothing set
        fill_struct(nested, item)
    elif kind is list:
        values = target.list_value
        values.SetInParent()
        for element in item:
            _fill_value(values.values.add(), element)
    else:
        struct = struct_pb2.Struct()
        struct.update({"": item})  # anything else as Struct.update has it, or its error
        target.CopyFrom(struct.fields[""])


RUN_STATUS_TO_PROTO = {
    RunStatus.RUNNING: run_pb2.RUN_STATUS_RUNNING,
    RunStatus.COMPLETED: run_pb2.RUN_STATUS_COMPLETED,
    RunStatus.FAILED: run_pb2.RUN_STATUS_FAILED,
    RunStatus.CANCELLED: run_pb2.RUN_STATUS_CANCELLED,
}
RUN_STATUS_FROM_PROTO = {value: key for key, value in RUN_STATUS_TO_PROTO.items()}
