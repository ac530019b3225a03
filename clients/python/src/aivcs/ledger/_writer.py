"""A buffered event writer over IngestEvents, for threaded code.

`emit` only queues: a background thread seals batches (by size, or after
`linger` seconds), keeps one IngestEvents stream open, and settles the
acknowledgements. When the daemon is slower than the producer, the buffer
fills and `emit` blocks, or drops the event with `when_full="drop"`. When
the connection is lost, the thread reconnects and sends every
unacknowledged batch again with its idempotency key (see `_batching`), for
up to `retry_timeout` seconds without progress (a dropping writer: from
`close()` on), logging as `_reports` says. `flush()` and `close()` return
only when every queued event is acknowledged, or raise the error that made
that impossible.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import grpc

from aivcs.ledger._batching import RETRYABLE, BatchRefused
from aivcs.ledger._errors import DeadlineExceeded, LedgerError, Unavailable, WriterClosed, error_from_rpc
from aivcs.ledger._models import JSON, event_input
from aivcs.ledger._settings import WriterSettings
from aivcs.ledger._writer_base import Wait, WriterBase
from aivcs.ledger.v1 import event_stream_pb2, event_stream_pb2_grpc, run_ledger_pb2, run_ledger_pb2_grpc

__all__ = ["EventWriter"]


class EventWriter(WriterBase):
    """Appends the events of one run through a background IngestEvents stream.

    The stream is opened when there is something to send and let go after
    `idle_stream_timeout` seconds with nothing to send, so an idle writer
    holds nothing open on the daemon (and does not delay its shutdown).
    While it is open and quiet, a second thread sends heartbeats if the run
    has an inactivity timeout (see `_heartbeat`; needs `run_ledger`).

    With `when_full="drop"`, `emit` never waits: an event that finds
    `max_buffered_events` unacknowledged is dropped, counted in `dropped`,
    and logged (rate-limited) on the `aivcs.ledger.writer` logger, where
    retries are reported too.

    Use it as a context manager, or call `close()`::

        with client.events.writer(run_id) as writer:
            for step in steps:
                writer.emit("step", {"n": step})
        print(writer.last_seq)
    """

    def __init__(
        self,
        stub: event_stream_pb2_grpc.EventStreamStub,
        run_id: str,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        settings: WriterSettings | None = None,
        writer_id: str | None = None,
        run_ledger: run_ledger_pb2_grpc.RunLedgerStub | None = None,
        call_timeout: float | None = 30.0,
    ) -> None:
        super().__init__(run_id, settings, writer_id, heartbeats=run_ledger is not None)
        self._stub = stub
        self._metadata = tuple(metadata)
        self._run_ledger = run_ledger
        self._call_timeout = call_timeout
        self._beat_call: Any = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._pump, name=f"aivcs-ledger-writer-{self.writer_id[:8]}", daemon=True
        )
        self._thread.start()
        self._beat_thread: threading.Thread | None = None
        if self._heartbeats.active:
            self._beat_thread = threading.Thread(
                target=self._beat, daemon=True, name=f"aivcs-ledger-heartbeat-{self.writer_id[:8]}"
            )
            self._beat_thread.start()

    def _guard(self) -> threading.Condition:
        return self._cond

    def emit(
        self, kind: str, payload: Mapping[str, JSON] | None = None, *, timestamp: datetime | int | None = None
    ) -> bool:
        """Queue one event; True once queued, False if dropped.

        While `max_buffered_events` are unacknowledged it blocks, or with
        `when_full="drop"` drops the event and returns False at once.
        """
        event = event_input(kind, payload, timestamp)
        with self._cond:
            self._check_usable()
            while self._book.buffered >= self._settings.max_buffered_events:
                if self._settings.when_full == "drop":
                    self._drops.drop(self._book.buffered)
                    return False
                self._cond.wait()
                self._check_usable()
            self._book.add(event)
            self._cond.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> None:
        """Send what is buffered now and wait until every emitted event is acknowledged."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._book.seal()
            self._cond.notify_all()
            while not self._book.idle:
                if self._error is not None:
                    raise self._error
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise DeadlineExceeded(f"{self._book.buffered} events still unacknowledged after {timeout}s")
                self._cond.wait(left)
            if self._error is not None:
                raise self._error

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the background stream. Raises if some event could not be stored."""
        with self._cond:
            self._closing = True
        try:
            if self._error is None:
                self.flush(timeout)
        finally:
            with self._cond:
                if self._error is None and not self._book.idle:  # flush timed out or was interrupted
                    self._error = WriterClosed(f"closed with {self._book.buffered} events unacknowledged")
            self._shutdown()
        if self._error is not None and not isinstance(self._error, WriterClosed):
            raise self._error

    def abort(self) -> None:
        """Stop now, dropping whatever is not acknowledged yet."""
        with self._cond:
            if self._error is None:
                self._error = WriterClosed("the writer was aborted")
        self._shutdown()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        try:  # the events emitted before the failure are still facts worth keeping
            self.close()
        except LedgerError as error:
            exc.add_note(f"the event writer could not flush either: {error}")

    def _shutdown(self) -> None:
        with self._cond:
            already = self._closed
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
            call, beat = self._call, self._beat_call
        if call is not None and self._error is not None:
            call.cancel()
        if beat is not None:
            beat.cancel()
        for thread in (self._thread, self._beat_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join()
        if not already:
            self._drops.closed()

    def _fail(self, error: LedgerError) -> None:
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()

    # -- the background thread ----------------------------------------------------

    def _pump(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and self._book.idle and self._error is None:
                    self._cond.wait()
                if self._error is not None or (self._stopping and self._book.idle):
                    return
                self._generation += 1
                generation = self._generation
                self._book.rewind()
            failure: LedgerError | None = None
            retryable = False
            call: Any = None
            try:
                call = self._stub.IngestEvents(self._requests(generation), metadata=self._metadata)
                with self._cond:
                    self._call = call
                for response in call:
                    with self._cond:
                        self._book.ack(response)
                        self._heartbeats.activity()
                        self._cond.notify_all()
                    self._backoff.progress()
                    self._retries.recovered()
            except grpc.RpcError as error:
                failure = error_from_rpc(error)
                retryable = failure.code in RETRYABLE
            except BatchRefused as refused:
                failure, retryable = refused.error, refused.retryable
            except BaseException as error:  # never leave a producer blocked on a dead thread
                self._fail(LedgerError(f"the event writer stopped unexpectedly: {error!r}"))
                raise
            finally:
                with self._cond:
                    self._generation += 1  # the request iterator of this stream ends
                    self._call = None
                    self._cond.notify_all()
                if call is not None:
                    call.cancel()
            if failure is None:
                with self._cond:
                    if self._error is not None or self._book.idle or self._released == generation:
                        continue  # we ended the stream: go round to stop, to wait for work, or to send
                failure, retryable = Unavailable("the daemon ended the stream early"), True
            delay = self._after_failure(failure, retryable)
            if delay is None:
                return
            with self._cond:
                if self._error is None:
                    self._cond.wait_for(lambda: self._error is not None, delay)

    def _requests(self, generation: int) -> Iterator[event_stream_pb2.IngestEventsRequest]:
        """The request side of one stream: sealed batches in order, within the in-flight window."""
        while True:
            with self._cond:
                while isinstance(step := self._next_step(generation), Wait):
                    self._cond.wait(step.seconds)
            if step is None:
                return
            yield step

    def _beat(self) -> None:
        """The heartbeat thread: one Heartbeat whenever nothing was acknowledged for an interval."""
        assert self._run_ledger is not None
        plan = self._heartbeats
        request = run_ledger_pb2.HeartbeatRequest(run_id=self.run_id)
        while True:
            with self._cond:
                while not self._stopping and plan.active and (left := plan.delay()) > 0:
                    self._cond.wait(left)
                if self._stopping or not plan.active:
                    return
                try:
                    future = self._run_ledger.Heartbeat.future(
                        request, metadata=self._metadata, timeout=self._call_timeout
                    )
                except ValueError:  # the client's channel was closed under an open writer
                    return
                self._beat_call = future
            try:
                reply = future.result()
            except grpc.FutureCancelledError:
                return
            except grpc.RpcError as error:
                with self._cond:
                    if not self._stopping:
                        plan.failed(error_from_rpc(error))
                continue
            finally:
                with self._cond:
                    self._beat_call = None
            with self._cond:
                plan.answered(reply.run)
