"""When an open writer sends RunLedger.Heartbeat, and what the answers mean.

A run created with an inactivity timeout is failed by the daemon once it has
had no append and no heartbeat for that long. An agent in a long quiet step
(a slow tool, a long model call) is alive all the same, so its open writer
sends a heartbeat whenever no append has been acknowledged for a third of
the timeout: two heartbeats may be lost before the timeout strikes. A run
without a timeout gets none. `EventWriter` (a thread) and `AsyncEventWriter`
(a task) drive the same `HeartbeatPlan`; it does no I/O itself.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import grpc

from aivcs.ledger._errors import LedgerError
from aivcs.ledger._reports import LOGGER, Throttle
from aivcs.ledger.v1 import run_pb2

__all__ = ["HeartbeatInterval", "HeartbeatPlan", "heartbeat_interval_for"]

HeartbeatInterval = float | Literal["auto"] | None
"""Seconds between the heartbeats of a quiet writer. "auto": a third of the
run's inactivity timeout, learnt from a first heartbeat; None or 0: none."""

# After a heartbeat that failed for a passing reason (the daemon restarts),
# the next one goes after this many seconds, or the interval if shorter.
RETRY_DELAY = 5.0
# Answers after which heartbeats stop: the run is over or unknown, the daemon
# has no Heartbeat, or this token may not send one. Appends report the first
# two themselves; the others do not concern them.
_FINAL = {
    grpc.StatusCode.FAILED_PRECONDITION: "the run is not RUNNING any more",
    grpc.StatusCode.NOT_FOUND: "the run does not exist",
    grpc.StatusCode.UNIMPLEMENTED: "the daemon does not offer Heartbeat",
    grpc.StatusCode.PERMISSION_DENIED: "the token may not send heartbeats",
    grpc.StatusCode.UNAUTHENTICATED: "the daemon wants a (valid) token",
}


def heartbeat_interval_for(inactivity_timeout_ms: int) -> float | None:
    """A third of the run's inactivity timeout, in seconds; None when it has none."""
    return inactivity_timeout_ms / 3000 if inactivity_timeout_ms > 0 else None


class HeartbeatPlan:
    """The next heartbeat's time, moved on by every acknowledged append."""

    def __init__(
        self, run_id: str, interval: HeartbeatInterval, log_interval: float, logger: logging.Logger = LOGGER
    ) -> None:
        self._run_id = run_id
        self._log = logger
        self._throttle = Throttle(log_interval)
        self._failures = 0
        # "auto": the first heartbeat goes at once and its answer gives the interval
        self.interval: float | None = None if interval == "auto" else (interval or None)
        self.active = interval == "auto" or self.interval is not None
        self.next_at = time.monotonic() + (self.interval or 0.0)
        self.sent = 0

    def activity(self) -> None:
        """The daemon just stored an append: that counts as a sign of life."""
        if self.interval is not None:
            self.next_at = time.monotonic() + self.interval

    def delay(self) -> float:
        """Seconds until the next heartbeat is due (0 or less: now)."""
        return self.next_at - time.monotonic()

    def answered(self, run: run_pb2.Run) -> None:
        self.sent += 1
        if self._failures:
            self._log.warning(
                "ledger writer for run %s: heartbeats get through again after %d failures", self._run_id, self._failures
            )
            self._failures = 0
            self._throttle.reset()
        if self.interval is None:
            self.interval = heartbeat_interval_for(run.inactivity_timeout_ms)
            self.active = self.interval is not None
        if self.interval is not None:
            self.next_at = time.monotonic() + self.interval

    def failed(self, error: LedgerError) -> None:
        why = _FINAL.get(error.code)
        if why is not None:
            self.active = False
            level = logging.INFO if error.code is grpc.StatusCode.UNIMPLEMENTED else logging.WARNING
            self._log.log(
                level,
                "ledger writer for run %s: no more heartbeats, %s (%s: %s)",
                self._run_id,
                why,
                error.code.name,
                error.message,
            )
            return
        self._failures += 1
        if self._throttle.due():
            self._log.warning(
                "ledger writer for run %s: heartbeat failed (%s: %s), %d failures in a row; retrying",
                self._run_id,
                error.code.name,
                error.message,
                self._failures,
            )
        self.next_at = time.monotonic() + min(RETRY_DELAY, self.interval or RETRY_DELAY)
