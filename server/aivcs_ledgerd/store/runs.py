"""SurrealQL for the `runs` table: create, read, list, heartbeat, expire and finish a run.

A run is the record `runs:⟨run_id⟩`. Every write to it holds the handle's
lock for `run:<run_id>` (see `run_key`), the same lock the appends hold,
so no two transactions on one run ever overlap.

A RUNNING run with an inactivity timeout also carries `inactivity_deadline_ns`
(its last activity plus the timeout, in nanoseconds since the epoch): every
append and Heartbeat moves it, a terminal transition removes it, and the
sweeper finds due runs by a range scan of its index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aivcs_ledgerd.model import Evaluation, Run, RunFilter, RunStatus
from aivcs_ledgerd.store.database import THROW_PREFIX, Database, Queries
from aivcs_ledgerd.store.leases import FENCE_CHECK, FENCE_RENEW, Fence
from aivcs_ledgerd.store.values import json_from_surreal, json_to_surreal
from aivcs_ledgerd.util.timeutil import datetime_to_ns

NS_PER_MS = 1_000_000
# Fields a terminal transition removes: a finished run is never due.
CLEAR_DEADLINE: dict[str, Any] = {"inactivity_deadline_ns": None}


def run_key(run_id: str) -> str:
    """The lock key that serialises every write to one run."""
    return f"run:{run_id}"


# A restore stages a run's events before its record exists (ledger/backup/restore.py): a new
# run must not be created over them, or its appends would meet the staged seqs.
STAGED = "staged"


async def create_run(db: Database, run: Run) -> None:
    """Store a new run; DuplicateRecord when the id, or its creation key, is taken.

    Rejected(STAGED) when a restore is writing a run with this id.
    """
    await db.write(
        run_key(run.run_id),
        "IF record::exists(type::record('run_events', [$run_id, 1]))"
        f" AND !record::exists(type::record('runs', $run_id)) {{ THROW '{THROW_PREFIX}{STAGED}' }} "
        "ELSE { CREATE type::record('runs', $run_id) CONTENT $run RETURN NONE };",
        {"run_id": run.run_id, "run": _row(run)},
    )


async def get_run(db: Database, run_id: str) -> Run | None:
    [row] = await db.query("SELECT * FROM ONLY type::record('runs', $run_id);", {"run_id": run_id})
    return None if row is None else run_from_row(row)


async def list_runs(db: Database, where: RunFilter, before_ns: int | None, limit: int) -> list[Run]:
    """Runs matching `where`, newest first, created strictly before `before_ns`.

    One of the `*_created_ns` indexes is walked backwards from the cursor, so
    the cost of a page does not depend on how deep it is.
    """
    conditions: list[str] = ["true"]
    variables: dict[str, Any] = {"limit": limit}
    for name in ("spec_digest", "agent_name", "git_sha"):
        value = getattr(where, name)
        if value is not None:
            conditions.append(f"{name} = ${name}")
            variables[name] = value
    if where.status is not None:
        conditions.append("status = $status")
        variables["status"] = where.status.value
    if where.created_after_ns is not None:
        conditions.append("created_ns >= $after")
        variables["after"] = _int64(where.created_after_ns)
    upper = [ns for ns in (before_ns, where.created_before_ns) if ns is not None]
    if upper:
        conditions.append("created_ns < $before")
        variables["before"] = _int64(min(upper))
    sql = f"SELECT * FROM runs WHERE {' AND '.join(conditions)} ORDER BY created_ns DESC LIMIT $limit;"
    [rows] = await db.query(sql, variables)
    return [run_from_row(row) for row in rows]


async def finish_run(
    session: Queries,
    run_id: str,
    changes: dict[str, Any],
    expected_total_events: int | None,
    fence: Fence | None = None,
) -> Run:
    """Move a RUNNING run to a terminal state in one checked transaction.

    `session` must hold the run's lock (`run_key`). Raises Rejected("not_found"),
    Rejected("terminal:<status>"), Rejected("count:<total_events>") or, with a
    `fence`, Rejected("fenced"); nothing is written then.
    """
    sql = (
        """
    BEGIN TRANSACTION;
