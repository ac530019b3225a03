"""EventStream servicer: appends (unary and streamed), reads, subscriptions."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
from aivcs.ledger.v1 import event_pb2, event_stream_pb2_grpc
from aivcs.ledger.v1 import event_stream_pb2 as pb
from google.rpc import code_pb2

from aivcs_ledgerd.ledger import Ledger, keys
from aivcs_ledgerd.ledger.errors import LedgerError, Unavailable
from aivcs_ledgerd.ledger.limits import MESSAGE_FRAMING, Limits
from aivcs_ledgerd.ledger.writer import AppendResult
from aivcs_ledgerd.model import Event
from aivcs_ledgerd.transport.convert import fill_event, new_events
from aivcs_ledgerd.transport.peers import OwnerMoved, OwnerUnreachable, Peers, Relayed, is_forwarded, not_owner, routed
from aivcs_ledgerd.transport.status import guarded, guarded_stream, rich_status
from aivcs_ledgerd.util.futures import retrieve_exception
from aivcs_ledgerd.util.text import cut

Context = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger(__name__)

# Read chunks stay well under gRPC's default 4 MiB receive limit: a chunk
# takes events while they fit in CHUNK_BYTES (and the daemon's own
# --max-message-bytes); an event larger than that goes alone, and the start
# check (ledger/limits.py) keeps every acceptable event within a default client's
# limit.
CHUNK_BYTES = 1 << 20
CHUNK_EVENTS = 500
FIELD_FRAMING = 6  # tag and length of one event inside the repeated field


Chunk = TypeVar("Chunk", pb.ReadEventsResponse, pb.SubscribeEventsResponse)


def chunks(events: Iterable[Event], response: Callable[[], Chunk], limit: int = CHUNK_BYTES) -> Iterable[Chunk]:
    """`events` in responses made by `response`, each event written straight into its response: a list of
    Events handed to a constructor is copied, about a sixth of what converting them cost."""
    chunk = response()
    count = size = 0
    for event in events:
        message = chunk.events.add()
        fill_event(message, event)
        framed = message.ByteSize() + FIELD_FRAMING
        if count and (size + framed > limit or count >= CHUNK_EVENTS):
            del chunk.events[-1]  # it opens the next chunk instead
            yield chunk
            chunk = response()
            fill_event(chunk.events.add(), event)
            count = size = 0
        count += 1
        size += framed
    if count:
        yield chunk


# Batches of one IngestEvents stream in flight at once. When this many await
# their commit, the stream stops reading, and gRPC flow control pushes back
# on the client instead of the daemon buffering without bound.
STREAM_IN_FLIGHT = 64
# A relayed subscription whose owner went away looks the owner up again after this pause.
RELAY_PAUSE_SECONDS = 0.1


class EventStreamServicer(event_stream_pb2_grpc.EventStreamServicer):
    def __init__(self, ledger: Ledger, limits: Limits, peers: Peers | None = None) -> None:
        self._events = ledger.events
        self._ownership = ledger.ownership
        self._limits = limits
        self._draining = ledger.draining
        self._ledger = ledger
        self._chunk_bytes = min(CHUNK_BYTES, limits.max_message_bytes - MESSAGE_FRAMING)
        self._peers = peers or Peers()

    @guarded
    async def AppendEvents(self, request: pb.AppendEventsRequest, context: Context) -> pb.AppendEventsResponse:
        return await self._append(request, context)

    async def _append(
        self, request: pb.AppendEventsRequest | pb.IngestEventsRequest, context: Context
    ) -> pb.AppendEventsResponse:
        """Append here, or on the replica that owns the run (several replicas on one database)."""

        async def local() -> pb.AppendEventsResponse:
            result = await self._events.append(
                request.run_id,
                new_events("events", request.events, self._limits.max_payload_bytes, request.ByteSize()),
                request.expected_last_seq if request.HasField("expected_last_seq") else None,
                request.idempotency_key if request.HasField("idempotency_key") else None,
            )
            return pb.AppendEventsResponse(
                first_seq=result.first_seq, last_seq=result.last_seq, replayed=result.replayed
            )

        if not self._ownership.enabled:
            return await local()

        async def remote(address: str) -> pb.AppendEventsResponse:
            forward = pb.IngestEventsRequest(run_id=request.run_id, events=request.events)
            if request.HasField("expected_last_seq"):
                forward.expected_last_seq = request.expected_last_seq
            if request.HasField("idempotency_key"):
                forward.idempotency_key = request.idempotency_key
            method = "IngestEvents" if isinstance(request, pb.IngestEventsRequest) else "AppendEvents"
            answer = await self._peers.append(address, method, forward, context)
            return pb.AppendEventsResponse(
                first_seq=answer.first_seq, last_seq=answer.last_seq, replayed=answer.replayed
            )

        key = keys.of_run(request.run_id)
        return await routed(self._ownership, key, f"run {request.run_id!r}", context, local, remote)

    @guarded_stream
    async def IngestEvents(
        self, request_iterator: AsyncIterator[pb.IngestEventsRequest], context: Context
    ) -> AsyncIterator[pb.IngestEventsResponse]:
        """Pipelines batches into the run writers; answers strictly in arrival order.

        When the daemon starts draining, the stream stops reading, answers
        every batch it already took, and ends with UNAVAILABLE.
        """
        if self._ownership.enabled and is_forwarded(context):
            async for piped in self._serve_pipe(request_iterator, context):
                yield piped
            return
        room = asyncio.Semaphore(STREAM_IN_FLIGHT)
        answers: asyncio.Queue[Awaitable[pb.IngestEventsResponse] | None] = asyncio.Queue()
        stopped = False  # the call is ending: the reader takes no more batches

        # A run's batches must reach its writer in stream order, so seq order is stream order.
        # Several replicas: a batch may be forwarded, and forwarded calls can overtake each
        # other, so a run's batches in this stream go one after another (the previous one
        # answered first); other runs still overlap. One replica: a batch is queued as it is
        # read, unless the run's queue is full; then it, and the run's later batches until it
        # is answered, go in tasks, which queue in the order they were made.
        previous: dict[str, asyncio.Task[pb.IngestEventsResponse]] = {}

        def forget(run_id: str, done: asyncio.Task[pb.IngestEventsResponse]) -> None:
            if previous.get(run_id) is done:
                del previous[run_id]

        async def read_requests() -> None:
            try:
                async for request in request_iterator:
                    if stopped or self._draining.is_set():
                        return  # taken after the drain began: not processed, not answered
                    # One replica, and this stream waits for no earlier batch of the run: the batch is
                    # queued now, without a task. Otherwise a task queues it once the earlier ones are.
                    answer = None if self._ownership.enabled or request.run_id in previous else self._queued(request)
                    if answer is None:
                        after = previous.get(request.run_id) if self._ownership.enabled else None
                        task = asyncio.create_task(self._ingest(request, context, after))
                        previous[request.run_id] = task
                        task.add_done_callback(functools.partial(forget, request.run_id))
                        answer = task
                    answers.put_nowait(answer)
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
                if isinstance(leftover, asyncio.Future):
                    leftover.cancel()
                elif inspect.iscoroutine(leftover):
                    leftover.close()

    async def _serve_pipe(
        self, request_iterator: AsyncIterator[pb.IngestEventsRequest], context: Context
    ) -> AsyncIterator[pb.IngestEventsResponse]:
        """Another replica's pipe of forwarded batches (transport/peers.py): each answered as soon as it
        is decided, by batch_id, so that batches of unrelated callers do not wait for each other.

        Batches are submitted in the order they arrive (a run's writer queues them in that order).
        When the daemon starts draining, the pipe stops reading, answers every batch it took, and
        ends with UNAVAILABLE: a batch without an answer was not read, so nothing of it was written.
        """
        room = asyncio.Semaphore(STREAM_IN_FLIGHT)
        answers: asyncio.Queue[pb.IngestEventsResponse | None] = asyncio.Queue()
        in_flight: set[asyncio.Task[pb.IngestEventsResponse]] = set()
        reading = True

        def end_when_answered() -> None:
            if not in_flight and (not reading or self._draining.is_set()):
                answers.put_nowait(None)

        def answered(task: asyncio.Task[pb.IngestEventsResponse]) -> None:
            in_flight.discard(task)
            room.release()
            if not task.cancelled():
                answers.put_nowait(task.result())  # _ingest turns every refusal into an answer
            end_when_answered()

        async def read_requests() -> None:
            nonlocal reading
            try:
                async for request in request_iterator:
                    await room.acquire()
                    if self._draining.is_set():
                        return  # taken after the drain began: not processed, not answered
                    task = asyncio.create_task(self._ingest(request, context))
                    in_flight.add(task)
                    task.add_done_callback(answered)
            finally:
                reading = False
                end_when_answered()

        counted = self._ledger.stream()
        counted.__enter__()
        reader = asyncio.create_task(read_requests())
        reader.add_done_callback(retrieve_exception)
        drained = asyncio.create_task(self._draining.wait())
        drained.add_done_callback(lambda _: end_when_answered())
        try:
            while (decided := await answers.get()) is not None:
                yield decided
            if self._draining.is_set():
                raise Unavailable("the daemon is shutting down; batches without an answer were not read")
            await reader  # re-raises a failure of the request stream
        finally:
            counted.__exit__(None, None, None)
            drained.cancel()
            reader.cancel()
            for task in list(in_flight):
                task.cancel()

    def _queued(self, request: pb.IngestEventsRequest) -> Awaitable[pb.IngestEventsResponse] | None:
        """One batch of a stream checked and queued in its run's writer now (its answer is made when
        awaited), or None, and nothing queued, when the run's queue is full."""
        try:
            queued = self._events.try_queue(
                request.run_id,
                new_events("events", request.events, self._limits.max_payload_bytes, request.ByteSize()),
                request.expected_last_seq if request.HasField("expected_last_seq") else None,
                request.idempotency_key if request.HasField("idempotency_key") else None,
            )
        except Exception as error:
            return _settled(_refusal(request.batch_id, request.run_id, error))
        return None if queued is None else _answer_of(request.batch_id, request.run_id, queued)

    async def _ingest(
        self,
        request: pb.IngestEventsRequest,
        context: Context,
        after: asyncio.Task[pb.IngestEventsResponse] | None = None,
    ) -> pb.IngestEventsResponse:
        """One batch of a stream; a refusal becomes the batch's `error`, never the stream's."""
        if after is not None:
            await asyncio.wait({after})
        try:
            result = await self._append(request, context)
        except Exception as error:
            return _refusal(request.batch_id, request.run_id, error)
        return _response(request.batch_id, result)

    @guarded_stream
    async def ReadEvents(self, request: pb.ReadEventsRequest, context: Context) -> AsyncIterator[pb.ReadEventsResponse]:
        windows = self._events.read(
            request.run_id, request.from_seq, request.to_seq, list(request.kinds) or None, request.limit
        )
        async for window in windows:
            for chunk in chunks(window, pb.ReadEventsResponse, self._chunk_bytes):
                yield chunk

    @guarded_stream
    async def SubscribeEvents(
        self, request: pb.SubscribeEventsRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeEventsResponse]:
        with self._ledger.stream():
            if not self._ownership.enabled:
                async for window in self._events.follow(request.run_id, request.from_seq):
                    for chunk in chunks(window, pb.SubscribeEventsResponse, self._chunk_bytes):
                        yield chunk
                return
            async for message in self._follow_owner(request, context):
                yield message

    async def _follow_owner(
        self, request: pb.SubscribeEventsRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeEventsResponse]:
        """Several replicas: live events come from the replica writing the run, so follow that one.

        When this replica owns the run (or nobody does), it serves the
        subscription from its own feed, and leaves it when another replica
        takes the run over; otherwise it relays the owner's subscription,
        from the next seq it has not sent, and looks the owner up again when
        that stream breaks. A forwarded subscription is served only here and
        ends with `not_owner` when the run moved.
        """
        key = keys.of_run(request.run_id)
        forwarded = is_forwarded(context)
        next_seq = max(request.from_seq, 1)
        moved = False

        async def elsewhere() -> bool:
            nonlocal moved
            moved = await self._ownership.locate(key) is not None
            return moved

        while True:
            address = None
            if not forwarded:
                # Taken when nobody holds it, so that writes arriving anywhere come to the
                # feed this subscription listens to, instead of a replica it would poll.
                address = await self._ownership.locate(key) or await self._ownership.claim(key)
            if address is None:
                moved = False
                async for window in self._events.follow(request.run_id, next_seq, elsewhere):
                    next_seq = window[-1].seq + 1
                    for chunk in chunks(window, pb.SubscribeEventsResponse, self._chunk_bytes):
                        yield chunk
                if not moved:
                    return  # the run is terminal and every event was sent
                if forwarded:
                    raise not_owner(f"run {request.run_id!r}")
                continue
            relay = pb.SubscribeEventsRequest(run_id=request.run_id, from_seq=next_seq)
            try:
                async for message in self._peers.subscribe(address, relay, context):
                    if message.events:
                        next_seq = message.events[-1].seq + 1
                    yield message
                return  # the owner ended the stream: the run is terminal
            except (OwnerMoved, OwnerUnreachable, Relayed) as broken:
                if isinstance(broken, Relayed) and broken.relayed_code != grpc.StatusCode.UNAVAILABLE:
                    raise
                self._ownership.forget_remote(key)
                await asyncio.sleep(RELAY_PAUSE_SECONDS)


