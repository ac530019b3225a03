"""Keeps a durable embedded engine's memtable flushed, so that writes never stall.

SurrealKV as bundled in surrealdb-embedded 3.0.0b10 does not flush its
memtable to disk while it is open. The memtable, sized by the engine from
the host's RAM (not a container's limit), grows with every write; when it
is full it rotates into a new one, and at the second rotation every write
waits for a flush that never comes: the daemon would hang with its data
intact. Closing the engine flushes it (Database.checkpoint).

So every `interval` seconds this reads the size of the engine's write-ahead
log, which tracks the memtable, and checkpoints when it passes
`wal_bytes`, or at once when the log has rotated (more than one file).
A checkpoint pauses every database call for a moment (longer with more
log, and seconds, growing with the data, when reopening compacts table
files; `python -m bench.checkpoint_pause` measures it).

After a storage fault (a write the engine could not make durable, e.g. on
a full disk) the same loop brings the store back: once the file system has
room for the memtable it closes, reopens and reads back the store
(Database.recover), and calls are accepted again only when that worked.

Memory the engine frees (a checkpoint's memtable, a compaction's buffers)
stays in glibc's malloc arenas unless handed back, so the daemon's RSS
would keep its high-water mark; every check therefore also trims the heap
(heap.trim: milliseconds when there is much to return, microseconds when
not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aivcs_ledgerd.store import Database, StoreDamaged, StoreError
from aivcs_ledgerd.store.database import free_bytes
from aivcs_ledgerd.store.wal import size as wal_size
from aivcs_ledgerd.upkeep import heap

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
# Free space a recovery waits for beyond the write-ahead log's size (the memtable's table file is
# about that size, and the manifest and a fresh log need a little more).
RECOVERY_MARGIN_BYTES = 4 << 20
RECOVERY_SECONDS = 2.0  # at most one recovery attempt this often


class Checkpointer:
    """Checkpoints `db` when its write-ahead log passes `wal_bytes` (0: never) or has rotated; trims the heap;
    recovers `db` after a storage fault."""

    def __init__(
        self,
        db: Database,
        wal_bytes: int,
        interval: float = CHECK_SECONDS,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        folder = db.wal_folder
        if folder is None:
            raise ValueError(f"{db.url} has no write-ahead log to watch")
        self._db = db
        self._folder = folder
        self._wal_bytes = wal_bytes
        self._interval = interval
        # (outcome "ok" | "failed" | "recovered" | "recovery_failed", seconds) after each checkpoint or recovery
        self._observe = observe
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._retry = False  # the last checkpoint failed: try again whatever the log's size
        self.checkpoints = 0
        self.failures = 0
        self.recoveries = 0
        self.last_wal_bytes = 0
        self._last_attempt = 0.0
        self._last_said = ""

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="database-checkpoint")

    async def stop(self) -> None:
        """Stop checking; a checkpoint in progress finishes first, so the engine is never left half-open."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def check(self) -> bool:
        """Checkpoint if the log asks for it; return whether a checkpoint ran (and succeeded)."""
        size, files = await asyncio.to_thread(wal_size, self._folder)
        self.last_wal_bytes = size
        if self._db.fault is not None:
            await self.recover(size)
            return False
        if self._wal_bytes <= 0 or not (self._retry or files > 1 or size >= self._wal_bytes):
            return False
        began = time.perf_counter()
        try:
            await self._db.checkpoint()
        except StoreError as error:
            self.failures += 1
            self._retry = True
            self._report("failed", began)
            hold = self._db.gate.last_hold
            log.warning(
                "database checkpoint failed (write-ahead log %d bytes in %d files; %d calls waited, longest %.2fs): %s",
                size,
                files,
                hold.waited,
                hold.longest,
                error,
            )
            return False
        self.checkpoints += 1
        self._retry = False
        seconds = self._report("ok", began)
        hold = self._db.gate.last_hold
        log.info(
            "database checkpoint: flushed %d bytes of write-ahead log (%d files) in %.2fs; "
            "%d calls waited, longest %.2fs",
            size,
            files,
            seconds,
            hold.waited,
            hold.longest,
        )
        return True

    async def recover(self, wal_bytes: int) -> bool:
        """Try to clear a storage fault once there is room; return whether the store is sound again."""
        fault = self._db.fault
        if fault is None:
            return True
        if isinstance(fault, StoreDamaged):
            self._say(f"not recovering by itself from damaged data ({fault}); the operator must repair or restore")
            return False
        now = time.monotonic()
        if now - self._last_attempt < RECOVERY_SECONDS:
            return False
        free = await asyncio.to_thread(free_bytes, self._folder)
        need = wal_bytes + RECOVERY_MARGIN_BYTES
        if free < need:
            self._say(f"waiting for free space to recover the store: {free} bytes free, {need} needed")
            return False
        self._last_attempt = now
        began = time.perf_counter()
        try:
            await self._db.recover()
        except StoreError as error:
            self._report("recovery_failed", began)
            self._say(f"storage recovery failed, trying again: {error}")
            return False
        self.recoveries += 1
        self._last_said = ""
        self._report("recovered", began)
        return True

    def _say(self, message: str) -> None:
        """Log a recovery state once, not every second."""
        if message != self._last_said:
            log.warning("%s", message)
            self._last_said = message

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
                return
            try:
                await self.check()
            except Exception:
                log.exception("database checkpoint check failed unexpectedly")
            await asyncio.to_thread(heap.trim)

    def _report(self, outcome: str, began: float) -> float:
        seconds = time.perf_counter() - began
        if self._observe is not None:
            self._observe(outcome, seconds)
        return seconds