"""
        + (FENCE_CHECK if fence is not None else "")
        + """
    LET $run = (SELECT status, total_events FROM ONLY type::record('runs', $run_id));
    IF $run = NONE { THROW 'aivcs:not_found' };
    IF $run.status != 'running' { THROW 'aivcs:terminal:' + $run.status };
    IF $expected != NONE AND $run.total_events != $expected {
        THROW 'aivcs:count:' + <string> $run.total_events
    };
    UPDATE ONLY type::record('runs', $run_id) MERGE $changes RETURN AFTER;
    """
        + (FENCE_RENEW if fence is not None else "")
        + """
    COMMIT TRANSACTION;
    """
    )
    variables = {"run_id": run_id, "changes": changes | CLEAR_DEADLINE, "expected": expected_total_events}
    if fence is not None:
        variables |= fence.variables()
    results = await session.query(sql, variables)
    return run_from_row(results[-3 if fence is not None else -2])  # the UPDATE; COMMIT (and renewal) follow


async def heartbeat(session: Queries, run_id: str, now_ns: int, fence: Fence | None = None) -> Run:
    """Move a RUNNING run's last activity (and deadline) to `now_ns`.

    `session` must hold the run's lock (`run_key`). Raises Rejected("not_found"),
    Rejected("terminal:<status>") or, with a `fence`, Rejected("fenced");
    nothing is written then.
    """
    sql = (
        """
    BEGIN TRANSACTION;
"""
        + (FENCE_CHECK if fence is not None else "")
        + """
    LET $run = (SELECT status, inactivity_timeout_ms FROM ONLY type::record('runs', $run_id));
    IF $run = NONE { THROW 'aivcs:not_found' };
    IF $run.status != 'running' { THROW 'aivcs:terminal:' + $run.status };
    UPDATE ONLY type::record('runs', $run_id) SET
        last_activity_at = time::from_nanos($now),
        inactivity_deadline_ns = IF $run.inactivity_timeout_ms > 0 THEN
            $now + $run.inactivity_timeout_ms * $ns_per_ms ELSE NONE END
        RETURN AFTER;
    """
        + (FENCE_RENEW if fence is not None else "")
        + """
    COMMIT TRANSACTION;
    """
    )
    variables: dict[str, Any] = {"run_id": run_id, "now": now_ns, "ns_per_ms": NS_PER_MS}
    if fence is not None:
        variables |= fence.variables()
    results = await session.query(sql, variables)
    return run_from_row(results[-3 if fence is not None else -2])


@dataclass(frozen=True, slots=True)
class IdleRun:
    """A RUNNING run whose inactivity deadline had passed when the sweeper looked."""

    run_id: str
    agent_name: str
    total_events: int
    inactivity_timeout_ms: int
    deadline_ns: int
    created_ns: int
    last_activity_ns: int  # never before created_ns (stored datetimes keep microseconds)


# One range scan of idx_inactivity_deadline_ns, named because the planner would otherwise prefer
# idx_status_created_ns for `status = 'running'` and visit every running run.
IDLE_RUNS_SQL = """
SELECT run_id, agent_name, total_events, inactivity_timeout_ms, inactivity_deadline_ns, created_ns, last_activity_at
FROM runs WITH INDEX idx_inactivity_deadline_ns
WHERE inactivity_deadline_ns >= 0 AND inactivity_deadline_ns <= $now AND status = 'running'
LIMIT $limit"""


async def idle_runs(db: Queries, now_ns: int, limit: int) -> list[IdleRun]:
    """Up to `limit` RUNNING runs whose deadline is at or before `now_ns`, most overdue first."""
    [rows] = await db.query(IDLE_RUNS_SQL + ";", {"now": now_ns, "limit": limit})
    return [_idle_run(row) for row in sorted(rows, key=lambda row: row["inactivity_deadline_ns"])]


def _idle_run(row: dict[str, Any]) -> IdleRun:
    created_ns: int = row["created_ns"]
    last = row.get("last_activity_at")
    return IdleRun(
        run_id=row["run_id"],
        agent_name=row["agent_name"],
        total_events=row["total_events"],
        inactivity_timeout_ms=row["inactivity_timeout_ms"],
        deadline_ns=row["inactivity_deadline_ns"],
        created_ns=created_ns,
        last_activity_ns=created_ns if last is None else max(created_ns, datetime_to_ns(last)),
    )


async def expire_run(
    session: Queries,
    run_id: str,
    seen_deadline_ns: int,
    now_ns: int,
    changes: dict[str, Any],
    fence: Fence | None = None,
) -> Run:
    """Fail a run the sweeper found idle, if it still is: one checked transaction.

    `session` must hold the run's lock. The transaction re-reads the run and
    writes only if it is still RUNNING with the very deadline the sweeper
    saw, and that deadline has passed: an append or Heartbeat committed
    meanwhile (through any daemon sharing the database) moves the deadline,
    and a terminal transition removes it. Raises Rejected("not_found" |
    "terminal:<status>" | "active"); nothing is written then.
    """
    sql = (
        """
    BEGIN TRANSACTION;
