"""The SurrealQL of the release registry: one record per history entry.

An entry is `releases:[agent_name, sequence]`, sequence 1, 2, 3, ... per
agent with no gap. The record id makes a duplicate entry impossible at the
storage level and turns "entries a..b of an agent" into a range scan, exact
even for entries appended within one nanosecond.

Appending (Promote, Rollback) is one transaction that finds the head, checks
the caller's expectations against it and CREATEs `[agent_name, head + 1]`.
It runs under the agent's lock on the database handle, because the embedded
engine can lose one of two concurrent transactions writing the same record
while reporting both OK (docs/architecture.md, hazard 2). Between daemons sharing
a server the CREATE is the guard: the loser meets the record the winner made
and fails with DuplicateRecord, or with a conflict; the caller retries.

The head is found through the unique index on (agent_name, sequence),
walked backwards: one index probe however long the history is.
"""

from __future__ import annotations

from typing import Any

from aivcs_ledgerd.model import Release
from aivcs_ledgerd.store.database import THROW_PREFIX, Database, Queries
from aivcs_ledgerd.store.errors import QueryFailed
from aivcs_ledgerd.store.leases import FENCE_CHECK, FENCE_RENEW, Fence

# Reasons of Rejected raised by the transactions below.
NOT_FOUND = "release_not_found"
ABORTED = "release_aborted"  # followed by ":" and the current spec_digest ("" when none)
NOTHING_BEFORE = "release_nothing_before"
NO_SUCH_DIGEST = "release_no_such_digest"
NO_SUCCESSFUL_RUN = "release_no_successful_run"

MAX_SEQUENCE = 2**63 - 1

# Sets $head (the agent's newest sequence, 0 when it has none) and $current.
_HEAD = """
LET $head = (SELECT VALUE sequence FROM releases WHERE agent_name = $agent_name
    ORDER BY sequence DESC LIMIT 1)[0] ?? 0;
LET $current = IF $head >= 1 { type::record('releases', [$agent_name, $head]).* } ELSE { NONE };
"""

_EXPECT = f"""
IF $check_expected AND ($current.spec_digest ?? '') != $expected_current_spec_digest {{
    THROW '{THROW_PREFIX}{ABORTED}:' + ($current.spec_digest ?? '')
}};
"""

_APPEND = """
CREATE type::record('releases', [$agent_name, $head + 1]) CONTENT {
    agent_name: $agent_name,
    spec_digest: $entry.spec_digest,
    version_label: $entry.version_label,
    promoted_by: $promoted_by,
    notes: $entry.notes,
    created_at: time::now(),
    sequence: $head + 1,
    rollback_of: $entry.rollback_of,
};
"""

PROMOTE = (
    "BEGIN TRANSACTION;"
    + _HEAD
    + _EXPECT
    + f"""
IF $require_successful_run AND (
    SELECT VALUE id FROM runs
    WHERE agent_name = $agent_name AND spec_digest = $spec_digest
        AND status = 'completed' AND success = true
    LIMIT 1
)[0] = NONE {{
    THROW '{THROW_PREFIX}{NO_SUCCESSFUL_RUN}'
}};
LET $entry = {{
    spec_digest: $spec_digest,
    version_label: $version_label,
    notes: $notes,
    rollback_of: NONE,
}};
"""
    + _APPEND
    + "COMMIT TRANSACTION;"
)

ROLLBACK = (
    "BEGIN TRANSACTION;"
    + _HEAD
    + f"""
IF $head = 0 {{ THROW '{THROW_PREFIX}{NOT_FOUND}' }};
"""
    + _EXPECT
    + f"""
LET $target = IF $to_spec_digest = NONE {{
    IF $head >= 2 {{ type::record('releases', [$agent_name, $head - 1]).* }} ELSE {{ NONE }}
}} ELSE {{
    (SELECT * FROM releases
        WHERE agent_name = $agent_name AND spec_digest = $to_spec_digest
            AND sequence >= 1 AND sequence < $head
        ORDER BY sequence DESC LIMIT 1)[0]
}};
IF $target = NONE AND $to_spec_digest = NONE {{ THROW '{THROW_PREFIX}{NOTHING_BEFORE}' }};
IF $target = NONE {{ THROW '{THROW_PREFIX}{NO_SUCH_DIGEST}' }};
LET $entry = {{
    spec_digest: $target.spec_digest,
    version_label: $target.version_label,
    notes: IF $notes_set {{ $notes }} ELSE {{ $target.notes }},
    rollback_of: $target.sequence,
}};
"""
    + _APPEND
    + "COMMIT TRANSACTION;"
)


