"""The ledger's tables and indexes, defined idempotently.

The five tables of oxidized-state 0.2.0's migrations are kept as the seed
defines them, and so is every index of theirs but the `run_events` ones no
query of the daemon uses (SEED_EVENT_INDEXES): those cost every append
their writes and are removed on start-up unless `--seed-indexes` keeps
them, for tools that query the database directly with the seed's own crate.
`IF NOT EXISTS` makes start-up on existing data a no-op. Indexes added here
say which query they serve.
"""

from __future__ import annotations

import asyncio
import logging
import random

from aivcs_ledgerd.store.database import Database
from aivcs_ledgerd.store.errors import StoreConflict, StoreUnavailable
from aivcs_ledgerd.store.leases import SCHEMA as LEASES

log = logging.getLogger(__name__)

# Replicas started together on an empty database define the same tables at
# once, and all but one transaction fail with a retryable conflict. A retry
# finds the definitions in place (IF NOT EXISTS) and commits; the attempts are
# bounded so that a conflict that never clears still fails the start.
SCHEMA_ATTEMPTS = 20
SCHEMA_BACKOFF_SECONDS = 0.05
SCHEMA_TIMEOUT_ATTEMPTS = 3  # of SCHEMA_ATTEMPTS, how many may time out

SEED = """
DEFINE TABLE IF NOT EXISTS runs SCHEMALESS
    PERMISSIONS FOR create FULL FOR select FULL FOR update FULL FOR delete NONE;
DEFINE INDEX IF NOT EXISTS idx_run_id ON TABLE runs COLUMNS run_id UNIQUE;
DEFINE INDEX IF NOT EXISTS idx_spec_digest ON TABLE runs COLUMNS spec_digest;
DEFINE INDEX IF NOT EXISTS idx_agent_name ON TABLE runs COLUMNS agent_name;
DEFINE INDEX IF NOT EXISTS idx_git_sha ON TABLE runs COLUMNS git_sha;
DEFINE INDEX IF NOT EXISTS idx_created_at ON TABLE runs COLUMNS created_at;
DEFINE INDEX IF NOT EXISTS idx_spec_digest_created_at ON TABLE runs COLUMNS spec_digest, created_at;
DEFINE INDEX IF NOT EXISTS idx_run_id_status ON TABLE runs COLUMNS run_id, status;

DEFINE TABLE IF NOT EXISTS run_events SCHEMALESS
    PERMISSIONS FOR create FULL FOR select FULL FOR update NONE FOR delete NONE;

DEFINE TABLE IF NOT EXISTS releases SCHEMALESS
    PERMISSIONS FOR create FULL FOR select FULL FOR update NONE FOR delete NONE;
DEFINE INDEX IF NOT EXISTS idx_agent_name ON TABLE releases COLUMNS agent_name;
DEFINE INDEX IF NOT EXISTS idx_agent_name_created_at ON TABLE releases COLUMNS agent_name, created_at;
DEFINE INDEX IF NOT EXISTS idx_spec_digest ON TABLE releases COLUMNS spec_digest;
DEFINE INDEX IF NOT EXISTS idx_version_label ON TABLE releases COLUMNS version_label;

DEFINE TABLE IF NOT EXISTS commits SCHEMALESS
    PERMISSIONS FOR create FULL FOR select FULL FOR update FULL FOR delete NONE;
DEFINE INDEX IF NOT EXISTS idx_commit_id ON TABLE commits COLUMNS commit_id UNIQUE;
DEFINE INDEX IF NOT EXISTS idx_parent_id ON TABLE commits COLUMNS parent_id;
DEFINE INDEX IF NOT EXISTS idx_author ON TABLE commits COLUMNS author;
DEFINE INDEX IF NOT EXISTS idx_branch ON TABLE commits COLUMNS branch;

DEFINE TABLE IF NOT EXISTS branches SCHEMALESS
    PERMISSIONS FOR create FULL FOR select FULL FOR update FULL FOR delete FULL;
DEFINE INDEX IF NOT EXISTS idx_branch_name ON TABLE branches COLUMNS name UNIQUE;
DEFINE INDEX IF NOT EXISTS idx_head_commit_id ON TABLE branches COLUMNS head_commit_id;
DEFINE INDEX IF NOT EXISTS idx_is_default ON TABLE branches COLUMNS is_default;
"""

