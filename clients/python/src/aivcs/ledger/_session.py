"""What the run helpers (`RunSession`, `AsyncRunSession`, and the adapters' `Recorder`) share: their
state, and how the end of a `with` block (or of a recorded invocation) becomes the end of the run.

A normal exit completes the run with `expected_total_events` = the events
acknowledged, so a run whose events went missing cannot be marked
complete; an exception fails it with the exception as its reason; anything
that is not an `Exception` (KeyboardInterrupt, asyncio.CancelledError)
cancels it. `RunEnd` is the decision, the helpers only make the call it
names (`RunEnd.apply`), blocking or awaited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from aivcs.ledger._errors import LedgerError
from aivcs.ledger._models import Run
from aivcs.ledger._settings import WriterSettings, settings_for_run

__all__ = ["Ending", "RunEnd", "SessionState", "ending_for", "run_end"]

Result = TypeVar("Result", covariant=True)


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


class _RunEnders(Protocol[Result]):
    """`Runs` (a `Run`) or `AsyncRuns` (an awaitable of it): the calls that end a run."""

    def complete(
        self,
        run_id: str,
        *,
        final_state_digest: str | None = ...,
        duration_ms: int = ...,
        expected_total_events: int | None = ...,
    ) -> Result: ...

    def fail(
        self, run_id: str, reason: str, *, duration_ms: int = ..., expected_total_events: int | None = ...
    ) -> Result: ...

    def cancel(self, run_id: str, reason: str = ..., *, duration_ms: int = ...) -> Result: ...


@dataclass(frozen=True, slots=True)
class RunEnd:
    """The call that ends a recorded run: CompleteRun, FailRun or CancelRun, with its fields."""

    action: Literal["complete", "fail", "cancel"]
    reason: str
    duration_ms: int
    expected_total_events: int | None
    final_state_digest: str | None = None

    def apply(self, run_id: str, runs: _RunEnders[Result]) -> Result:
        """Make the call on `runs`: its answer, or (async) the awaitable of it."""
        if self.action == "complete":
            return runs.complete(
                run_id,
                final_state_digest=self.final_state_digest,
                duration_ms=self.duration_ms,
                expected_total_events=self.expected_total_events,
            )
        if self.action == "cancel":
            return runs.cancel(run_id, self.reason, duration_ms=self.duration_ms)
        return runs.fail(
            run_id, self.reason, duration_ms=self.duration_ms, expected_total_events=self.expected_total_events
        )


def run_end(
    ending: Ending,
    *,
    duration_ms: int,
    acknowledged: int | None,
    not_stored: LedgerError | None = None,
    final_state_digest: str | None = None,
) -> RunEnd:
    """How to end a run that ended as `ending`, its writer having had `acknowledged` events stored.

    `acknowledged` is None when the writer could not tell (its close failed):
    the daemon is then not asked to check the count. A run meant to complete
    whose events could not all be stored (`not_stored`) is failed instead,
    naming that error.
    """
    if ending.action == "complete" and not_stored is None:
        return RunEnd("complete", "", duration_ms, acknowledged, final_state_digest)
    if ending.action == "cancel":
        return RunEnd("cancel", ending.reason, duration_ms, None)
    reason = ending.reason if ending.action == "fail" else f"events could not be stored: {not_stored}"
    return RunEnd("fail", reason, duration_ms, acknowledged)


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
        """The run's id, once the block is entered."""
        if self.run is None:
            raise RuntimeError("the run starts when its `with` block is entered")
        return self.run.run_id

    def _began(self, run: Run) -> WriterSettings:
        """Note the created run; the writer's settings, heartbeats paced by its timeout."""
        self.run = run
        self._started = time.monotonic()
        return settings_for_run(self._settings, run.inactivity_timeout_ms)

    def _end(self, exc: BaseException | None, acknowledged: int | None) -> RunEnd:
        """The call that ends the run after its block ended with `exc` (None: normally)."""
        return run_end(
            ending_for(exc),
            duration_ms=int((time.monotonic() - self._started) * 1000),
            acknowledged=acknowledged,
            final_state_digest=self.final_state_digest,
        )
