"""What a buffered writer tells the log while something keeps going wrong.

A writer that cannot reach the daemon retries many times a second, and a
non-blocking writer whose buffer is full may drop thousands of events: one
line per occurrence would drown the agent's own log, none would leave the
operator guessing. So each condition is logged when it starts, then at most
once per `interval` seconds with the counts since it started, and once more
when it ends (recovered, or given up).
"""

from __future__ import annotations

import logging
import time

from aivcs.ledger._errors import LedgerError

__all__ = ["LOGGER", "DropReport", "RetryReport", "Throttle"]

LOGGER = logging.getLogger("aivcs.ledger.writer")


class Throttle:
    """True for the first occurrence, then at most once per `interval` seconds."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: float | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if self._last is None or now - self._last >= self._interval:
            self._last = now
            return True
        return False

    def reset(self) -> None:
        self._last = None


class RetryReport:
    """Failed attempts to reach the daemon, from the first one to recovery or giving up."""

    def __init__(self, run_id: str, interval: float, logger: logging.Logger = LOGGER) -> None:
        self._run_id = run_id
        self._log = logger
        self._throttle = Throttle(interval)
        self._failures = 0
        self._since: float | None = None

    @property
    def failures(self) -> int:
        """Failed attempts since the last success."""
        return self._failures

    def failed(self, error: LedgerError, pending: int, delay: float) -> None:
        now = time.monotonic()
        self._failures += 1
        if self._since is None:
            self._since = now
        if not self._throttle.due():
            return
        if self._failures == 1:
            self._log.warning(
                "ledger writer for run %s: cannot send events (%s: %s); retrying, %d events unacknowledged",
                self._run_id,
                error.code.name,
                error.message,
                pending,
            )
        else:
            self._log.warning(
                "ledger writer for run %s: still retrying after %.1fs, %d failed attempts, "
                "%d events unacknowledged; last error %s: %s",
                self._run_id,
                now - self._since,
                self._failures,
                pending,
                error.code.name,
                error.message,
            )

    def recovered(self) -> None:
        if self._since is None:
            return
        self._log.warning(
            "ledger writer for run %s: sending again after %d failed attempts over %.1fs",
            self._run_id,
            self._failures,
            time.monotonic() - self._since,
        )
        self._failures, self._since = 0, None
        self._throttle.reset()

    def gave_up(self, error: LedgerError) -> None:
        self._log.error(
            "ledger writer for run %s: gave up after %d failed attempts: %s",
            self._run_id,
            self._failures,
            error.message,
        )


class DropReport:
    """Events a non-blocking writer dropped because its buffer was full."""

    def __init__(self, run_id: str, interval: float, logger: logging.Logger = LOGGER) -> None:
        self._run_id = run_id
        self._log = logger
        self._throttle = Throttle(interval)
        self.dropped = 0
        self._unreported = 0

    def drop(self, buffered: int) -> None:
        self.dropped += 1
        self._unreported += 1
        if self._throttle.due():
            self._log.warning(
                "ledger writer for run %s: buffer full (%d events unacknowledged), dropped %d events (%d in all)",
                self._run_id,
                buffered,
                self._unreported,
                self.dropped,
            )
            self._unreported = 0

    def closed(self) -> None:
        if self.dropped:
            self._log.warning(
                "ledger writer for run %s: closed having dropped %d events because its buffer was full",
                self._run_id,
                self.dropped,
            )
