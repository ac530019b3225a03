"""EventStream servicer: appends (unary and streamed), reads, subscriptions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from aivcs.ledger.v1 import event_pb2, event_stream_pb2_grpc
from aivcs.ledger.v1 import event_stream_pb2 as pb

from aivcs_ledgerd.calllog import cut
from aivcs_ledgerd.config import Limits
from aivcs_ledgerd.futures import retrieve_exception
from aivcs_ledgerd.ledger import Ledger
from aivcs_ledgerd.ledger.errors import LedgerError, Unavailable
from aivcs_ledgerd.model import Event
from aivcs_ledgerd.readback import MESSAGE_FRAMING
from aivcs_ledgerd.store import StoreError
from aivcs_ledgerd.transport.convert import event_to_proto, new_events
from aivcs_ledgerd.transport.status import guarded, guarded_stream, status_of

Context = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger(__name__)

# Read chunks stay well under gRPC's default 4 MiB receive limit: a chunk
# takes events while they fit in CHUNK_BYTES (and the daemon's own
# --max-message-bytes); an event larger than that goes alone, and the start
# check (readback.py) keeps every acceptable event within a default client's
# limit.
CHUNK_BYTES = 1 << 20
CHUNK_EVENTS = 500
FIELD_FRAMING = 6  # tag and length of one event inside the repeated field


def chunks(events: Iterable[Event], limit: int = CHUNK_BYTES) -> Iterable[list[event_pb2.Event]]:
    chunk: list[event_pb2.Event] = []
    size = 0
    for event in events:
        message = event_to_proto(event)
        framed = message.ByteSize() + FIELD_FRAMING
        if chunk and (size + framed > limit or len(chunk) >= CHUNK_EVENTS):
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += framed
    if chunk:
        yield chunk


# Batches of one IngestEvents stream in flight at once. When this many await
# their commit, the stream stops reading, and gRPC flow control pushes back
# on the client instead of the daemon buffering without bound.
STREAM_IN_FLIGHT = 64


class EventStreamServicer(event_stream_pb2_grpc.EventStreamServicer):
    def __init__(self, ledger: Ledger, limits: Limits) -> None:
        self._events = ledger.events
        self._limits = limits
        self._draining = ledger.draining
        self._ledger = ledger
        self._chunk_bytes = min(CHUNK_BYTES, limits.max_message_bytes - MESSAGE_FRAMING)

    @guarded
    async def AppendEvents(self, request: pb.AppendEventsRequest, context: Context) -> pb.AppendEventsResponse:
        result = await self._events.append(
            request.run_id,
            new_events("events", request.events, self._limits.max_payload_bytes),
            request.expected_last_seq if request.HasField("expected_last_seq") else None,
            request.idempotency_key if request.HasField("idempotency_key") else None,
        )
        return pb.AppendEventsResponse(first_seq=result.first_seq, last_seq=result.last_seq, replayed=result.replayed)

    @guarded_stream
    async def IngestEvents(
        self, request_iterator: AsyncIterator[pb.IngestEventsRequest], context: Context
    ) -> AsyncIterator[pb.IngestEventsResponse]:
        """Pipelines batches into the run writers; answers strictly in arrival order.

        When the daemon starts draining, the stream stops reading, answers
        every batch it already took, and ends with UNAVAILABLE.
        """
        room = asyncio.Semaphore(STREAM_IN_FLIGHT)
        answers: asyncio.Queue[asyncio.Task[pb.IngestEventsResponse] | None] = asyncio.Queue()
        stopped = False  # the call is ending: the reader takes no more batches

        async def read_requests() -> None:
            try:
                async for request in request_iterator:
                    if stopped or self._draining.is_set():
                        return  # taken after the drain began: not processed, not answered
                    answers.put_nowait(asyncio.create_task(self._ingest(request)))
                    await room.acquire()
            finally:
                answers.put_nowait(None)

        # On a drain the reader is not cancelled: cancelling gRPC's pending receive of a stream the
        # client still writes to made the core end the call with CANCELLED or INTERNAL instead of
        # the status below. The pending receive ends by itself once the call has its status.
        counted = self._ledger.stream()
        counted.__enter__()
        reader = asyncio.create_task(read_requests())
        reader.add_done_callback(retrieve_exception)
        drained = asyncio.create_task(self._draining.wait())
        drained.add_done_callback(lambda _: answers.put_nowait(None))
        try:
            while (answer := await answers.get()) is not None:
                yield await answer
                room.release()
            if self._draining.is_set():
                raise Unavailable("the daemon is shutting down; batches after the last answer were not read")
            await reader  # re-raises a failure of the request stream
        finally:
            counted.__exit__(None, None, None)
            stopped = True
            drained.cancel()
            for _ in range(STREAM_IN_FLIGHT):
                room.release()  # a reader waiting for room goes back to its (last) read
            while not answers.empty():
                leftover = answers.get_nowait()
                if leftover is not None:
                    leftover.cancel()

    async def _ingest(self, request: pb.IngestEventsRequest) -> pb.IngestEventsResponse:
        """One batch of a stream; a refusal becomes the batch's `error`, never the stream's."""
        try:
            result = await self._events.append(
                request.run_id,
                new_events("events", request.events, self._limits.max_payload_bytes),
                request.expected_last_seq if request.HasField("expected_last_seq") else None,
                request.idempotency_key if request.HasField("idempotency_key") else None,
            )
        except Exception as error:
            code, message = status_of(error)
            if not isinstance(error, LedgerError | StoreError):
                log.exception("unexpected error in IngestEvents", extra={"run_id": cut(request.run_id)})
            return pb.IngestEventsResponse(
                batch_id=request.batch_id, error=event_pb2.IngestError(code=code.value[0], message=message)
            )
        return pb.IngestEventsResponse(
            batch_id=request.batch_id, first_seq=result.first_seq, last_seq=result.last_seq, replayed=result.replayed
        )

    @guarded_stream
    async def ReadEvents(self, request: pb.ReadEventsRequest, context: Context) -> AsyncIterator[pb.ReadEventsResponse]:
        windows = self._events.read(
            request.run_id, request.from_seq, request.to_seq, list(request.kinds) or None, request.limit
        )
        async for window in windows:
            for chunk in chunks(window, self._chunk_bytes):
                yield pb.ReadEventsResponse(events=chunk)

    @guarded_stream
    async def SubscribeEvents(
        self, request: pb.SubscribeEventsRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeEventsResponse]:
        with self._ledger.stream():
            async for window in self._events.follow(request.run_id, request.from_seq):
                for chunk in chunks(window, self._chunk_bytes):
                    yield pb.SubscribeEventsResponse(events=chunk)
