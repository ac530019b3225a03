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
A checkpoint pauses every database call for a fraction of a second (about
0.3 s per 50 MB of log on 2 cores; seconds, growing with the data, when reopening
compacts table files).

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
import os
import time
from collections.abc import Callable
from pathlib import Path

from aivcs_ledgerd import heap
from aivcs_ledgerd.store import Database, StoreError

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0


def wal_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) of the write-ahead log in `folder`; (0, 0) when it does not exist yet."""
    total = files = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.endswith(".wal"):
                with contextlib.suppress(FileNotFoundError):
                    size = entry.stat().st_size
                    total += size
                    files += size > 0
    return total, files


class Checkpointer:
    """Checkpoints `db` when its write-ahead log passes `wal_bytes` or has rotated; trims the heap."""

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
        self._observe = observe  # (outcome "ok" | "failed", seconds) after each checkpoint
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._retry = False  # the last checkpoint failed: try again whatever the log's size
        self.checkpoints = 0
        self.failures = 0
        self.last_wal_bytes = 0

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
        if not (self._retry or files > 1 or size >= self._wal_bytes):
            return False
        began = time.perf_counter()
        try:
            await self._db.checkpoint()
        except StoreError as error:
            self.failures += 1
            self._retry = True
            self._report("failed", began)
            hold = self._db.gate.last_hold
            log.warning("database checkpoint failed (write-ahead log %d bytes in %d files; %d calls waited, "
                        "longest %.2fs): %s", size, files, hold.waited, hold.longest, error)
            return False
        self.checkpoints += 1
        self._retry = False
        seconds = self._report("ok", began)
        hold = self._db.gate.last_hold
        log.info("database checkpoint: flushed %d bytes of write-ahead log (%d files) in %.2fs; "
                 "%d calls waited, longest %.2fs", size, files, seconds, hold.waited, hold.longest)
        return True

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
