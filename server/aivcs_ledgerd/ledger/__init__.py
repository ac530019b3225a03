"""The ledger's rules: run lifecycle, seq assignment, idempotency, releases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aivcs_ledgerd.ledger.events import MAX_CONCURRENT_READS, Events
from aivcs_ledgerd.ledger.hub import Hub
from aivcs_ledgerd.ledger.limits import Limits
from aivcs_ledgerd.ledger.ownership import SoleOwner
from aivcs_ledgerd.ledger.releases import Releases
from aivcs_ledgerd.ledger.runs import Runs
from aivcs_ledgerd.store import Database

# After the last stream's handler has ended, the time given to gRPC to send its status.
STATUS_SECONDS = 0.05


class Ledger:
    """Everything the transport needs, over one database handle.

    Several Ledger objects may share one Database: the write serialisation
    belongs to the handle, not to this object.
    """

    def __init__(
        self,
        db: Database,
        limits: Limits | None = None,
        ownership: SoleOwner | None = None,
        run_inactivity_timeout_ms: int = 0,
        max_concurrent_reads: int = MAX_CONCURRENT_READS,
    ) -> None:
        self.db = db
        self.limits = limits or Limits()
        self.hub = Hub()
        self.ownership = ownership or SoleOwner()
        self.runs = Runs(db, self.hub, self.ownership, run_inactivity_timeout_ms)
        self.events = Events(db, self.hub, self.limits, self.ownership, max_concurrent_reads)
        self.releases = Releases(db, self.ownership)
        # Set when the daemon starts draining: long-lived streams end promptly
        # (after answering what they already took) instead of holding shutdown
        # for the whole grace period.
        self.draining = asyncio.Event()
        self._streams = 0  # IngestEvents and SubscribeEvents calls in progress
        self._no_streams = asyncio.Event()
        self._no_streams.set()

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """Counts a long-lived stream while it runs (see `streams_ended`)."""
        self._streams += 1
        self._no_streams.clear()
        try:
            yield
        finally:
            self._streams -= 1
            if self._streams == 0:
                self._no_streams.set()

    async def streams_ended(self, seconds: float) -> None:
        """Wait (at most `seconds`) until no stream is in progress, and a moment for their status to go out."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_streams.wait(), seconds)
        await asyncio.sleep(STATUS_SECONDS)

    def begin_drain(self) -> None:
        """End subscriptions and stop reading ingest streams; queued appends still commit."""
        self.draining.set()
        self.hub.close()

    async def close(self) -> None:
        """Answer every queued append; after this the ledger accepts no more."""
        await self.events.close()
