"""SurrealQL of backup and restore: rows as dump records out, dumped rows back in with their original values.

Reads hand rows back as one JSON text (encoding::json::encode), decoded by
the C `json` module, as event reads do; times come as integer nanoseconds
(time::nano), so nothing is rounded to the microseconds a Python datetime
holds. Events are written as appends write them (store/events.py
event_records); other rows travel as one cbor2 byte string decoded by the
engine (never JSON: store/events.py says why), their times set with
time::from_nanos.

A restored run is staged: its events and idempotency records are written
first, in batches, while the run record does not exist (so no read, append
or listing sees them: every one of those starts from the run record), and
the run record is created last. Every staging transaction refuses itself
when the run record exists meanwhile, so staging never touches a live run.
"""

from __future__ import annotations

import json
from typing import Any

import cbor2

from aivcs_ledgerd.model import Event
from aivcs_ledgerd.store.database import THROW_PREFIX, Queries
from aivcs_ledgerd.store.events import INSERT_APPENDS, INSERT_ROWS, MAX_SEQ, event_records
from aivcs_ledgerd.store.leases import FENCE_CHECK, FENCE_RENEW, Fence

EXISTS = "run_exists"  # reason of the Rejected raised when staging meets a run record

_RUN_FIELDS = """run_id, spec_digest, agent_name, git_sha, tags, evaluation, status, total_events,
    final_state_digest, duration_ms, success, created_ns, time::nano(created_at) AS created_at_ns,
    IF completed_at != NONE THEN time::nano(completed_at) ELSE NONE END AS completed_at_ns,
    events_digest, status_reason, inactivity_timeout_ms,
    IF last_activity_at != NONE THEN time::nano(last_activity_at) ELSE NONE END AS last_activity_at_ns,
    input_tokens, output_tokens"""