# The seed's `run_events` indexes. An event is the record run_events:[run_id, seq] (store/events.py),
# so the record id holds the seed's constraint "run_id and seq unique" (a second CREATE of the same
# seq fails) and its order: a run's events, and any seq range of them, are one record-id range scan.
# idx_run_id_seq, idx_run_id and idx_run_id_seq_timestamp only restate that; idx_run_id_timestamp and
# idx_kind serve no query of the daemon (a `kinds` filter is applied inside the record-id range). Each
# index is written by every append (what that costs: `python -m bench`, its engine index layouts;
# README, Benchmarks), so they exist only with --seed-indexes.
SEED_EVENT_INDEXES = {
    "idx_run_id_seq": "run_id, seq UNIQUE",
    "idx_run_id": "run_id",
    "idx_run_id_timestamp": "run_id, timestamp",
    "idx_kind": "kind",
    "idx_run_id_seq_timestamp": "run_id, seq, timestamp",
}
SEED_EVENT_INDEX_SQL = "".join(
    f"DEFINE INDEX IF NOT EXISTS {name} ON TABLE run_events COLUMNS {columns};\n"
    for name, columns in SEED_EVENT_INDEXES.items()
)

LEDGER = """
-- ListRuns walks one of these backwards from its keyset cursor: newest first,
-- one index per equality filter, so a deep page costs what the first does.
-- created_ns is unique, so the order is exact and a cursor is one number.
DEFINE INDEX IF NOT EXISTS idx_created_ns ON TABLE runs COLUMNS created_ns UNIQUE;
DEFINE INDEX IF NOT EXISTS idx_agent_name_created_ns ON TABLE runs COLUMNS agent_name, created_ns;
DEFINE INDEX IF NOT EXISTS idx_spec_digest_created_ns ON TABLE runs COLUMNS spec_digest, created_ns;
DEFINE INDEX IF NOT EXISTS idx_git_sha_created_ns ON TABLE runs COLUMNS git_sha, created_ns;
DEFINE INDEX IF NOT EXISTS idx_status_created_ns ON TABLE runs COLUMNS status, created_ns;

-- The inactivity sweeper's range scan: runs whose deadline (last activity plus
-- their inactivity timeout) has passed. Only RUNNING runs with a timeout have
-- the field, so the scan's cost follows the runs due, not the runs stored.
-- Rows written before the field existed have none: they never time out.
DEFINE INDEX IF NOT EXISTS idx_inactivity_deadline_ns ON TABLE runs COLUMNS inactivity_deadline_ns;

-- The head of an agent's release history is one backward probe of this
-- index; being unique, it also refuses a second entry at the same position.
DEFINE INDEX IF NOT EXISTS idx_agent_name_sequence ON TABLE releases COLUMNS agent_name, sequence UNIQUE;

-- Idempotency keys of appended batches, record id [run_id, key]: a lookup
-- by id, and a duplicate key makes the append's CREATE fail.
DEFINE TABLE IF NOT EXISTS run_appends SCHEMALESS
    PERMISSIONS FOR create FULL FOR select FULL FOR update NONE FOR delete NONE;
"""


async def init_schema(db: Database, seed_indexes: bool = False) -> None:
    """Define every table and index; safe to run on every start, and by several replicas at once.

    Without `seed_indexes`, the seed's `run_events` indexes (SEED_EVENT_INDEXES) are removed from a
    database that has them, with a log line; with it, they are defined too.
    """
    timeouts = 0
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            extra = SEED_EVENT_INDEX_SQL if seed_indexes else ""
            await db.query("BEGIN TRANSACTION;" + SEED + extra + LEDGER + LEASES + "COMMIT TRANSACTION;")
            if not seed_indexes:
                await _remove_seed_event_indexes(db)
            return
        except StoreConflict:
            if attempt == SCHEMA_ATTEMPTS:
                raise
            log.info("schema definition conflicted with another starter (attempt %d); retrying", attempt)
            await asyncio.sleep(random.uniform(0.5, 1.5) * SCHEMA_BACKOFF_SECONDS * min(attempt, 10))
        except StoreUnavailable as error:
            # Starters defining the schema at once can hold each other past the round-trip timeout;
            # the definitions are idempotent, so a few more tries are safe. A database that is down
            # still stops the start after them.
            timeouts += 1
            if timeouts >= SCHEMA_TIMEOUT_ATTEMPTS or attempt == SCHEMA_ATTEMPTS:
                raise
            log.info("schema definition did not finish (%s, attempt %d); retrying", error, attempt)
            await asyncio.sleep(random.uniform(0.5, 1.5) * SCHEMA_BACKOFF_SECONDS * 10)


async def _remove_seed_event_indexes(db: Database) -> None:
    [info] = await db.query("INFO FOR TABLE run_events;")
    found = [name for name in SEED_EVENT_INDEXES if name in (info or {}).get("indexes", {})]
    if not found:
        return
    # IF EXISTS: replicas starting together may remove the same index; the data stays as it is.
    await db.query("".join(f"REMOVE INDEX IF EXISTS {name} ON TABLE run_events;" for name in found))
    log.info(
        "removed the seed's run_events indexes %s: the record id run_events:[run_id, seq] holds their "
        "constraint and serves every read, and each cost every append a write (--seed-indexes keeps them)",
        ", ".join(found),
    )
