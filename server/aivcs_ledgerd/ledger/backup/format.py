"""The dump format's records: what a dump holds, built from rows and checked when read back.

Version 1, documented in docs/dump-format.md. Every record is one JSON
object; `record` says which kind it is. Times are integers of nanoseconds
since the epoch (`*_ns`), exact whatever the engine stores. Runs' fields
always appear, null where the run has none, so a run read back from the
target compares equal to the dumped one exactly when they hold the same.
"""

from __future__ import annotations

import json
from typing import Any

from aivcs_ledgerd.ledger import validation
from aivcs_ledgerd.ledger.errors import InvalidArgument
from aivcs_ledgerd.model import RunStatus

FORMAT = "aivcs-ledger-dump"
MAX_NOTES_BYTES = 64 * 1024  # as Promote and Rollback accept
VERSION = 1

HEADER, RUN, EVENT, APPEND, RELEASE, END = "header", "run", "event", "append", "release", "end"

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def encode(record: dict[str, Any]) -> str:
    """One record as a line's text (no newline)."""
    return _encode(record)


def header(created_ns: int, daemon_version: str, filters: dict[str, Any]) -> dict[str, Any]:
    return {
        "record": HEADER,
        "format": FORMAT,
        "version": VERSION,
        "created_ns": created_ns,
        "daemon_version": daemon_version,
        "filters": filters,
    }


def end(runs: int, events: int, appends: int, releases: int) -> dict[str, Any]:
    return {"record": END, "runs": runs, "events": events, "appends": appends, "releases": releases}


def run_record(row: dict[str, Any]) -> dict[str, Any]:
    """A run row (store/backup.py) as a record, every field present; older rows get the defaults reads give."""
    evaluation = row.get("evaluation") or {}
    created_ns = int(row["created_ns"])
    return {
        "record": RUN,
        "run_id": row["run_id"],
        "spec_digest": row["spec_digest"],
        "agent_name": row["agent_name"],
        "git_sha": row.get("git_sha"),
        "tags": row.get("tags") or {},
        "evaluation": {
            "rubric_path": evaluation.get("rubric_path", ""),
            "is_promotion_gate": evaluation.get("is_promotion_gate", False),
            "agent_phase": evaluation.get("agent_phase", 0),
        },
        "status": row["status"],
        "total_events": row["total_events"],
        "final_state_digest": row.get("final_state_digest"),
        "duration_ms": row.get("duration_ms") or 0,
        "success": bool(row.get("success", False)),
        "created_ns": created_ns,
        "created_at_ns": row.get("created_at_ns") if row.get("created_at_ns") is not None else created_ns,
        "completed_at_ns": row.get("completed_at_ns"),
        "events_digest": row.get("events_digest") or "",
        "status_reason": row.get("status_reason") or "",
        "inactivity_timeout_ms": row.get("inactivity_timeout_ms") or 0,
        "last_activity_at_ns": row.get("last_activity_at_ns"),
        "input_tokens": row.get("input_tokens") or 0,
        "output_tokens": row.get("output_tokens") or 0,
    }


def event_record(run_id: str, row: list[Any]) -> dict[str, Any]:
    seq, kind, payload, timestamp_ns, digest = row
    return {
        "record": EVENT,
        "run_id": run_id,
        "seq": seq,
        "kind": kind,
        "payload": payload,
        "timestamp_ns": timestamp_ns,
        "digest": digest,
    }


def append_record(run_id: str, row: list[Any]) -> dict[str, Any]:
    key, first_seq, last_seq, fingerprint = row
    return {
        "record": APPEND,
        "run_id": run_id,
        "key": key,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "fingerprint": fingerprint,
    }


def release_record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "record": RELEASE,
        "agent_name": row["agent_name"],
        "sequence": row["sequence"],
        "spec_digest": row["spec_digest"],
        "version_label": row.get("version_label"),
        "promoted_by": row.get("promoted_by") or "",
        "notes": row.get("notes"),
        "created_at_ns": row["created_at_ns"],
        "rollback_of": row.get("rollback_of"),
    }


# -- reading records back: every field checked, errors naming it ---------------------------------