def _response(batch_id: int, result: pb.AppendEventsResponse | AppendResult) -> pb.IngestEventsResponse:
    return pb.IngestEventsResponse(
        batch_id=batch_id, first_seq=result.first_seq, last_seq=result.last_seq, replayed=result.replayed
    )


def _refusal(batch_id: int, run_id: str, error: Exception) -> pb.IngestEventsResponse:
    """A batch's refusal as its answer's `error`: the stream goes on."""
    status = rich_status(error)
    if not isinstance(error, LedgerError):
        log.exception("unexpected error in IngestEvents", extra={"run_id": cut(run_id)})
    refusal = event_pb2.IngestError(
        code=code_pb2.Code.ValueType(status.code), message=status.message, details=status.details
    )
    return pb.IngestEventsResponse(batch_id=batch_id, error=refusal)


async def _answer_of(batch_id: int, run_id: str, queued: asyncio.Future[AppendResult]) -> pb.IngestEventsResponse:
    """A queued batch's answer. It keeps neither the request nor, once raised, the refusal: the
    future holds the refusal, whose traceback would hold this frame, and so the future, in a cycle
    only the cyclic collector frees."""
    try:
        result = await queued
    except Exception as error:
        return _refusal(batch_id, run_id, error)
    finally:
        del queued
    return _response(batch_id, result)


def _settled(response: pb.IngestEventsResponse) -> asyncio.Future[pb.IngestEventsResponse]:
    answer: asyncio.Future[pb.IngestEventsResponse] = asyncio.get_running_loop().create_future()
    answer.set_result(response)
    return answer
