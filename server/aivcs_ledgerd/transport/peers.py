"""Calls forwarded to the replica that owns a run (see ledger/ownership.py).

A replica that receives a write for a run another replica owns sends the
same request to the owner over gRPC, with the caller's `authorization`
metadata (so the owner checks the caller's token, not a replica's) and a
`aivcs-forwarded` marker: a forwarded call is never forwarded again, so a
stale view of ownership costs one refusal, not a loop. The owner's answer,
or its refusal with its status code and message, goes back to the caller.

Appends (AppendEvents, and each batch of an IngestEvents stream) are the
bulk of what is forwarded, so they do not pay a call each: they travel as
batches of long-lived IngestEvents streams ("pipes") to the owner, one set
per owner address and caller `authorization`, which the owner checks when
the pipe opens as it would for a call. The owner answers a pipe's batches
as each is decided, by batch_id (transport/event_stream.py), so one slow
run does not hold up the others. The caller's deadline bounds its wait for
its own batch; a pipe that breaks fails its unanswered batches as the
owner not answering, and its refusal of the pipe itself (a token, a
limit) is passed on with its status code.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import event_stream_pb2_grpc, release_registry_pb2_grpc, run_ledger_pb2_grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from aivcs_ledgerd.ledger.errors import LedgerError, Unavailable
from aivcs_ledgerd.ledger.ownership import NotOwner, SoleOwner
from aivcs_ledgerd.util.codes import CODES_BY_NUMBER

log = logging.getLogger(__name__)

FORWARDED = "aivcs-forwarded"
# The first words of the refusal a replica gives to a forwarded call for a key it does not own.
NOT_OWNER = "not the owner of"
DEFAULT_TIMEOUT_SECONDS = 30.0
# Batches one pipe carries unanswered at once: the owner reads at most this many of a stream
# ahead of its answers (STREAM_IN_FLIGHT), so a fuller pipe opens another beside it, up to
# MAX_PIPES per owner and caller token (each is a call on the owner's connection, which limits
# them); beyond that the least busy pipe takes the batch and it waits in the stream.
PIPE_IN_FLIGHT = 64
MAX_PIPES = 4

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


class Relayed(LedgerError):
    """The owner's refusal, passed on with its own status code."""

    def __init__(self, code: grpc.StatusCode, message: str, details: list[any_pb2.Any] | None = None) -> None:
        super().__init__(message)
        self.relayed_code = code
        self.relayed_details = details or []  # its google.rpc error details, passed on unchanged


class OwnerMoved(Exception):
    """The replica called does not own the key (any more): look the owner up again."""


class OwnerUnreachable(Unavailable):
    """The owner did not answer; after its lease expires another replica takes over."""


def is_forwarded(context: Context) -> bool:
    return any(key == FORWARDED for key, _ in context.invocation_metadata() or ())


def not_owner(what: str) -> Unavailable:
    """What a replica answers to a forwarded call for a key it does not own."""
    return Unavailable(f"{NOT_OWNER} {what} (ownership moved); retry")


Metadata = tuple[tuple[str, str | bytes], ...]


