"""SurrealQL for the `runs` table: create, read, list, and finish a run.

A run is the record `runs:⟨run_id⟩`. Every write to it holds the handle's
lock for `run:<run_id>` (see `run_key`), the same lock the appends hold,
so no two transactions on one run ever overlap.
"""

from __future__ import annotations

from typing import Any

from surrealdb import Null, NullType

from aivcs_ledgerd.model import Evaluation, Run, RunFilter, RunStatus
from aivcs_ledgerd.store.database import Database, Queries
from aivcs_ledgerd.store.leases import FENCE_CHECK, FENCE_RENEW, Fence


def run_key(run_id: str) -> str:
    """The lock key that serialises every write to one run."""
    return f"run:{run_id}"


async def create_run(db: Database, run: Run) -> None:
    """Store a new run; DuplicateRecord when the id, or its creation key, is taken."""
    await db.write(
        run_key(run.run_id),
        "CREATE type::record('runs', $run_id) CONTENT $run RETURN NONE;",
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
    session: Queries, run_id: str, changes: dict[str, Any], expected_total_events: int | None,
    fence: Fence | None = None,
) -> Run:
    """Move a RUNNING run to a terminal state in one checked transaction.

    `session` must hold the run's lock (`run_key`). Raises Rejected("not_found"),
    Rejected("terminal:<status>"), Rejected("count:<total_events>") or, with a
    `fence`, Rejected("fenced"); nothing is written then.
    """
    sql = """
    BEGIN TRANSACTION;
""" + (FENCE_CHECK if fence is not None else "") + """
    LET $run = (SELECT status, total_events FROM ONLY type::record('runs', $run_id));
    IF $run = NONE { THROW 'aivcs:not_found' };
    IF $run.status != 'running' { THROW 'aivcs:terminal:' + $run.status };
    IF $expected != NONE AND $run.total_events != $expected {
        THROW 'aivcs:count:' + <string> $run.total_events
    };
    UPDATE ONLY type::record('runs', $run_id) MERGE $changes RETURN AFTER;
    """ + (FENCE_RENEW if fence is not None else "") + """
    COMMIT TRANSACTION;
    """
    variables = {"run_id": run_id, "changes": changes, "expected": expected_total_events}
    if fence is not None:
        variables |= fence.variables()
    results = await session.query(sql, variables)
    return run_from_row(results[-3 if fence is not None else -2])  # the UPDATE; COMMIT (and renewal) follow


def _nulls_to_surreal(value: Any) -> Any:
    """JSON null as SurrealDB NULL: the SDK sends None as NONE, which drops the field."""
    if value is None:
        return Null
    if isinstance(value, dict):
        return {key: _nulls_to_surreal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nulls_to_surreal(item) for item in value]
    return value


def _nulls_from_surreal(value: Any) -> Any:
    if isinstance(value, NullType):
        return None
    if isinstance(value, dict):
        return {key: _nulls_from_surreal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nulls_from_surreal(item) for item in value]
    return value


def _int64(value: int) -> int:
    """Clamp a bound to what SurrealDB's integers hold; creation keys all lie within."""
    return max(-(2**63), min(value, 2**63 - 1))


def _row(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "spec_digest": run.spec_digest,
        "agent_name": run.agent_name,
        "git_sha": run.git_sha,
        "tags": _nulls_to_surreal(run.tags),
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
    }


def run_from_row(row: dict[str, Any]) -> Run:
    evaluation = row.get("evaluation") or {}
    return Run(
        run_id=row["run_id"],
        spec_digest=row["spec_digest"],
        agent_name=row["agent_name"],
        git_sha=row.get("git_sha"),
        tags=_nulls_from_surreal(row.get("tags") or {}),
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
    )