"""
        + (FENCE_CHECK if fence is not None else "")
        + """
    LET $run = (SELECT status, inactivity_deadline_ns FROM ONLY type::record('runs', $run_id));
    IF $run = NONE { THROW 'aivcs:not_found' };
    IF $run.status != 'running' { THROW 'aivcs:terminal:' + $run.status };
    IF $run.inactivity_deadline_ns != $seen OR $seen > $now { THROW 'aivcs:active' };
    UPDATE ONLY type::record('runs', $run_id) MERGE $changes RETURN AFTER;
    """
        + (FENCE_RENEW if fence is not None else "")
        + """
    COMMIT TRANSACTION;
    """
    )
    variables = {"run_id": run_id, "seen": seen_deadline_ns, "now": now_ns, "changes": changes | CLEAR_DEADLINE}
    if fence is not None:
        variables |= fence.variables()
    results = await session.query(sql, variables)
    return run_from_row(results[-3 if fence is not None else -2])


def _int64(value: int) -> int:
    """Clamp a bound to what SurrealDB's integers hold; creation keys all lie within."""
    return max(-(2**63), min(value, 2**63 - 1))


def _row(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "spec_digest": run.spec_digest,
        "agent_name": run.agent_name,
        "git_sha": run.git_sha,
        "tags": json_to_surreal(run.tags),
        "evaluation": {
            "rubric_path": run.evaluation.rubric_path,
            "is_promotion_gate": run.evaluation.is_promotion_gate,
            "agent_phase": run.evaluation.agent_phase,
        },
        "status": run.status.value,
        "total_events": run.total_events,
        "final_state_digest": run.final_state_digest,
        "duration_ms": run.duration_ms,
        "success": run.success,
        "created_at": run.created_at,
        "created_ns": run.created_ns,
        "completed_at": run.completed_at,
        "events_digest": run.events_digest,
        "status_reason": run.status_reason,
        "inactivity_timeout_ms": run.inactivity_timeout_ms,
        "last_activity_at": run.last_activity_at or run.created_at,
        **(
            {"inactivity_deadline_ns": run.created_ns + run.inactivity_timeout_ms * NS_PER_MS}
            if run.inactivity_timeout_ms > 0 and run.status is RunStatus.RUNNING
            else {}
        ),
    }


def run_from_row(row: dict[str, Any]) -> Run:
    evaluation = row.get("evaluation") or {}
    return Run(
        run_id=row["run_id"],
        spec_digest=row["spec_digest"],
        agent_name=row["agent_name"],
        git_sha=row.get("git_sha"),
        tags=json_from_surreal(row.get("tags") or {}),
        evaluation=Evaluation(
            rubric_path=evaluation.get("rubric_path", ""),
            is_promotion_gate=evaluation.get("is_promotion_gate", False),
            agent_phase=evaluation.get("agent_phase", 0),
        ),
        status=RunStatus(row["status"]),
        total_events=row["total_events"],
        final_state_digest=row.get("final_state_digest"),
        duration_ms=row.get("duration_ms", 0),
        success=row.get("success", False),
        created_at=row["created_at"],
        completed_at=row.get("completed_at"),
        events_digest=row.get("events_digest", ""),
        status_reason=row.get("status_reason", ""),
        created_ns=row["created_ns"],
        inactivity_timeout_ms=row.get("inactivity_timeout_ms", 0),
        last_activity_at=row.get("last_activity_at"),
        input_tokens=row.get("input_tokens") or 0,
        output_tokens=row.get("output_tokens") or 0,
    )
