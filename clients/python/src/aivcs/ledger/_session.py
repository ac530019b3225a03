"""What the run helpers (`RunSession`, `AsyncRunSession`) share: their state, and how the end
of a `with` block becomes the end of the run.

A normal exit completes the run with `expected_total_events` = the events
acknowledged, so a run whose events went missing cannot be marked
complete; an exception fails it with the exception as its reason; anything
that is not an `Exception` (KeyboardInterrupt, asyncio.CancelledError)
cancels it. The helpers only make the calls.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Literal

from aivcs.ledger._heartbeat import heartbeat_interval_for
from aivcs.ledger._models import Run
from aivcs.ledger._settings import WriterSettings

__all__ = ["Ending", "SessionState", "ending_for"]


@dataclass(frozen=True, slots=True)
class Ending:
    """How a run recorded by a `with` block ends: "complete", "fail" or "cancel", and why."""

    action: Literal["complete", "fail", "cancel"]
    reason: str = ""


def ending_for(exc: BaseException | None) -> Ending:
    if exc is None:
        return Ending("complete")
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Ending("fail" if isinstance(exc, Exception) else "cancel", reason)


class SessionState:
    """The run's creation arguments, the run once created, and the clock of its duration."""

    def __init__(self, create: dict[str, Any], settings: WriterSettings) -> None:
        self._create = create
        self._settings = settings
        self._started = 0.0
        self.run: Run | None = None
        self.final_state_digest: str | None = None

    @property
    def run_id(self) -> str:
        if self.run is None:
            raise RuntimeError("the run starts when its `with` block is entered")
        return self.run.run_id

    def _began(self, run: Run) -> WriterSettings:
        """Note the created run; the writer's settings, heartbeats paced by its timeout."""
        self.run = run
        self._started = time.monotonic()
        if self._settings.heartbeat_interval != "auto":
            return self._settings
        # the run is known: no need for the writer to ask with a first heartbeat
        return dataclasses.replace(self._settings, heartbeat_interval=heartbeat_interval_for(run.inactivity_timeout_ms))

    def _elapsed_ms(self) -> int:
        return int((time.monotonic() - self._started) * 1000)