class _Pipe:
    """One IngestEvents stream to an owner, carrying the forwarded batches of any number of callers."""

    def __init__(self, peers: Peers, address: str, metadata: Metadata) -> None:
        self._peers = peers
        self.address = address
        self.key = (address, metadata)
        self._ids = itertools.count(1)
        self._outgoing: asyncio.Queue[es.IngestEventsRequest] = asyncio.Queue()
        self.waiting: dict[int, asyncio.Future[es.IngestEventsResponse]] = {}
        stub = event_stream_pb2_grpc.EventStreamStub(peers._channel(address))
        self._call = stub.IngestEvents(self._requests(), metadata=metadata)
        self._reader = asyncio.create_task(self._read(), name=f"pipe:{address}")

    async def _requests(self) -> AsyncIterator[es.IngestEventsRequest]:
        while True:
            yield await self._outgoing.get()

    def send(self, request: es.IngestEventsRequest) -> asyncio.Future[es.IngestEventsResponse]:
        request.batch_id = next(self._ids)
        answer: asyncio.Future[es.IngestEventsResponse] = asyncio.get_running_loop().create_future()
        self.waiting[request.batch_id] = answer
        self._outgoing.put_nowait(request)
        return answer

    async def _read(self) -> None:
        failure: Exception = OwnerUnreachable(f"the replica owning this run ({self.address}) ended the stream; retry")
        try:
            async for answer in self._call:
                waiter = self.waiting.pop(answer.batch_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(answer)
        except grpc.aio.AioRpcError as error:
            failure = self._peers._failure("IngestEvents", self.address, error, count=False)
        except asyncio.CancelledError:
            failure = OwnerUnreachable("this replica is shutting down; retry")
        finally:
            self._peers._pipe_closed(self)
            for waiter in self.waiting.values():
                if not waiter.done():
                    waiter.set_exception(failure)
            self.waiting.clear()

    def close(self) -> None:
        self._call.cancel()


class Peers:
    """gRPC channels to the other replicas, one per address, opened on first use."""

    def __init__(
        self,
        credentials: grpc.ChannelCredentials | None = None,
        observe: Callable[[str, str], None] | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._credentials = credentials
        self._timeout_seconds = timeout
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._observe = observe
        self._pipes: dict[tuple[str, Metadata], list[_Pipe]] = {}

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            options = [
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
                # A replica restarted at the same address is reached again within seconds,
                # not after gRPC's default reconnect backoff of up to two minutes.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ]
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=options)
            else:
                channel = grpc.aio.secure_channel(address, self._credentials, options=options)
            self._channels[address] = channel
        return channel

    @staticmethod
    def _metadata(context: Context) -> list[tuple[str, str | bytes]]:
        passed = [(k, v) for k, v in context.invocation_metadata() or () if k.lower() == "authorization"]
        return [*passed, (FORWARDED, "1")]

    def _timeout(self, context: Context) -> float:
        """The caller's deadline, but no longer than `timeout`: an owner that does not answer
        within it (stopped, partitioned) is reported unreachable, and by the time the caller
        retries its lease has expired and another replica takes the run over."""
        remaining = context.time_remaining()
        return self._timeout_seconds if remaining is None else max(min(remaining, self._timeout_seconds), 0.001)

    def _count(self, method: str, outcome: str) -> None:
        if self._observe is not None:
            self._observe(method, outcome)

    def _failure(self, method: str, address: str, error: grpc.aio.AioRpcError, count: bool = True) -> Exception:
        details = error.details() or ""
        failure: Exception
        # INTERNAL or UNKNOWN from a peer is a call that broke (e.g. a stream the owner closed while
        # this replica was writing to it), not an answer: never passed on to the caller as it is.
        unanswered = error.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNKNOWN,
        )
        if error.code() == grpc.StatusCode.UNAVAILABLE and details.startswith(NOT_OWNER):
            outcome, failure = "moved", OwnerMoved(details)
        elif unanswered and not details.startswith(("database", "the daemon")):
            log.info("owner at %s did not answer %s: %s", address, method, details)
            outcome = "unreachable"
            failure = OwnerUnreachable(f"the replica owning this run ({address}) did not answer; retry")
        else:
            outcome, failure = "refused", Relayed(error.code(), details, _error_details(error))
        if count:
            self._count(method, outcome)
        return failure

    async def append(
        self, address: str, method: str, request: es.IngestEventsRequest, context: Context
    ) -> es.IngestEventsResponse:
        """Forward one batch through a pipe to the owner at `address`; raise Relayed, OwnerMoved or OwnerUnreachable.

        A batch the owner did not answer in time is not sent again (Unavailable, which `routed`
        does not retry): it may still be written, and only the caller can retry it safely, with its
        idempotency key. `request.batch_id` is the pipe's to set. Outcomes are counted under `method`.
        """
        pipe = self._pipe(address, tuple(self._metadata(context)))
        try:
            # On a timeout or a cancelled caller the wait ends, not the batch: the owner may still
            # write it, as with a call whose answer was lost (retry with an idempotency key).
            async with asyncio.timeout(self._timeout(context)):
                answer = await pipe.send(request)
        except TimeoutError:
            self._count(method, "unreachable")
            log.info("owner at %s did not answer a forwarded %s in time", address, method)
            raise Unavailable(
                f"the replica owning this run ({address}) did not answer in time; the batch may still be"
                " written: retry with its idempotency key"
            ) from None
        except OwnerMoved:
            self._count(method, "moved")
            raise
        except OwnerUnreachable:
            self._count(method, "unreachable")
            raise
        except Relayed:
            self._count(method, "refused")
            raise
        if answer.HasField("error"):
            code = CODES_BY_NUMBER.get(answer.error.code, grpc.StatusCode.UNAVAILABLE)
            if code == grpc.StatusCode.UNAVAILABLE and answer.error.message.startswith(NOT_OWNER):
                self._count(method, "moved")
                raise OwnerMoved(answer.error.message)
            self._count(method, "refused")
            raise Relayed(code, answer.error.message, list(answer.error.details))
        self._count(method, "ok")
        return answer

    def _pipe(self, address: str, metadata: Metadata) -> _Pipe:
        """A pipe to `address` for callers with `metadata` that has room, opened when none has."""
        pipes = self._pipes.setdefault((address, metadata), [])
        for pipe in pipes:
            if len(pipe.waiting) < PIPE_IN_FLIGHT:
                return pipe
        if len(pipes) >= MAX_PIPES:
            return min(pipes, key=lambda pipe: len(pipe.waiting))
        pipe = _Pipe(self, address, metadata)
        pipes.append(pipe)
        return pipe

    def _pipe_closed(self, pipe: _Pipe) -> None:
        pipes = self._pipes.get(pipe.key, [])
        if pipe in pipes:
            pipes.remove(pipe)
            if not pipes:
                del self._pipes[pipe.key]

    async def unary(self, address: str, service: str, method: str, request: Any, context: Context) -> Any:
        """Call `service.method` on the replica at `address`; raise Relayed, OwnerMoved or OwnerUnreachable."""
        channel = self._channel(address)
        stubs: dict[str, Any] = {
            "RunLedger": run_ledger_pb2_grpc.RunLedgerStub,
            "ReleaseRegistry": release_registry_pb2_grpc.ReleaseRegistryStub,
            "TraceService": trace_service_pb2_grpc.TraceServiceStub,
        }
        call = getattr(stubs[service](channel), method)
        try:
            answer = await call(request, metadata=self._metadata(context), timeout=self._timeout(context))
        except grpc.aio.AioRpcError as error:
            raise self._failure(method, address, error) from None
        self._count(method, "ok")
        return answer

    async def subscribe(
        self, address: str, request: es.SubscribeEventsRequest, context: Context
    ) -> AsyncIterator[es.SubscribeEventsResponse]:
        """The owner's SubscribeEvents stream, message by message."""
        stub = event_stream_pb2_grpc.EventStreamStub(self._channel(address))
        call = stub.SubscribeEvents(request, metadata=self._metadata(context), timeout=context.time_remaining())
        self._count("SubscribeEvents", "ok")
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as error:
            raise self._failure("SubscribeEvents", address, error) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        for pipes in list(self._pipes.values()):
            for pipe in list(pipes):
                pipe.close()
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()


ATTEMPTS = 4
UNREACHABLE_PAUSE_SECONDS = 0.2


async def routed(
    ownership: SoleOwner,
    key: str,
    what: str,
    context: Context,
    local: Callable[[], Awaitable[T]],
    remote: Callable[[str], Awaitable[T]],
) -> T:
    """Run a write on this replica when it owns `key` (or can take it), else on the owner.

    A forwarded call is only ever served here: if this replica does not own
    `key`, it is refused with `not_owner`, and the forwarding replica looks
    the owner up again.
    """
    forwarded = is_forwarded(context)
    for attempt in range(ATTEMPTS):
        address = None if forwarded else ownership.remote_owner(key)
        if address is None:
            try:
                return await local()
            except NotOwner as moved:
                if forwarded:
                    raise not_owner(what) from None
                if moved.address is None:
                    continue  # lost it just now: ask the database who holds it
                address = moved.address
        try:
            return await remote(address)
        except OwnerMoved:
            ownership.forget_remote(key)
        except OwnerUnreachable:
            ownership.forget_remote(key)
            if attempt == ATTEMPTS - 1:
                raise
            await asyncio.sleep(UNREACHABLE_PAUSE_SECONDS)
    raise Unavailable(f"ownership of {what} kept moving between replicas; retry")


def _error_details(error: grpc.aio.AioRpcError) -> list[any_pb2.Any]:
    """The google.rpc error details of the owner's refusal (none when it sent none or they do not decode)."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, DecodeError):
        return []
    return list(status.details) if status is not None else []
