"""Which replica writes a run (or an agent's release history): one owner at a time, fenced.

Several daemons on one SurrealDB server would otherwise run overlapping
transactions on one run's records, and the engine's conflict check is not
reliable under concurrency. So each key (`run:<id>`, `agent:<name>`) is
owned by one replica through a lease record in the database (store/leases.py):
the owner serialises the key's writes in process, as a single daemon does;
the others forward those calls to it (transport/peers.py). Every fenced write
transaction checks the lease's owner and epoch, so a replica that lost a
lease (paused, partitioned, slow) writes nothing, whatever it believes.

A replica trusts its own lease only until `lease - margin` after the moment
it sent the query that took or renewed it (a monotonic clock, which keeps
running while the process is stopped), so it stops writing before the
database would let another replica take over. Leases are renewed by every
fenced write and, for keys used recently, by a background task; they are
released at once when the daemon drains.

With an embedded engine the daemon is the only process on its data:
`SoleOwner` owns everything and adds nothing to any transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from aivcs_ledgerd.ledger.errors import Unavailable
from aivcs_ledgerd.ledger.store_errors import translated
from aivcs_ledgerd.store import Database, Rejected, StoreConflict, StoreError
from aivcs_ledgerd.store import leases as store
from aivcs_ledgerd.store.database import Exclusive, Queries
from aivcs_ledgerd.store.leases import FENCED, Fence

T = TypeVar("T")

log = logging.getLogger(__name__)

LEASE_SECONDS = 3.0
# Stop trusting a lease this long before the database's expiry: more than a
# round trip and a commit on a loaded machine.
MARGIN_SECONDS = 1.0
# A lease not used for this long is not renewed in the background; it lapses.
KEEP_IDLE_SECONDS = 10.0
# How long a non-owner remembers who owns a key before asking the database again.
REMOTE_CACHE_SECONDS = 1.0
ACQUIRE_ATTEMPTS = 4


class NotOwner(Unavailable):
    """Another replica holds the lease: forward the call to `address` (None: nobody reachable)."""

    def __init__(self, key: str, address: str | None) -> None:
        super().__init__(f"{key} is owned by another replica ({address or 'unknown'}); retry")
        self.key = key
        self.address = address


@dataclass(slots=True)
class _Term:
    fence: Fence
    valid_until: float  # monotonic
    renewed_at: float
    used_at: float


class Held(NamedTuple):
    """What a fenced block writes with: the key's locked session, the fence (None: nothing to
    check), and whether the lease was taken just now (another replica may have written before)."""

    session: Exclusive
    fence: Fence | None
    fresh: bool


@dataclass(slots=True)
class Change:
    """Counts for metrics: leases taken, taken over from another replica, lost, released."""

    acquired: int = 0
    taken_over: int = 0
    lost: int = 0
    released: int = 0


class Fenced:
    """`SoleOwner.fenced`: a class rather than a generator, as every append enters one."""

    __slots__ = ("_exclusive", "_key", "_owner")

    def __init__(self, owner: SoleOwner, exclusive: Exclusive, key: str) -> None:
        self._owner = owner
        self._exclusive = exclusive
        self._key = key

    async def __aenter__(self) -> Held:
        owner, key = self._owner, self._key
        address = owner.remote_owner(key)
        if address is not None:
            raise NotOwner(key, address)
        session = await self._exclusive.__aenter__()
        try:
            fence, fresh = await owner.hold(session, key)
        except BaseException as error:
            await self._exclusive.__aexit__(type(error), error, error.__traceback__)
            self._refused(error)
            raise
        return Held(session, fence, fresh)

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        await self._exclusive.__aexit__(kind, error, trace)
        if error is not None:
            self._refused(error)

    def _refused(self, error: BaseException) -> None:
        """A fenced refusal is NotOwner (raised in place of `error`); anything else passes through."""
        if isinstance(error, Rejected) and error.reason == FENCED:
            self._owner.lost(self._key)
            raise NotOwner(self._key, None) from None


class SoleOwner:
    """One process on its data: owns every key, fences nothing."""

    enabled = False
    replica_id = "sole"
    address = ""

    def __init__(self) -> None:
        self.changes = Change()

    async def hold(self, session: Queries, key: str) -> tuple[Fence | None, bool]:
        """The fence for a write to `key` (None: nothing to check) and whether the lease is new."""
        return None, False

    def remote_owner(self, key: str) -> str | None:
        """The address of another replica known to own `key`, without asking the database."""
        return None

    async def locate(self, key: str) -> str | None:
        """The address of a live owner of `key` other than this replica, asking the database."""
        return None

    def fenced(self, db: Database, key: str) -> Fenced:
        """`key`'s lock on `db` with this replica's fence for the writes made under it
        (`async with owner.fenced(db, key) as held`).

        NotOwner when another replica owns `key`. A write the database refused
        as fenced (the lease moved meanwhile) wrote nothing: raised out of the
        block, it becomes NotOwner too, so the caller forwards it. Other
        refusals pass through.
        """
        return Fenced(self, db.exclusive(key), key)

    async def fenced_write(self, db: Database, key: str, write: Callable[[Queries, Fence | None], Awaitable[T]]) -> T:
        """Run `write` in `fenced(db, key)`: one fenced transaction, or NotOwner."""
        async with self.fenced(db, key) as held:
            return await write(held.session, held.fence)

    def renewed(self, key: str, sent: float) -> None:
        """A fenced write sent at monotonic time `sent` committed, renewing the lease."""

    async def claim(self, key: str) -> str | None:
        """Own `key` unless another replica does; returns that replica's address, or None when this one owns it."""
        return None

    def lost(self, key: str) -> None:
        """A fenced write was refused: this replica no longer owns `key`."""

    def forget_remote(self, key: str) -> None:
        """The cached remote owner did not answer as owner: ask the database next time."""

    def start(self) -> None:
        pass

    async def release_all(self) -> None:
        pass