def _fenced(transaction: str) -> str:
    """The transaction, checking and renewing this replica's lease on the agent first (several replicas)."""
    begin, commit = "BEGIN TRANSACTION;", "COMMIT TRANSACTION;"
    return transaction.replace(begin, begin + FENCE_CHECK, 1).replace(commit, FENCE_RENEW + commit, 1)


FENCED_PROMOTE = _fenced(PROMOTE)
FENCED_ROLLBACK = _fenced(ROLLBACK)

CURRENT = _HEAD + "RETURN $current;"

# $before: the page holds the entries just below this sequence (None: from
# the head). The entries are contiguous, so the page is an exact id range.
HISTORY = (
    _HEAD
    + """
LET $high = IF $before = NONE { $head } ELSE { math::min([$before - 1, $head]) };
LET $low = math::max([1, $high - $limit + 1]);
LET $end = math::max([$low, $high + 1]);
SELECT * FROM releases:[$agent_name, $low]..[$agent_name, $end] ORDER BY id DESC;
"""
)


def lock_key(agent_name: str) -> str:
    """The key of the handle's lock that serialises an agent's appends."""
    return f"release:{agent_name}"


async def promote(
    db: Queries,
    agent_name: str,
    spec_digest: str,
    version_label: str | None,
    promoted_by: str,
    notes: str | None,
    expected_current_spec_digest: str | None,
    require_successful_run: bool,
    fence: Fence | None = None,
) -> Release:
    """Append a release; Rejected, DuplicateRecord or StoreConflict otherwise.

    `db` must hold the agent's lock (`lock_key`); with a `fence`, Rejected("fenced")
    when this replica no longer holds the agent's lease.
    """
    variables = {
        "agent_name": agent_name,
        "spec_digest": spec_digest,
        "version_label": version_label,
        "promoted_by": promoted_by,
        "notes": notes,
        "check_expected": expected_current_spec_digest is not None,
        "expected_current_spec_digest": expected_current_spec_digest or "",
        "require_successful_run": require_successful_run,
    } | (fence.variables() if fence is not None else {})
    results = await db.query(FENCED_PROMOTE if fence is not None else PROMOTE, variables)
    return _created(results, fence)


async def rollback(
    db: Queries,
    agent_name: str,
    promoted_by: str,
    to_spec_digest: str | None,
    expected_current_spec_digest: str | None,
    notes: str | None,
    fence: Fence | None = None,
) -> Release:
    """Re-append an earlier entry; Rejected, DuplicateRecord or StoreConflict otherwise (see promote)."""
    variables = {
        "agent_name": agent_name,
        "promoted_by": promoted_by,
        "to_spec_digest": to_spec_digest,
        "check_expected": expected_current_spec_digest is not None,
        "expected_current_spec_digest": expected_current_spec_digest or "",
        "notes_set": notes is not None,
        "notes": notes,
    } | (fence.variables() if fence is not None else {})
    results = await db.query(FENCED_ROLLBACK if fence is not None else ROLLBACK, variables)
    return _created(results, fence)


async def current(db: Database, agent_name: str) -> Release | None:
    """The agent's newest entry, or None when it has none."""
    results = await db.query(CURRENT, {"agent_name": agent_name})
    row = results[-1]
    return None if row is None else to_release(row)


async def history(db: Database, agent_name: str, before: int | None, limit: int) -> list[Release]:
    """Up to `limit` entries newest first, all below sequence `before` when given."""
    results = await db.query(HISTORY, {"agent_name": agent_name, "before": before, "limit": limit})
    rows = results[-1]
    if not isinstance(rows, list):
        raise QueryFailed(f"history returned {rows!r}")
    return [to_release(row) for row in rows]


def _created(results: list[Any], fence: Fence | None) -> Release:
    # The CREATE is the statement before COMMIT (and the lease's renewal); it returns a one-row list.
    rows = results[-3 if fence is not None else -2]
    if not isinstance(rows, list) or len(rows) != 1:
        raise QueryFailed(f"release append returned {rows!r}")
    return to_release(rows[0])


def to_release(row: dict[str, Any]) -> Release:
    """A stored entry as a domain value."""
    rollback_of = row.get("rollback_of")
    return Release(
        agent_name=row["agent_name"],
        spec_digest=row["spec_digest"],
        version_label=row.get("version_label"),
        promoted_by=row["promoted_by"],
        notes=row.get("notes"),
        created_at=row["created_at"],
        sequence=int(row["sequence"]),
        rollback_of=None if rollback_of is None else int(rollback_of),
    )
