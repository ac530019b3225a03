"""What the daemon's server interceptors share: naming a call, wrapping its handler.

A grpc.aio interceptor gets the method's handler and may return another.
`wrap` returns one of the same kind (unary or streaming on either side, same
(de)serialisers) whose behaviour runs a `CallHooks` object around the
original: before it starts, on every message in and out, and once at the
end with the status code the caller gets. Metrics, call logs and
per-connection limits are each one `Hooks` source, so none of them repeats
the four-way dance of gRPC handler kinds, and `HooksInterceptor` runs all of
them in a single wrap: one extra coroutine (and, on streams, one extra
generator step per message) however many there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import grpc

from aivcs_ledgerd.ledger.errors import InvalidArgument
from aivcs_ledgerd.util.answers import answer

if TYPE_CHECKING:  # the stubs' generics are not subscriptable at run time
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler

_FACTORIES: dict[tuple[bool, bool], Callable[..., Handler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}
_TYPES = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC as metrics and logs name it (the labels of go-grpc-prometheus)."""

    path: str  # "/aivcs.ledger.v1.EventStream/AppendEvents"
    service: str  # "aivcs.ledger.v1.EventStream"
    name: str  # "AppendEvents"
    type: str  # unary | client_stream | server_stream | bidi_stream

    @classmethod
    def of(cls, path: str, handler: Handler) -> Method:
        service, _, name = path.lstrip("/").rpartition("/")
        kind = getattr(handler, "method_type", None)  # a Refusal keeps its method's own kind
        if not isinstance(kind, str):
            kind = _TYPES[handler.request_streaming, handler.response_streaming]
        return cls(path, service, name, kind)

    @property
    def streaming(self) -> bool:
        return self.type != "unary"


class CallHooks:
    """Callbacks around one call. Override what you need; each default does nothing.

    `start`, and `arrived` or `received` of a unary request, may refuse the
    call (raise `Refused`); any of those may wait (back-pressure). `sent`
    and `finished` must not block.
    `finished` runs exactly once, however the call ends.
    """

    def __init__(self, method: Method, context: Context) -> None:
        self.method = method
        self.context = context

    async def start(self) -> None:
        return None

    async def arrived(self, size: int) -> None:
        """A request message of `size` bytes came in (before `received` sees it parsed)."""
        return None

    async def received(self, message: Any) -> None:
        return None

    def sent(self, message: Any) -> None:
        return None

    def finished(self, code: grpc.StatusCode) -> None:
        return None


class Refused(Exception):
    """Raised by a CallHooks method: the call is answered `code` and `message`, its method never runs.

    The wrapper sets the status and returns (util/answers.py says why not `context.abort`).
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


HooksFactory = Callable[[Method, Context], CallHooks]


class Hooks:
    """A source of CallHooks: says for which methods, and makes one per call."""

    def factory(self, method: Method) -> HooksFactory | None:
        """The factory for `method`'s calls, or None to leave them alone."""
        raise NotImplementedError


class _AllHooks(CallHooks):
    """Several CallHooks as one: in order on the way in, in reverse at the end."""

    def __init__(self, method: Method, context: Context, parts: list[CallHooks]) -> None:
        super().__init__(method, context)
        self._parts = parts

    async def start(self) -> None:
        for part in self._parts:
            await part.start()

    async def arrived(self, size: int) -> None:
        for part in self._parts:
            await part.arrived(size)

    async def received(self, message: Any) -> None:
        for part in self._parts:
            await part.received(message)

    def sent(self, message: Any) -> None:
        for part in self._parts:
            part.sent(message)

    def finished(self, code: grpc.StatusCode) -> None:
        for part in reversed(self._parts):
            part.finished(code)


class HooksInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Runs the CallHooks of every source that applies to a method, outermost first.

    It also makes every method's handler `tolerant`, so a request that does
    not parse is INVALID_ARGUMENT, never UNKNOWN.
    """

    def __init__(self, sources: list[Hooks]) -> None:
        self._sources = sources
        # gRPC asks for every call; a method's handler (and so its wrapping) is the same each time.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        path = handler_call_details.method
        cached = self._wrapped.get(path)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(path, handler)
        if not isinstance(handler, Refusal):  # a refusal is made for its one call
            self._wrapped[path] = (handler, wrapped)
        return wrapped

    def _wrap(self, path: str, handler: Handler) -> Handler:
        method = Method.of(path, handler)
        tolerating = tolerant(handler)
        factories = [f for f in (source.factory(method) for source in self._sources) if f is not None]
        if len(factories) <= 1:
            return wrap(tolerating, method, factories[0] if factories else CallHooks)

        def all_hooks(method: Method, context: Context) -> CallHooks:
            return _AllHooks(method, context, [make(method, context) for make in factories])

        return wrap(tolerating, method, all_hooks)


def behavior_of(handler: Handler) -> Callable[..., Any]:
    """The function that implements `handler`, whatever its kind."""
    behavior = (
        handler.stream_stream
        if handler.request_streaming and handler.response_streaming
        else handler.stream_unary
        if handler.request_streaming
        else handler.unary_stream
        if handler.response_streaming
        else handler.unary_unary
    )
    if behavior is None:
        raise ValueError("handler has no behaviour for its kind")
    return behavior


def with_behavior(handler: Handler, behavior: Callable[..., Any]) -> Handler:
    """A handler of the same kind and (de)serialisers as `handler` that runs `behavior`."""
    factory = _FACTORIES[handler.request_streaming, handler.response_streaming]
    return factory(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class Undecodable:
    """Stands for a request message that did not parse (see `tolerant`)."""

    def __init__(self, problem: str, size: int = 0) -> None:
        self.problem = problem
        self.size = size


class Received:
    """A parsed request message and its size on the wire (see `tolerant`)."""

    __slots__ = ("message", "size")

    def __init__(self, message: Any, size: int) -> None:
        self.message = message
        self.size = size


def tolerant(handler: Handler) -> Handler:
    """`handler` with a deserializer that hands over bytes it cannot parse as Undecodable.

    gRPC answers a deserializer's exception with UNKNOWN; this lets `wrap`
    answer INVALID_ARGUMENT instead, naming what was wrong. Messages that
    parse come as `Received`, with their size, for `CallHooks.arrived`.
    """
    deserialize = handler.request_deserializer
    if deserialize is None:
        return handler

    def parse(data: bytes) -> Any:
        try:
            return Received(deserialize(data), len(data))
        except Exception as error:
            return Undecodable(f"not a valid request message ({type(error).__name__}: {error})", len(data))

    factory = _FACTORIES[handler.request_streaming, handler.response_streaming]
    return factory(behavior_of(handler), request_deserializer=parse, response_serializer=handler.response_serializer)


class Refusal(NamedTuple):
    """A handler that answers a status without reading the request: see `refuse`.

    It has the attributes gRPC reads from an `RpcMethodHandler`, plus the
    kind of the method it stands for, so metrics keep the method's labels.
    """

    request_streaming: bool
    response_streaming: bool
    request_deserializer: Callable[[bytes], Any] | None
    response_serializer: Callable[[Any], bytes] | None
    unary_unary: Callable[..., Any] | None
    unary_stream: Callable[..., Any] | None
    stream_unary: Callable[..., Any] | None
    stream_stream: Callable[..., Any] | None
    method_type: str


def refuse(handler: Handler, code: grpc.StatusCode, message: str) -> Handler:
    """A handler that answers `code` without running the method, and without receiving the request.

    gRPC receives (and parses) a unary request before the handler runs, so
    a refusal by a handler of the method's own kind would still take in
    every byte the caller sends. This one is request-streaming whatever the
    method is: gRPC asks for no message, the status goes out at once, and
    HTTP/2 flow control stops the caller's body after its first window.
    """

    async def refused(requests: Any, context: Context) -> None:
        answer(context, code, message)

    streaming = handler.response_streaming
    refusal = Refusal(
        request_streaming=True,
        response_streaming=streaming,
        request_deserializer=None,
        response_serializer=handler.response_serializer,
        unary_unary=None,
        unary_stream=None,
        stream_unary=None if streaming else refused,
        stream_stream=refused if streaming else None,
        method_type=_TYPES[handler.request_streaming, handler.response_streaming],
    )
    return cast(Handler, refusal)


def final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The status the caller gets, given how the behaviour ended."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    # gRPC closes the response generator of a call the client cancelled with
    # GeneratorExit, and cancels a unary call's task: both are cancellations.
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = None
        with contextlib.suppress(Exception):
            remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def wrap(handler: Handler, method: Method, hooks: Callable[[Method, Context], CallHooks]) -> Handler:
    """`handler`, with a fresh `hooks(method, context)` run around every call."""
    inner = behavior_of(handler)
    request_streaming = handler.request_streaming

    async def observed(requests: AsyncIterator[Any], call: CallHooks) -> AsyncIterator[Any]:
        async for message in requests:
            if isinstance(message, Undecodable):
                raise InvalidArgument("request", message.problem)  # the servicer answers INVALID_ARGUMENT
            if isinstance(message, Received):
                await call.arrived(message.size)
                message = message.message
            await call.received(message)
            yield message

    async def argument(request: Any, call: CallHooks) -> Any:
        if request_streaming:
            return observed(request, call)
        if isinstance(request, Undecodable):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"request: {request.problem}")
        if isinstance(request, Received):
            await call.arrived(request.size)
            request = request.message
        await call.received(request)
        return request

    if handler.response_streaming and inspect.isasyncgenfunction(inner):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            call = hooks(method, context)
            code = grpc.StatusCode.UNKNOWN
            try:
                await call.start()
                async with contextlib.aclosing(inner(await argument(request, call), context)) as responses:
                    async for message in responses:
                        call.sent(message)
                        yield message
                code = final_code(context, None)
            except Refused as refusal:
                answer(context, refusal.code, refusal.message)
                code = refusal.code
            except BaseException as raised:  # not kept past this block: its frames would hold the call
                code = final_code(context, raised)
                raise
            finally:
                call.finished(code)

        return with_behavior(handler, stream)

    # A unary response, or a streaming one written with `await context.write(...)`
    # (as grpc_health's Watch does): the messages written are not seen here.
    unary_response = not handler.response_streaming

    async def single(request: Any, context: Context) -> Any:
        call = hooks(method, context)
        code = grpc.StatusCode.UNKNOWN
        try:
            await call.start()
            response = await inner(await argument(request, call), context)
            if unary_response and response is not None:
                call.sent(response)
            code = final_code(context, None)
            return response
        except Refused as refusal:
            answer(context, refusal.code, refusal.message)
            code = refusal.code
            return None
        except BaseException as raised:  # not kept past this block: its frames would hold the call
            code = final_code(context, raised)
            raise
        finally:
            call.finished(code)

    return with_behavior(handler, single)


def peer_of(context: Context) -> str:
    """The caller's connection, e.g. "ipv4:10.0.0.7:51234": one per HTTP/2 connection."""
    try:
        return str(context.peer())
    except Exception:  # a context without a transport (tests) has no peer
        return "unknown"