class Leases(SoleOwner):
    """Ownership through lease records on a shared database."""

    enabled = True

    def __init__(
        self,
        db: Database,
        address: str,
        lease_seconds: float = LEASE_SECONDS,
        on_acquired: Callable[[str], None] | None = None,
        observe: Callable[[str, int], None] | None = None,
    ) -> None:
        super().__init__()
        self._db = db
        self.replica_id = str(uuid.uuid4())
        self.address = address
        self._lease_ms = int(lease_seconds * 1000)
        self._lease = lease_seconds
        self._margin = min(MARGIN_SECONDS, lease_seconds / 3)
        self._terms: dict[str, _Term] = {}
        self._remote: dict[str, tuple[str, float]] = {}
        self._on_acquired = on_acquired
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False
        self._observe = observe

    def _changed(self, change: str, count: int = 1) -> None:
        setattr(self.changes, change, getattr(self.changes, change) + count)
        if self._observe is not None and count:
            self._observe(change, count)

    async def hold(self, session: Queries, key: str) -> tuple[Fence | None, bool]:
        """Our fence for `key`, taking the lease if it is free or expired; NotOwner if another replica holds it.

        The caller holds `key`'s lock on the handle, so this process never
        runs two writes (or a write and a renewal) on one key at once.
        """
        now = time.monotonic()
        term = self._terms.get(key)
        if term is not None and now < term.valid_until:
            term.used_at = now
            return term.fence, False
        if self._closed:
            raise Unavailable("the daemon is shutting down")
        sent = time.monotonic()
        if term is not None:
            # Ours until the database says otherwise: renewing keeps the epoch (nobody else wrote).
            if await store.renew(session, term.fence):
                term.valid_until = sent + self._lease - self._margin
                term.renewed_at = term.used_at = sent
                return term.fence, False
            self._drop(key, lost=True)
        held = await self._acquire(session, key)
        if held.owner != self.replica_id:
            self._remote[key] = (held.address, time.monotonic() + REMOTE_CACHE_SECONDS)
            raise NotOwner(key, held.address if held.live else None)
        fence = Fence(key, self.replica_id, held.epoch, self._lease_ms)
        self._terms[key] = _Term(fence, sent + self._lease - self._margin, sent, sent)
        self._remote.pop(key, None)
        self._changed("acquired")
        if held.epoch > 1:
            self._changed("taken_over")
        log.info("took ownership of %s (epoch %d)", key, held.epoch)
        if self._on_acquired is not None:
            self._on_acquired(key)
        return fence, True

    async def _acquire(self, session: Queries, key: str) -> store.Holder:
        """store.acquire, again when it met another replica acquiring the same key at once."""
        for attempt in range(ACQUIRE_ATTEMPTS):
            try:
                return await store.acquire(session, key, self.replica_id, self.address, self._lease_ms)
            except StoreConflict:
                if attempt == ACQUIRE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def renewed(self, key: str, sent: float) -> None:
        """A fenced write sent at monotonic `sent` committed: it renewed the lease."""
        term = self._terms.get(key)
        if term is not None:
            term.valid_until = max(term.valid_until, sent + self._lease - self._margin)
            term.renewed_at = max(term.renewed_at, sent)

    def remote_owner(self, key: str) -> str | None:
        known = self._remote.get(key)
        if known is None:
            return None
        if time.monotonic() > known[1] or key in self._terms:
            self._remote.pop(key, None)
            return None
        return known[0]

    @translated  # the ways in ask this before any ledger call: a store error must not escape
    async def locate(self, key: str) -> str | None:
        if key in self._terms and time.monotonic() < self._terms[key].valid_until:
            return None
        known = self.remote_owner(key)
        if known is not None:
            return known
        held = await store.holder(self._db, key)
        if held is None or held.owner is None or held.owner == self.replica_id or not held.live:
            return None
        self._remote[key] = (held.address, time.monotonic() + REMOTE_CACHE_SECONDS)
        return held.address

    @translated
    async def claim(self, key: str) -> str | None:
        try:
            async with self._db.exclusive(key) as session:
                await self.hold(session, key)
        except NotOwner as owned:
            return owned.address
        return None

    def lost(self, key: str) -> None:
        self._drop(key, lost=True)

    def forget_remote(self, key: str) -> None:
        self._remote.pop(key, None)

    def _drop(self, key: str, lost: bool) -> None:
        if self._terms.pop(key, None) is not None and lost:
            self._changed("lost")
            log.info("lost ownership of %s", key)

    def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_loop(), name="lease-renewer")

    async def _renew_loop(self) -> None:
        """Renew leases used recently that no write renewed lately; let idle ones lapse."""
        every = self._lease / 3
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for key, term in list(self._terms.items()):
                if now - term.used_at > KEEP_IDLE_SECONDS:
                    continue  # idle: lapses; the next write takes it again if nobody else did
                if now - term.renewed_at < every:
                    continue
                try:
                    async with self._db.exclusive(key) as session:
                        if self._terms.get(key) is not term:
                            continue
                        sent = time.monotonic()
                        if await store.renew(session, term.fence):
                            term.valid_until = sent + self._lease - self._margin
                            term.renewed_at = sent
                        else:
                            self._drop(key, lost=True)
                except StoreError as error:
                    log.warning("could not renew the lease of %s: %s", key, error)

    async def release_all(self) -> None:
        """Give every lease up at once (on drain), so other replicas take over without waiting."""
        self._closed = True
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        keys = list(self._terms)
        self._terms.clear()
        try:
            await store.release(self._db, keys, self.replica_id)
            self._changed("released", len(keys))
            log.info("released %d leases", len(keys))
        except StoreError as error:
            log.warning("could not release %d leases (they expire by themselves): %s", len(keys), error)
