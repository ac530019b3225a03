"""SurrealQL for ownership leases: one record per owned key (a run or an agent).

A lease is `ledger_leases:⟨key⟩` with the owning replica's id and gRPC
address, an epoch (the fencing token: it grows by one at every acquisition)
and an expiry in the database's clock, so replicas never compare their own
clocks. A write transaction that is fenced starts with FENCE_CHECK and ends
with FENCE_RENEW: it refuses itself unless the lease still names this
replica and epoch, and it writes the lease record, so that a takeover
racing it is a write-write conflict on that record, not only a read the
engine might let through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from surrealdb import RecordID

from aivcs_ledgerd.store.database import THROW_PREFIX, Queries

TABLE = "ledger_leases"
FENCED = "fenced"

SCHEMA = f"""
-- Ownership leases of runs and agents, for several daemon replicas on one server.
DEFINE TABLE IF NOT EXISTS {TABLE} SCHEMALESS;
"""


@dataclass(frozen=True, slots=True)
class Fence:
    """What a fenced write checks: the lease `key` is held by `owner` at `epoch`."""

    key: str
    owner: str
    epoch: int
    lease_ms: int

    def variables(self) -> dict[str, Any]:
        return {
            "lease_id": RecordID(TABLE, self.key),
            "lease_owner": self.owner,
            "lease_epoch": self.epoch,
            "lease_for": f"{self.lease_ms}ms",
        }


# Inside a transaction, before its writes. `$lease_for` is a duration string.
FENCE_CHECK = f"""
LET $lease = (SELECT owner, epoch FROM ONLY $lease_id);
IF $lease = NONE OR $lease.owner != $lease_owner OR $lease.epoch != $lease_epoch {{
    THROW '{THROW_PREFIX}{FENCED}'
}};
"""
FENCE_RENEW = """
UPDATE ONLY $lease_id SET expires = time::now() + <duration> $lease_for RETURN NONE;
"""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease, as the database said."""

    owner: str | None
    address: str
    epoch: int
    live: bool


async def acquire(db: Queries, key: str, owner: str, address: str, lease_ms: int) -> Holder:
    """Take the lease when it is free, expired, or ours; bump its epoch. Returns the holder after."""
    sql = """
    BEGIN TRANSACTION;
    LET $held = (SELECT owner, epoch, expires > time::now() AS live FROM ONLY $lease_id);
    IF $held = NONE OR $held.owner = NONE OR $held.owner = $lease_owner OR !$held.live {
        UPSERT ONLY $lease_id CONTENT {
            owner: $lease_owner,
            address: $address,
            epoch: ($held.epoch ?? 0) + 1,
            expires: time::now() + <duration> $lease_for,
        } RETURN NONE;
    };
    SELECT owner, address, epoch, expires > time::now() AS live FROM ONLY $lease_id;
    COMMIT TRANSACTION;
    """
    variables = Fence(key, owner, 0, lease_ms).variables() | {"address": address}
    results = await db.query(sql, variables)
    row = results[-2]
    return Holder(row.get("owner"), row.get("address", ""), row["epoch"], bool(row["live"]))


async def holder(db: Queries, key: str) -> Holder | None:
    [row] = await db.query(
        "SELECT owner, address, epoch, expires > time::now() AS live FROM ONLY $lease_id;",
        {"lease_id": RecordID(TABLE, key)},
    )
    if row is None:
        return None
    return Holder(row.get("owner"), row.get("address", ""), row["epoch"], bool(row["live"]))


async def renew(db: Queries, fence: Fence) -> bool:
    """Extend a lease we hold at this epoch; False when it was lost."""
    sql = """
    UPDATE $lease_id SET expires = time::now() + <duration> $lease_for
        WHERE owner = $lease_owner AND epoch = $lease_epoch RETURN VALUE epoch;
    """
    [renewed] = await db.query(sql, fence.variables())
    return bool(renewed)


async def release(db: Queries, keys: list[str], owner: str) -> None:
    """Give up leases at once (the epoch stays, so the next holder's is higher)."""
    if not keys:
        return
    await db.query(
        "UPDATE $ids SET owner = NONE, expires = time::now() WHERE owner = $owner RETURN NONE;",
        {"ids": [RecordID(TABLE, key) for key in keys], "owner": owner},
    )