class Fields:
    """Typed access to one record's fields; InvalidArgument names the record's position and field."""

    def __init__(self, where: str, record: dict[str, Any]) -> None:
        self.where = where
        self.record = record

    def bad(self, name: str, problem: str) -> InvalidArgument:
        return InvalidArgument(f"{self.where}.{name}", problem)

    def _get(self, name: str, kinds: tuple[type, ...], optional: bool) -> Any:
        if name not in self.record:
            if optional:
                return None
            raise self.bad(name, "is missing")
        value = self.record[name]
        if value is None and optional:
            return None
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.bad(name, f"must be {' or '.join(kind.__name__ for kind in kinds)}, got {value!r:.60}")
        return value

    def text(self, name: str, max_bytes: int = validation.MAX_TEXT_BYTES) -> str:
        value: str = self._get(name, (str,), False)
        return validation.text(f"{self.where}.{name}", value, max_bytes)

    def optional_text(self, name: str, max_bytes: int = validation.MAX_TEXT_BYTES) -> str | None:
        value: str | None = self._get(name, (str,), True)
        return None if value is None else validation.text(f"{self.where}.{name}", value, max_bytes)

    def identifier(self, name: str) -> str:
        return validation.identifier(f"{self.where}.{name}", self.text(name, validation.MAX_ID_BYTES))

    def integer(self, name: str, low: int = 0, high: int = 2**63 - 1) -> int:
        value: int = self._get(name, (int,), False)
        if not low <= value <= high:
            raise self.bad(name, f"must lie between {low} and {high}, got {value}")
        return value

    def optional_integer(self, name: str, low: int = 0, high: int = 2**63 - 1) -> int | None:
        if self.record.get(name) is None:
            return None
        return self.integer(name, low, high)

    def flag(self, name: str) -> bool:
        value: bool = self._get(name, (bool,), False)
        return value

    def obj(self, name: str) -> dict[str, Any]:
        value: dict[str, Any] = self._get(name, (dict,), False)
        return validation.json_object(f"{self.where}.{name}", value)


def parse_line(position: int, text: str) -> tuple[str, Fields]:
    """A record's kind and fields; InvalidArgument naming `record N` when it is not a JSON object with a kind."""
    where = f"record {position}"
    try:
        record = json.loads(text)
    except ValueError as error:
        raise InvalidArgument(where, f"is not JSON: {error}") from None
    if not isinstance(record, dict):
        raise InvalidArgument(where, "must be a JSON object")
    fields = Fields(where, record)
    return fields.text("record", 32), fields


def check_header(fields: Fields) -> None:
    if fields.record.get("format") != FORMAT:
        raise fields.bad("format", f"must be {FORMAT!r}: this is not a ledger dump")
    version = fields.integer("version")
    if version != VERSION:
        raise fields.bad("version", f"is {version}; this daemon reads version {VERSION} dumps only")


def parse_run(fields: Fields) -> dict[str, Any]:
    """A run record checked and in the form `run_record` gives."""
    status = fields.text("status", 32)
    if status not in {member.value for member in RunStatus}:
        raise fields.bad("status", f"unknown status {status!r}")
    evaluation = Fields(f"{fields.where}.evaluation", fields.obj("evaluation"))
    events_digest = fields.text("events_digest", 64)
    total_events = fields.integer("total_events")
    if (events_digest == "") != (total_events == 0):
        raise fields.bad("events_digest", "must be empty exactly when total_events is 0")
    if events_digest:
        validation.digest(f"{fields.where}.events_digest", events_digest)
    final = fields.optional_text("final_state_digest", 64)
    return {
        "record": RUN,
        "run_id": fields.identifier("run_id"),
        "spec_digest": validation.digest(f"{fields.where}.spec_digest", fields.text("spec_digest", 64)),
        "agent_name": fields.identifier("agent_name"),
        "git_sha": fields.optional_text("git_sha", validation.MAX_ID_BYTES),
        "tags": fields.obj("tags"),
        "evaluation": {
            "rubric_path": evaluation.text("rubric_path"),
            "is_promotion_gate": evaluation.flag("is_promotion_gate"),
            "agent_phase": evaluation.integer("agent_phase", 0, 2**32 - 1),
        },
        "status": status,
        "total_events": total_events,
        "final_state_digest": None if final is None else validation.digest(f"{fields.where}.final_state_digest", final),
        "duration_ms": fields.integer("duration_ms"),
        "success": fields.flag("success"),
        "created_ns": fields.integer("created_ns", -(2**63)),
        "created_at_ns": fields.integer("created_at_ns", -(2**63)),
        "completed_at_ns": fields.optional_integer("completed_at_ns", -(2**63)),
        "events_digest": events_digest,
        "status_reason": fields.text("status_reason"),
        "inactivity_timeout_ms": fields.integer("inactivity_timeout_ms"),
        "last_activity_at_ns": fields.optional_integer("last_activity_at_ns", -(2**63)),
        "input_tokens": fields.integer("input_tokens"),
        "output_tokens": fields.integer("output_tokens"),
    }


def parse_release(fields: Fields) -> dict[str, Any]:
    """A release record checked and in the form `release_record` gives."""
    return {
        "record": RELEASE,
        "agent_name": fields.identifier("agent_name"),
        "sequence": fields.integer("sequence", 1),
        "spec_digest": validation.digest(f"{fields.where}.spec_digest", fields.text("spec_digest", 64)),
        "version_label": fields.optional_text("version_label"),
        "promoted_by": fields.text("promoted_by"),
        "notes": fields.optional_text("notes", MAX_NOTES_BYTES),
        "created_at_ns": fields.integer("created_at_ns", -(2**63)),
        "rollback_of": fields.optional_integer("rollback_of", 1),
    }
