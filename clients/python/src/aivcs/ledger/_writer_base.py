"""What `EventWriter` (threads) and `AsyncEventWriter` (asyncio) share: their state, what the
producer sees of it, and the decisions of the sender, with no I/O in them.

Each writer keeps its own way of waiting (a `threading.Condition`, an
`asyncio.Event`) and of running the stream (a thread, a task); the base
decides what to send next on a stream (`_next_step`) and what to do after a
stream failed (`_after_failure`). The rules that make a resend safe are in
`_batching`.
"""

from __future__ import annotations

import abc
import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

from aivcs.ledger._batching import MAX_BACKOFF, Backoff, BatchBook
from aivcs.ledger._errors import LedgerError, Unavailable, WriterClosed
from aivcs.ledger._heartbeat import HeartbeatPlan
from aivcs.ledger._reports import DropReport, RetryReport
from aivcs.ledger._settings import WriterSettings
from aivcs.ledger.v1 import event_stream_pb2

__all__ = ["Wait", "WriterBase"]


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to send yet: wait for a change, at most `seconds` (None: until one)."""

    seconds: float | None


class WriterBase(abc.ABC):
    """The state of a buffered writer of one run; the subclasses add the waiting and the I/O."""

    def __init__(self, run_id: str, settings: WriterSettings | None, writer_id: str | None, heartbeats: bool) -> None:
        self._settings = settings = settings or WriterSettings()
        self.writer_id = writer_id or uuid.uuid4().hex
        self._book = BatchBook(run_id, self.writer_id, settings.max_batch_events, settings.max_batch_bytes)
        self._retries = RetryReport(run_id, settings.log_interval)
        self._drops = DropReport(run_id, settings.log_interval)
        self._heartbeats = HeartbeatPlan(
            run_id, settings.heartbeat_interval if heartbeats else None, settings.log_interval
        )
        self._backoff = Backoff(settings.retry_timeout)
        self._close_clock_started = False
        self._closed = False
        self._closing = False  # close() was called: from now on even a dropping writer may give up
        self._stopping = False
        self._error: LedgerError | None = None
        self._generation = 0
        self._released = 0  # the generation of the stream last let go for idleness
        self._call: Any = None

    def _guard(self) -> contextlib.AbstractContextManager[Any]:
        """What reading the state needs: the threaded writer's lock; nothing for asyncio."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def _fail(self, error: LedgerError) -> None:
        """Stop with `error` (the first one stays) and wake every waiter."""

    # -- what the producer sees ---------------------------------------------------

    @property
    def run_id(self) -> str:
        """The run this writer appends to."""
        return self._book.run_id

    @property
    def acknowledged(self) -> int:
        """Events the daemon has confirmed as stored."""
        with self._guard():
            return self._book.acknowledged

    @property
    def last_seq(self) -> int:
        """The highest seq acknowledged to this writer (0 before the first)."""
        with self._guard():
            return self._book.last_seq

    @property
    def pending(self) -> int:
        """Events emitted but not yet acknowledged."""
        with self._guard():
            return self._book.buffered

    @property
    def dropped(self) -> int:
        """Events dropped because the buffer was full (only with `when_full="drop"`)."""
        with self._guard():
            return self._drops.dropped

    @property
    def heartbeats(self) -> int:
        """Heartbeats the daemon has answered."""
        with self._guard():
            return self._heartbeats.sent

    @property
    def error(self) -> LedgerError | None:
        """Why the writer stopped, if it did."""
        return self._error

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise WriterClosed("emit on a closed writer")

    # -- the sender's decisions (the subclass holds its lock, if any) -----------------

    def _next_step(self, generation: int) -> event_stream_pb2.IngestEventsRequest | Wait | None:
        """The next batch to send on stream `generation`, a `Wait`, or None: end the stream's requests."""
        settings = self._settings
        while True:
            if self._generation != generation or self._error is not None:
                return None
            request = self._book.next_to_send(settings.max_in_flight)
            if request is not None:
                return request
            if self._stopping and not self._book.has_unsent:
                return None
            left = self._book.time_to_act(settings.linger, settings.idle_stream_timeout)
            if left is None or left > 0:
                return Wait(left)
            if self._book.idle:
                self._released = generation
                return None  # idle long enough: let the stream go, so it pins nothing on the daemon
            self._book.seal()  # lingered long enough: send it as it is

    def _after_failure(self, failure: LedgerError, retryable: bool) -> float | None:
        """Seconds to wait before the next stream after `failure`; None: the writer has failed for good."""
        if not retryable:
            self._fail(failure)
            return None
        dropping = self._settings.when_full == "drop"
        if dropping and self._closing and not self._close_clock_started:
            self._backoff.restart_clock()  # a dropping writer gets retry_timeout from close() on
            self._close_clock_started = True
        delay = self._backoff.next_delay()
        if delay is None and dropping and not self._closing:
            delay = MAX_BACKOFF  # while open, a dropping writer never gives up
        if delay is None:
            gave_up = Unavailable(
                f"gave up after {self._settings.retry_timeout:g}s without progress, "
                f"{self.pending} events unacknowledged: {failure.message}"
            )
            self._retries.gave_up(gave_up)
            self._fail(gave_up)
            return None
        self._retries.failed(failure, self.pending, delay)
        return delay
