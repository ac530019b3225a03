"""Abandoned runs: the daemon fails a RUNNING run that had no append and no Heartbeat for its timeout.

A run created with an inactivity timeout (CreateRunRequest.inactivity_timeout_ms,
or the daemon's `--run-inactivity-timeout`) carries a deadline, its last
activity plus the timeout, that every append and Heartbeat moves in the
transaction that records them. Every daemon sweeps about once a second: one
range scan of the deadline index finds the runs due, and each is failed
through its per-run writer (`Writers.expire`), under the lock its appends
take, by a transaction that re-checks the deadline it saw. So a run is never
failed while an append to it is being committed on that daemon, an append or
Heartbeat committed first through any daemon keeps it alive, and when several
daemons share one database at most one of them fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from aivcs_ledgerd.ledger.writer import Writers
from aivcs_ledgerd.model import RunStatus
from aivcs_ledgerd.store import Database, StoreError
from aivcs_ledgerd.store.runs import IdleRun, idle_runs
from aivcs_ledgerd.util.durations import format_duration_ms
from aivcs_ledgerd.util.timeutil import ns_to_datetime

log = logging.getLogger(__name__)

SWEEP_SECONDS = 1.0
# Runs failed per scan; a longer backlog is worked off scan after scan without pausing.
SWEEP_BATCH = 100
# Log lines show at most this much of an id or name (both may be 256 bytes).
SHOWN_CHARS = 64


def inactivity_reason(timeout_ms: int) -> str:
    """The status_reason of a run the daemon failed for inactivity."""
    return f"no append or heartbeat for {format_duration_ms(timeout_ms)} (inactivity timeout)"


def _shown(text: str) -> str:
    return repr(text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "...")


class Sweeper:
    """Fails idle runs every `interval` seconds (jittered, so replicas do not sweep in lockstep)."""

    def __init__(
        self,
        db: Database,
        writers: Writers,
        interval: float = SWEEP_SECONDS,
        observe: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._writers = writers
        self._interval = interval
        self._observe = observe  # called once per run this daemon failed
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._failing = False  # the last sweep could not reach the database
        self.failed_runs = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="inactivity-sweeper")

    async def stop(self) -> None:
        """Stop sweeping; a run being failed is finished first."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def sweep(self) -> int:
        """Fail every run due now; return how many this daemon failed."""
        failed = 0
        while not self._stopping.is_set():
            due = await idle_runs(self._db, time.time_ns(), SWEEP_BATCH)
            for idle in due:
                if self._stopping.is_set():
                    return failed
                failed += await self._expire(idle)
            if len(due) < SWEEP_BATCH:
                break
        return failed

    async def _expire(self, idle: IdleRun) -> int:
        now_ns = time.time_ns()
        reason = inactivity_reason(idle.inactivity_timeout_ms)
        worked_ms = (idle.last_activity_ns - idle.created_ns) // 1_000_000
        changes: dict[str, Any] = {
            "status": RunStatus.FAILED.value,
            "success": False,
            "duration_ms": worked_ms,  # creation to the last sign of life
            "completed_at": ns_to_datetime(now_ns),
            "status_reason": reason,
        }
        run = await self._writers.expire(idle.run_id, idle.deadline_ns, changes)
        if run is None:
            return 0
        self.failed_runs += 1
        if self._observe is not None:
            self._observe()
        log.info(
            "run failed for inactivity: run %s (agent %s, %d events): %s",
            _shown(run.run_id),
            _shown(run.agent_name),
            run.total_events,
            reason,
            extra={"run_id": run.run_id, "agent_name": run.agent_name},
        )
        return 1

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            pause = self._interval * random.uniform(0.5, 1.5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)
                return
            try:
                await self.sweep()
            except StoreError as error:
                if not self._failing:
                    log.warning(
                        "inactivity sweep: cannot reach the database (%s); trying again every %gs",
                        error,
                        self._interval,
                    )
                self._failing = True
                continue
            except Exception:
                log.exception("inactivity sweep failed unexpectedly")
                continue
            if self._failing:
                log.info("inactivity sweep: the database answers again")
                self._failing = False
