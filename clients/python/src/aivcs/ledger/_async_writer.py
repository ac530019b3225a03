"""The buffered event writer for asyncio code; the same rules as `EventWriter`.

`await emit(...)` only queues (and waits while the buffer is full); one task
keeps an IngestEvents stream open, sends sealed batches, settles the
acknowledgements, and reconnects after a lost connection, sending every
unacknowledged batch again with its idempotency key. Another task sends
heartbeats while the writer is open and quiet, `when_full="drop"` makes
`emit` drop rather than wait, and retries and drops are logged as
`EventWriter` logs them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType

import grpc

from aivcs.ledger._batching import RETRYABLE, BatchRefused
from aivcs.ledger._errors import LedgerError, Unavailable, WriterClosed, error_from_rpc
from aivcs.ledger._models import JSON, event_input
from aivcs.ledger._settings import WriterSettings
from aivcs.ledger._writer_base import Wait, WriterBase
from aivcs.ledger.v1 import event_stream_pb2, event_stream_pb2_grpc, run_ledger_pb2, run_ledger_pb2_grpc

__all__ = ["AsyncEventWriter"]


class AsyncEventWriter(WriterBase):
    """Appends the events of one run through a background IngestEvents stream::

    async with client.events.writer(run_id) as writer:
        await writer.emit("step", {"n": 1})
    """

    def __init__(
        self,
        stub: event_stream_pb2_grpc.EventStreamAsyncStub,
        run_id: str,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        settings: WriterSettings | None = None,
        writer_id: str | None = None,
        run_ledger: run_ledger_pb2_grpc.RunLedgerAsyncStub | None = None,
        call_timeout: float | None = 30.0,
    ) -> None:
        super().__init__(run_id, settings, writer_id, heartbeats=run_ledger is not None)
        self._stub = stub
        self._metadata = tuple(metadata)
        self._run_ledger = run_ledger
        self._call_timeout = call_timeout
        self._beat_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        try:  # made inside the event loop (the usual case): heartbeats start now, emit or not
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            self._start_heartbeats()

    async def emit(
        self, kind: str, payload: Mapping[str, JSON] | None = None, *, timestamp: datetime | int | None = None
    ) -> bool:
        """Queue one event; True once queued, False if dropped.

        While `max_buffered_events` are unacknowledged it waits, or with
        `when_full="drop"` drops the event and returns False at once.
        """
        event = event_input(kind, payload, timestamp)
        self._check_usable()
        while self._book.buffered >= self._settings.max_buffered_events:
            self._start()
            if self._settings.when_full == "drop":
                self._drops.drop(self._book.buffered)
                return False
            await self._wait()
            self._check_usable()
        self._book.add(event)
        self._start()
        self._notify()
        return True

    async def flush(self) -> None:
        """Send what is buffered now and wait until every emitted event is acknowledged.

        To bound the wait, wrap it: `async with asyncio.timeout(10): await writer.flush()`.
        """
        self._book.seal()
        self._start()
        self._notify()
        while not self._book.idle:
            if self._error is not None:
                raise self._error
            await self._wait()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Flush, then stop the background stream. Raises if some event could not be stored."""
        self._closing = True
        try:
            if self._error is None:
                await self.flush()
        finally:
            if self._error is None and not self._book.idle:  # flush was cancelled
                self._error = WriterClosed(f"closed with {self._book.buffered} events unacknowledged")
            await self._shutdown()
        if self._error is not None and not isinstance(self._error, WriterClosed):
            raise self._error

    async def abort(self) -> None:
        """Stop now, dropping whatever is not acknowledged yet."""
        if self._error is None:
            self._error = WriterClosed("the writer was aborted")
        await self._shutdown()

    async def __aenter__(self) -> AsyncEventWriter:
        self._start_heartbeats()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.close()
            return
        try:
            await self.close()
        except LedgerError as error:
            exc.add_note(f"the event writer could not flush either: {error}")

    # -- plumbing -----------------------------------------------------------------

    def _notify(self) -> None:
        """Wake every waiter: they re-check the state they wait on."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, within: float | None = None) -> None:
        changed = self._changed
        if within is None:
            await changed.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), within)

    def _start(self) -> None:
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._pump(), name=f"aivcs-writer-{self.writer_id[:8]}")
        self._start_heartbeats()

    def _start_heartbeats(self) -> None:
        if self._beat_task is None and not self._stopping and self._heartbeats.active:
            self._beat_task = asyncio.get_running_loop().create_task(
                self._beat(), name=f"aivcs-heartbeat-{self.writer_id[:8]}"
            )

    def _fail(self, error: LedgerError) -> None:
        if self._error is None:
            self._error = error
        self._notify()

    async def _shutdown(self) -> None:
        already = self._closed
        self._closed = True
        self._stopping = True
        self._notify()
        if self._call is not None and self._error is not None:
            self._call.cancel()
        beat = self._beat_task
        if beat is not None and beat is not asyncio.current_task():
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        task = self._task
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not already:
            self._drops.closed()

    async def _pump(self) -> None:
        while True:
            while not self._stopping and self._book.idle and self._error is None:
                await self._wait()
            if self._error is not None or (self._stopping and self._book.idle):
                return
            self._generation += 1
            generation = self._generation
            self._book.rewind()
            failure: LedgerError | None = None
            retryable = False
            call = self._stub.IngestEvents(self._requests(generation), metadata=self._metadata)
            self._call = call
            try:
                async for response in call:
                    self._book.ack(response)
                    self._heartbeats.activity()
                    self._notify()
                    self._backoff.progress()
                    self._retries.recovered()
            except grpc.RpcError as error:
                failure = error_from_rpc(error)
                retryable = failure.code in RETRYABLE
            except BatchRefused as refused:
                failure, retryable = refused.error, refused.retryable
            except asyncio.CancelledError:
                if self._error is not None:
                    return  # aborted: we cancelled the call ourselves
                self._fail(WriterClosed("the event writer's task was cancelled"))
                raise
            except Exception as error:
                self._fail(LedgerError(f"the event writer stopped unexpectedly: {error!r}"))
                raise
            finally:
                self._generation += 1  # the request iterator of this stream ends
                self._call = None
                self._notify()
                call.cancel()
            if failure is None:
                if self._error is not None or self._book.idle or self._released == generation:
                    continue  # we ended the stream: go round to stop, to wait for work, or to send
                failure, retryable = Unavailable("the daemon ended the stream early"), True
            delay = self._after_failure(failure, retryable)
            if delay is None:
                return
            await asyncio.sleep(delay)

    async def _beat(self) -> None:
        """The heartbeat task: one Heartbeat whenever nothing was acknowledged for an interval."""
        assert self._run_ledger is not None
        plan = self._heartbeats
        request = run_ledger_pb2.HeartbeatRequest(run_id=self.run_id)
        while not self._stopping and plan.active:
            left = plan.delay()
            if left > 0:
                await asyncio.sleep(left)  # an append meanwhile moves the time on: look again
                continue
            try:
                reply = await self._run_ledger.Heartbeat(request, metadata=self._metadata, timeout=self._call_timeout)
            except grpc.RpcError as error:
                if not self._stopping:
                    plan.failed(error_from_rpc(error))
                continue
            except grpc.aio.UsageError:  # the client's channel was closed under an open writer
                return
            plan.answered(reply.run)

    async def _requests(self, generation: int) -> AsyncIterator[event_stream_pb2.IngestEventsRequest]:
        while True:
            step = self._next_step(generation)
            if step is None:
                return
            if isinstance(step, Wait):
                await self._wait(step.seconds)
                continue
            yield step