async def runs_after(
    db: Queries, after_ns: int | None, before_ns: int | None, agent_name: str | None, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` run rows created after `after_ns` (exclusive) and before `before_ns`, oldest first."""
    conditions = ["true"]
    variables: dict[str, Any] = {"limit": limit}
    if after_ns is not None:
        conditions.append("created_ns > $after")
        variables["after"] = after_ns
    if before_ns is not None:
        conditions.append("created_ns < $before")
        variables["before"] = before_ns
    if agent_name is not None:
        conditions.append("agent_name = $agent_name")
        variables["agent_name"] = agent_name
    sql = (
        f"RETURN encoding::json::encode((SELECT {_RUN_FIELDS} FROM runs WHERE {' AND '.join(conditions)} "
        "ORDER BY created_ns ASC LIMIT $limit));"
    )
    [text] = await db.query(sql, variables)
    rows: list[dict[str, Any]] = json.loads(text)
    return rows


async def run_row(db: Queries, run_id: str) -> dict[str, Any] | None:
    """One run's row in the form `runs_after` gives, or None."""
    [text] = await db.query(
        f"RETURN encoding::json::encode((SELECT {_RUN_FIELDS} FROM ONLY type::record('runs', $run_id)));",
        {"run_id": run_id},
    )
    row: dict[str, Any] | None = json.loads(text)
    return row


async def event_rows(db: Queries, run_id: str, from_seq: int, to_seq: int) -> list[list[Any]]:
    """[seq, kind, payload, timestamp_ns, digest] of the run's events from_seq..to_seq, ascending."""
    [text] = await db.query(
        "RETURN encoding::json::encode((SELECT VALUE [seq, kind, payload, timestamp_ns, digest] "
        "FROM run_events:[$run_id, $from_seq]..=[$run_id, $to_seq]));",
        {"run_id": run_id, "from_seq": from_seq, "to_seq": to_seq},
    )
    rows: list[list[Any]] = json.loads(text)
    return rows


async def append_rows(db: Queries, run_id: str, up_to_seq: int) -> list[list[Any]]:
    """[key, first_seq, last_seq, fingerprint] of the run's idempotency records covering seqs <= up_to_seq."""
    [text] = await db.query(
        "RETURN encoding::json::encode((SELECT VALUE [key, first_seq, last_seq, fingerprint] "
        "FROM run_appends:[$run_id, NONE]..[$run_id, {}] WHERE last_seq <= $up_to));",
        {"run_id": run_id, "up_to": up_to_seq},
    )
    rows: list[list[Any]] = json.loads(text)
    return rows


async def release_agents(db: Queries) -> list[str]:
    """Every agent with a release history, by name."""
    [rows] = await db.query("SELECT agent_name FROM releases GROUP BY agent_name;")
    return sorted(row["agent_name"] for row in rows)


async def release_rows(db: Queries, agent_name: str, from_sequence: int, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` entries of the agent's history from `from_sequence` on, in order."""
    [text] = await db.query(
        "RETURN encoding::json::encode((SELECT agent_name, sequence, spec_digest, version_label, promoted_by, "
        "notes, time::nano(created_at) AS created_at_ns, rollback_of "
        "FROM releases:[$agent_name, $low]..=[$agent_name, $high]));",
        {"agent_name": agent_name, "low": from_sequence, "high": min(MAX_SEQ, from_sequence + limit - 1)},
    )
    rows: list[dict[str, Any]] = json.loads(text)
    return rows


_ABSENT_RUN = f"IF record::exists(type::record('runs', $run_id)) {{ THROW '{THROW_PREFIX}{EXISTS}' }};"


def _transaction(body: str, fence: Fence | None) -> str:
    if fence is not None:
        body = FENCE_CHECK + body + FENCE_RENEW
    return "BEGIN TRANSACTION;" + body + "COMMIT TRANSACTION;"


def _fenced(variables: dict[str, Any], fence: Fence | None) -> dict[str, Any]:
    return variables | fence.variables() if fence is not None else variables


async def clear_staged(session: Queries, run_id: str, fence: Fence | None = None) -> None:
    """Remove the events and idempotency records of a run that has no run record (an unfinished restore).

    Rejected(EXISTS) when the run record exists: then nothing is removed.
    """
    sql = _transaction(
        _ABSENT_RUN + "DELETE run_events:[$run_id, 1]..=[$run_id, $max] RETURN NONE;"
        "DELETE run_appends:[$run_id, NONE]..[$run_id, {}] RETURN NONE;",
        fence,
    )
    await session.query(sql, _fenced({"run_id": run_id, "max": MAX_SEQ}, fence))


async def stage_events(
    session: Queries, run_id: str, events: list[list[Any]], fence: Fence | None = None, repeat: bool = False
) -> None:
    """Write events ([seq, kind, payload, timestamp_ns, digest]) of a run whose record does not exist yet.

    Rejected(EXISTS) when the run record exists; DuplicateRecord when a seq is stored. With `repeat`
    (the write is a repeat of one that may have committed unseen), a batch already stored is left as
    it is: a batch is one transaction, so its first seq is there exactly when all of it is.
    """
    insert = INSERT_ROWS
    if repeat:
        insert = f"IF !record::exists(type::record('run_events', [$run_id, $first])) {{ {insert} }};"
    sql = _transaction(_ABSENT_RUN + insert, fence)
    stored = [Event(run_id, seq, kind, payload, ts, digest) for seq, kind, payload, ts, digest in events]
    variables = {"run_id": run_id, "rows": event_records(run_id, stored), "first": events[0][0]}
    await session.query(sql, _fenced(variables, fence))


async def stage_appends(
    session: Queries, run_id: str, appends: list[list[Any]], fence: Fence | None = None, repeat: bool = False
) -> None:
    """Write idempotency records ([key, first_seq, last_seq, fingerprint]) of a run not created yet.

    As stage_events, with `repeat` a batch already stored is left as it is.
    """
    insert = INSERT_APPENDS
    if repeat:
        insert = f"IF !record::exists(type::record('run_appends', [$run_id, $first])) {{ {insert} }};"
    sql = _transaction(_ABSENT_RUN + insert, fence)
    variables = {"run_id": run_id, "appends": cbor2.dumps(appends), "first": appends[0][0]}
    await session.query(sql, _fenced(variables, fence))


async def create_run(
    session: Queries, row: dict[str, Any], times: dict[str, int | None], fence: Fence | None = None
) -> None:
    """Create the run record from `row` (no datetimes) and `times` (nanoseconds); Rejected(EXISTS) if it exists.

    `times` holds created_at, completed_at and last_activity_at (None: absent).
    """
    sql = _transaction(
        _ABSENT_RUN
        + """
    CREATE type::record('runs', $run_id) CONTENT encoding::cbor::decode($row) RETURN NONE;
    UPDATE ONLY type::record('runs', $run_id) SET
        created_at = time::from_nanos($created_at),
        completed_at = IF $completed_at != NONE THEN time::from_nanos($completed_at) ELSE NONE END,
        last_activity_at = IF $last_activity_at != NONE THEN time::from_nanos($last_activity_at) ELSE NONE END
        RETURN NONE;
    """,
        fence,
    )
    variables = {"run_id": row["run_id"], "row": cbor2.dumps(row)} | times
    await session.query(sql, _fenced(variables, fence))


async def append_releases(
    session: Queries, agent_name: str, after: int, entries: list[dict[str, Any]], fence: Fence | None = None
) -> None:
    """Write history entries after sequence `after`, which must be the agent's head; Rejected("moved") if not.

    Each entry holds the stored fields with created_at as `created_at_ns`.
    """
    sql = _transaction(
        f"""
    LET $head = (SELECT VALUE sequence FROM releases WHERE agent_name = $agent_name
        ORDER BY sequence DESC LIMIT 1)[0] ?? 0;
    IF $head != $after {{ THROW '{THROW_PREFIX}moved' }};
    INSERT INTO releases encoding::cbor::decode($entries).map(|$r| {{
        id: type::record('releases', [$agent_name, $r.sequence]),
        agent_name: $agent_name,
        spec_digest: $r.spec_digest,
        version_label: $r.version_label,
        promoted_by: $r.promoted_by,
        notes: $r.notes,
        created_at: time::from_nanos($r.created_at_ns),
        sequence: $r.sequence,
        rollback_of: $r.rollback_of,
    }}) RETURN NONE;
    """,
        fence,
    )
    variables = {"agent_name": agent_name, "after": after, "entries": cbor2.dumps(entries)}
    await session.query(sql, _fenced(variables, fence))
