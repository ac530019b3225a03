"""Plain Python values for what the daemon stores: runs, events, releases.

The generated messages stay available in `aivcs.ledger.v1`; these frozen
dataclasses are what the client returns, because a `dict` payload and an
aware `datetime` are what Python code wants to work with. Every value has
`to_dict()`, the JSON form the CLI prints with `--json`.

Payload numbers travel as doubles (google.protobuf.Struct); integral values
come back as `int`, so `{"i": 5}` round-trips as `{"i": 5}`. A double holds
every integer up to 2**53 exactly and no more, so larger integers are refused
(naming their path, e.g. `payload.usage.tokens[3]`) rather than stored
rounded: send them as strings.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from google.protobuf import struct_pb2, timestamp_pb2

from aivcs.ledger._errors import InvalidArgument
from aivcs.ledger.v1 import event_pb2, event_stream_pb2, release_pb2, run_ledger_pb2, run_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

__all__ = [
    "AppendResult",
    "Evaluation",
    "Event",
    "NewEvent",
    "Release",
    "Run",
    "RunStatus",
    "Verification",
]

JSON = Any
_MAX_EXACT = 2**53


class RunStatus(enum.Enum):
    """A run's lifecycle state; the value is the word the CLI and JSON use."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self is not RunStatus.RUNNING

    @classmethod
    def from_proto(cls, value: int) -> RunStatus:
        return _STATUS_FROM_PROTO.get(value, RunStatus.RUNNING)

    def to_proto(self) -> run_pb2.RunStatus.ValueType:
        return _STATUS_TO_PROTO[self]


_STATUS_TO_PROTO: dict[RunStatus, run_pb2.RunStatus.ValueType] = {
    RunStatus.RUNNING: run_pb2.RUN_STATUS_RUNNING,
    RunStatus.COMPLETED: run_pb2.RUN_STATUS_COMPLETED,
    RunStatus.FAILED: run_pb2.RUN_STATUS_FAILED,
    RunStatus.CANCELLED: run_pb2.RUN_STATUS_CANCELLED,
}
_STATUS_FROM_PROTO: dict[int, RunStatus] = {int(v): k for k, v in _STATUS_TO_PROTO.items()}


# -- conversions ---------------------------------------------------------------


def _plain(value: JSON) -> JSON:
    """Struct values to Python: integral doubles become ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_EXACT:
        return int(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _value_to_python(value: struct_pb2.Value) -> JSON:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return _plain(value.number_value)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value_to_python(item) for item in value.list_value.values]
    return None


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, JSON]:
    return {key: _value_to_python(value) for key, value in struct.fields.items()}


def _check_json(path: str, value: JSON) -> None:
    """Refuse early what the daemon would refuse (non-finite numbers, non-JSON types) and what
    a double cannot hold exactly (integers beyond 2**53)."""
    if value is None or isinstance(value, str | bool):
        return
    if isinstance(value, int):
        if abs(value) > _MAX_EXACT:
            raise InvalidArgument(
                f"{path}: {value} is beyond 2**53 and would be stored rounded (JSON numbers travel as doubles); "
                "send it as a string"
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(f"{path}: {value} has no JSON form")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgument(f"{path}: keys must be strings, got {key!r}")
            _check_json(f"{path}.{key}", item)
        return
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        for index, item in enumerate(value):
            _check_json(f"{path}[{index}]", item)
        return
    raise InvalidArgument(f"{path}: {type(value).__name__} is not a JSON value")


def dict_to_struct(path: str, value: Mapping[str, JSON] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    struct = struct_pb2.Struct()
    _fill_struct(path, struct, value)
    return struct


def _fill_struct(path: str, struct: struct_pb2.Struct, value: Mapping[str, JSON]) -> None:
    """Check `value` and write it into `struct`, in place (a message handed to a constructor is copied)."""
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{path}: must be a mapping, got {type(value).__name__}")
    struct.SetInParent()  # present even when empty, as a Struct passed to the constructor was
    try:
        _fill_fields(struct.fields, value)
        return
    except _Unusual:
        struct.Clear()
        struct.SetInParent()
    _check_json(path, value)  # refuses what JSON cannot hold, by its path
    _fill_fields(struct.fields, _as_json(value))  # other mappings, sequences and subclasses, as plain JSON


class _Unusual(Exception):
    """A value the fast fill leaves to the checked, generic one."""


def _as_json(value: JSON) -> Any:
    """A value `_check_json` accepted, in exactly the types `_fill_value` writes: any mapping as a dict,
    any sequence as a list, subclasses of str, int and float as those types."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        return {str(key): _as_json(item) for key, item in value.items()}
    return [_as_json(item) for item in cast(Sequence[JSON], value)]


def _fill_fields(fields: Any, value: Mapping[str, JSON]) -> None:
    # Plain JSON values checked and written in one walk by exact type: a 1,000-event batch spent
    # most of its building time in the generic walk (isinstance against ABCs, a path per value)
    # followed by Struct.update's own. Anything else, or anything to refuse, goes the generic way.
    if type(value) is not dict:
        raise _Unusual
    for key, item in value.items():
        if type(key) is not str:
            raise _Unusual
        _fill_value(fields[key], item)


