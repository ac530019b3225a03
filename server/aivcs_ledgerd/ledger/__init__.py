"""The ledger's rules: run lifecycle, seq assignment, idempotency, releases."""

from __future__ import annotations

import asyncio

from aivcs_ledgerd.config import Limits
from aivcs_ledgerd.ledger.events import Events
from aivcs_ledgerd.ledger.hub import Hub
from aivcs_ledgerd.ledger.ownership import SoleOwner
from aivcs_ledgerd.ledger.releases import Releases
from aivcs_ledgerd.ledger.runs import Runs
from aivcs_ledgerd.store import Database


class Ledger:
    """Everything the transport needs, over one database handle.

    Several Ledger objects may share one Database: the write serialisation
    belongs to the handle, not to this object.
    """

    def __init__(self, db: Database, limits: Limits | None = None, ownership: SoleOwner | None = None) -> None:
        self.db = db
        self.limits = limits or Limits()
        self.hub = Hub()
        self.ownership = ownership or SoleOwner()
        self.runs = Runs(db, self.hub, self.ownership)
        self.events = Events(db, self.hub, self.limits, self.ownership)
        self.releases = Releases(db, self.ownership)
        # Set when the daemon starts draining: long-lived streams end promptly
        # (after answering what they already took) instead of holding shutdown
        # for the whole grace period.
        self.draining = asyncio.Event()

    def begin_drain(self) -> None:
        """End subscriptions and stop reading ingest streams; queued appends still commit."""
        self.draining.set()
        self.hub.close()

    async def close(self) -> None:
        """Answer every queued append; after this the ledger accepts no more."""
        await self.events.close()