def _fill_value(target: struct_pb2.Value, item: JSON) -> None:
    kind = type(item)
    if kind is str:
        target.string_value = item
    elif kind is float:
        if item - item != 0:  # NaN or an infinity
            raise _Unusual
        target.number_value = item
    elif kind is bool:
        target.bool_value = item
    elif kind is int:
        if not -_MAX_EXACT <= item <= _MAX_EXACT:
            raise _Unusual
        target.number_value = item
    elif item is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif kind is dict:
        nested = target.struct_value
        nested.SetInParent()  # an empty object is still an object
        _fill_fields(nested.fields, item)
    elif kind is list:
        values = target.list_value
        values.SetInParent()
        for element in item:
            _fill_value(values.values.add(), element)
    else:
        raise _Unusual


def timestamp_to_ns(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.seconds * 1_000_000_000 + stamp.nanos


def ns_to_timestamp(ns: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def datetime_to_timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    if moment.tzinfo is None:
        raise InvalidArgument(f"timestamps must be timezone-aware, got {moment!r}")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def ns_to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(microsecond=(ns % 1_000_000_000) // 1000)


def ns_to_rfc3339(ns: int) -> str:
    """UTC, with as many fractional digits as the value needs (0, 3, 6 or 9)."""
    return ns_to_timestamp(ns).ToJsonString()


def _optional_time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    return ns_to_datetime(timestamp_to_ns(getattr(message, name)))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


# -- values --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluation:
    """How an evaluation run relates to releases; stored verbatim."""

    rubric_path: str = ""
    is_promotion_gate: bool = False
    agent_phase: int = 0

    def to_proto(self) -> run_pb2.EvaluationMetadata:
        return run_pb2.EvaluationMetadata(
            rubric_path=self.rubric_path, is_promotion_gate=self.is_promotion_gate, agent_phase=self.agent_phase
        )

    def to_dict(self) -> dict[str, JSON]:
        return {
            "rubric_path": self.rubric_path,
            "is_promotion_gate": self.is_promotion_gate,
            "agent_phase": self.agent_phase,
        }


@dataclass(frozen=True, slots=True)
class Run:
    """One execution of an agent, as the ledger records it."""

    run_id: str
    spec_digest: str
    agent_name: str
    status: RunStatus
    total_events: int
    success: bool
    duration_ms: int
    created_at: datetime | None
    completed_at: datetime | None = None
    git_sha: str | None = None
    tags: dict[str, JSON] = field(default_factory=dict)
    evaluation: Evaluation = Evaluation()
    final_state_digest: str | None = None
    events_digest: str = ""
    status_reason: str = ""
    inactivity_timeout_ms: int = 0
    """0: the daemon never fails this run for inactivity."""
    last_activity_at: datetime | None = None
    """The daemon's time of the run's last append or heartbeat (or creation)."""

    @classmethod
    def from_proto(cls, run: run_pb2.Run) -> Run:
        return cls(
            run_id=run.run_id,
            spec_digest=run.spec_digest,
            agent_name=run.agent_name,
            status=RunStatus.from_proto(run.status),
            total_events=run.total_events,
            success=run.success,
            duration_ms=run.duration_ms,
            created_at=_optional_time(run, "created_at"),
            completed_at=_optional_time(run, "completed_at"),
            git_sha=run.git_sha if run.HasField("git_sha") else None,
            tags=struct_to_dict(run.tags),
            evaluation=Evaluation(
                run.evaluation.rubric_path, run.evaluation.is_promotion_gate, run.evaluation.agent_phase
            ),
            final_state_digest=run.final_state_digest if run.HasField("final_state_digest") else None,
            events_digest=run.events_digest,
            status_reason=run.status_reason,
            inactivity_timeout_ms=run.inactivity_timeout_ms,
            last_activity_at=_optional_time(run, "last_activity_at"),
        )

    def to_dict(self) -> dict[str, JSON]:
        return {
            "run_id": self.run_id,
            "spec_digest": self.spec_digest,
            "agent_name": self.agent_name,
            "git_sha": self.git_sha,
            "status": self.status.value,
            "success": self.success,
            "total_events": self.total_events,
            "duration_ms": self.duration_ms,
            "created_at": _iso(self.created_at),
            "completed_at": _iso(self.completed_at),
            "final_state_digest": self.final_state_digest,
            "events_digest": self.events_digest,
            "status_reason": self.status_reason,
            "inactivity_timeout_ms": self.inactivity_timeout_ms,
            "last_activity_at": _iso(self.last_activity_at),
            "tags": self.tags,
            "evaluation": self.evaluation.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event: its seq is its position in the run, 1, 2, 3, ..."""

    run_id: str
    seq: int
    kind: str
    payload: dict[str, JSON]
    timestamp_ns: int
    digest: str = ""

    @property
    def timestamp(self) -> datetime:
        """When the event happened (microsecond precision; `timestamp_ns` is exact)."""
        return ns_to_datetime(self.timestamp_ns)

    @classmethod
    def from_proto(cls, event: event_pb2.Event) -> Event:
        return cls(
            event.run_id,
            event.seq,
            event.kind,
            struct_to_dict(event.payload),
            timestamp_to_ns(event.timestamp),
            event.digest,
        )

    def to_dict(self) -> dict[str, JSON]:
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "kind": self.kind,
            "timestamp": ns_to_rfc3339(self.timestamp_ns),
            "payload": self.payload,
            "digest": self.digest,
        }


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append. `timestamp` unset means "now", taken by the client.

    The client stamps events when they are made, not when they are sent, so a
    batch retried after a lost connection is byte-for-byte the same batch and
    its idempotency key matches.
    """

    kind: str
    payload: Mapping[str, JSON] | None = None
    timestamp: datetime | int | None = None

    def to_proto(self) -> event_pb2.EventInput:
        return event_input(self.kind, self.payload, self.timestamp)


def event_input(
    kind: str, payload: Mapping[str, JSON] | None = None, timestamp: datetime | int | None = None
) -> event_pb2.EventInput:
    """Validate and build one EventInput, stamped now unless a time is given."""
    message = event_pb2.EventInput()
    _fill_event_input(message, kind, payload, timestamp)
    return message


def _fill_event_input(
    message: event_pb2.EventInput, kind: str, payload: Mapping[str, JSON] | None, timestamp: datetime | int | None
) -> None:
    # Filled in place: a message handed to a constructor (a payload, a timestamp, a batch's events)
    # is copied, which took as long as building it; a 1,000-event batch spent most of its
    # building time in those copies.
    if not isinstance(kind, str) or not kind:
        raise InvalidArgument(f"kind: must be a non-empty string, got {kind!r}")
    message.kind = kind
    if isinstance(timestamp, datetime):
        message.timestamp.CopyFrom(datetime_to_timestamp(timestamp))
    else:
        stamp = message.timestamp
        stamp.seconds, stamp.nanos = divmod(time.time_ns() if timestamp is None else timestamp, 1_000_000_000)
    if payload is not None:
        _fill_struct("payload", message.payload, payload)


EventLike = NewEvent | tuple[str, Mapping[str, JSON] | None]


def add_event_inputs(
    inputs: RepeatedCompositeFieldContainer[event_pb2.EventInput], events: Sequence[EventLike]
) -> None:
    """Validate `events` and append them to a request's repeated `events` field."""
    for item in events:
        if isinstance(item, NewEvent):
            _fill_event_input(inputs.add(), item.kind, item.payload, item.timestamp)
        else:
            kind, payload = item
            _fill_event_input(inputs.add(), kind, payload, None)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The seqs one batch got; `replayed` when its idempotency key had been used."""

    first_seq: int
    last_seq: int
    replayed: bool = False

    @classmethod
    def from_proto(cls, reply: event_stream_pb2.AppendEventsResponse) -> AppendResult:
        return cls(reply.first_seq, reply.last_seq, reply.replayed)

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of recomputing a run's hash chain."""

    ok: bool
    verified_events: int
    events_digest: str
    first_broken_seq: int | None = None
    reason: str = ""

    @classmethod
    def from_proto(cls, reply: run_ledger_pb2.VerifyRunResponse) -> Verification:
        broken = reply.first_broken_seq if reply.HasField("first_broken_seq") else None
        return cls(reply.ok, reply.verified_events, reply.events_digest, broken, reply.reason)

    def to_dict(self) -> dict[str, JSON]:
        return {
            "ok": self.ok,
            "verified_events": self.verified_events,
            "events_digest": self.events_digest,
            "first_broken_seq": self.first_broken_seq,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Release:
    """One entry of an agent's release history; the newest is current."""

    agent_name: str
    spec_digest: str
    promoted_by: str
    sequence: int
    created_at: datetime | None
    version_label: str | None = None
    notes: str | None = None
    rollback_of: int | None = None

    @classmethod
    def from_proto(cls, release: release_pb2.Release) -> Release:
        return cls(
            agent_name=release.agent_name,
            spec_digest=release.spec_digest,
            promoted_by=release.promoted_by,
            sequence=release.sequence,
            created_at=_optional_time(release, "created_at"),
            version_label=release.version_label if release.HasField("version_label") else None,
            notes=release.notes if release.HasField("notes") else None,
            rollback_of=release.rollback_of if release.HasField("rollback_of") else None,
        )

    def to_dict(self) -> dict[str, JSON]:
        return {
            "agent_name": self.agent_name,
            "spec_digest": self.spec_digest,
            "version_label": self.version_label,
            "promoted_by": self.promoted_by,
            "notes": self.notes,
            "sequence": self.sequence,
            "rollback_of": self.rollback_of,
            "created_at": _iso(self.created_at),
        }
