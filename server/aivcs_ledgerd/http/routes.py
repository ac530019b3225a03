"""The JSON API: each route transcodes to one ledger RPC, the google.api.http way.

    GET  /v1/runs                                      RunLedger.ListRuns (filters, paging: query)
    GET  /v1/runs/{run_id}                             RunLedger.GetRun
    GET  /v1/runs/{run_id}:verify                      RunLedger.VerifyRun
    GET  /v1/runs/{run_id}/events                      EventStream.ReadEvents (one page, see below)
    GET  /v1/runs/{run_id}/events:subscribe            EventStream.SubscribeEvents (Server-Sent Events)
    GET  /v1/agents/{agent_name}/releases              ReleaseRegistry.GetHistory
    GET  /v1/agents/{agent_name}/releases:current      ReleaseRegistry.GetCurrent
    POST /v1/agents/{agent_name}/releases:promote      ReleaseRegistry.Promote (body: the request, "*")
    POST /v1/agents/{agent_name}/releases:rollback     ReleaseRegistry.Rollback (body: the request, "*")

Unary routes build the RPC's request message from the path, query and body
(jsonmap.py) and call the very servicer method gRPC calls, so validation,
refusals and guarantees are the gRPC ones, word for word. ReadEvents streams
on gRPC; here it answers one ReadEventsResponse of at most `limit` events
(default and most: MAX_EVENTS_PAGE), and a client pages on with
`from_seq` = the last seq + 1 until a page comes back short.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import grpc
from aiohttp import web
from aivcs.ledger.v1 import event_stream_pb2, release_registry_pb2, run_ledger_pb2
from google.protobuf.message import Message

from aivcs_ledgerd.http.errors import Refusal, details_in, invalid
from aivcs_ledgerd.http.jsonmap import from_query, parse, to_json
from aivcs_ledgerd.ledger import Ledger, validation
from aivcs_ledgerd.transport.convert import event_to_proto
from aivcs_ledgerd.transport.peers import Peers
from aivcs_ledgerd.transport.release_registry import ReleaseRegistryServicer
from aivcs_ledgerd.transport.run_ledger import RunLedgerServicer

MAX_EVENTS_PAGE = 1000
MAX_BODY_BYTES = 1 << 20

Unary = Callable[[Any, Any], Awaitable[Message]]


class HttpCall:
    """What a servicer method sees of an HTTP call; the status it sets becomes the route's refusal.

    The caller's Authorization header stands as its metadata, so that with
    several replicas a write forwarded to the owner carries the caller's token.
    """

    def __init__(self, authorization: str | None) -> None:
        self._metadata = () if authorization is None else (("authorization", authorization),)
        self._code = grpc.StatusCode.OK
        self._details = ""
        self._trailing_metadata: Sequence[tuple[str, str | bytes]] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._trailing_metadata = trailing_metadata

    def refusal(self) -> Refusal | None:
        """The status a servicer method answered, unless it is OK."""
        if self._code is grpc.StatusCode.OK:
            return None
        return Refusal(self._code, self._details, details_in(self._trailing_metadata))


class Api:
    def __init__(self, ledger: Ledger, peers: Peers | None = None) -> None:
        self._ledger = ledger
        self._runs = RunLedgerServicer(ledger, peers)
        self._releases = ReleaseRegistryServicer(ledger, peers)

    def add_routes(self, app: web.Application) -> None:
        # Custom verbs first: a {run_id} segment would otherwise take "id:verify" whole.
        app.router.add_get("/v1/runs", self.list_runs)
        app.router.add_get("/v1/runs/{run_id}:verify", self.verify_run)
        app.router.add_get("/v1/runs/{run_id}/events", self.read_events)
        app.router.add_get("/v1/runs/{run_id}", self.get_run)
        app.router.add_get("/v1/agents/{agent_name}/releases:current", self.current_release)
        app.router.add_post("/v1/agents/{agent_name}/releases:promote", self.promote)
        app.router.add_post("/v1/agents/{agent_name}/releases:rollback", self.rollback)
        app.router.add_get("/v1/agents/{agent_name}/releases", self.release_history)

    async def _unary(self, method: Unary, message: Message, request: web.Request) -> web.Response:
        call = HttpCall(request.headers.get("Authorization"))
        answer = await method(message, cast(Any, call))
        refusal = call.refusal()
        if refusal is not None:
            raise refusal
        return web.json_response(to_json(answer))

    @staticmethod
    def _query(request: web.Request) -> list[tuple[str, str]]:
        return list(request.query.items())

    async def list_runs(self, request: web.Request) -> web.Response:
        message = from_query(run_ledger_pb2.ListRunsRequest, self._query(request))
        return await self._unary(self._runs.ListRuns, message, request)

    async def get_run(self, request: web.Request) -> web.Response:
        message = from_query(run_ledger_pb2.GetRunRequest, self._query(request), request.match_info)
        return await self._unary(self._runs.GetRun, message, request)

    async def verify_run(self, request: web.Request) -> web.Response:
        message = from_query(run_ledger_pb2.VerifyRunRequest, self._query(request), request.match_info)
        return await self._unary(self._runs.VerifyRun, message, request)

    async def read_events(self, request: web.Request) -> web.Response:
        message = from_query(event_stream_pb2.ReadEventsRequest, self._query(request), request.match_info)
        if message.limit > MAX_EVENTS_PAGE:
            raise invalid("limit", f"must be at most {MAX_EVENTS_PAGE} over HTTP, got {message.limit}")
        kinds = [validation.identifier(f"kinds[{index}]", kind) for index, kind in enumerate(message.kinds)]
        answer = event_stream_pb2.ReadEventsResponse()
        async for window in self._ledger.events.read(
            message.run_id, message.from_seq, message.to_seq, kinds or None, message.limit or MAX_EVENTS_PAGE
        ):
            answer.events.extend(event_to_proto(event) for event in window)
        return web.json_response(to_json(answer))

    async def current_release(self, request: web.Request) -> web.Response:
        message = from_query(release_registry_pb2.GetCurrentRequest, self._query(request), request.match_info)
        return await self._unary(self._releases.GetCurrent, message, request)

    async def release_history(self, request: web.Request) -> web.Response:
        message = from_query(release_registry_pb2.GetHistoryRequest, self._query(request), request.match_info)
        return await self._unary(self._releases.GetHistory, message, request)

    async def promote(self, request: web.Request) -> web.Response:
        message = await _body(request, release_registry_pb2.PromoteRequest)
        return await self._unary(self._releases.Promote, message, request)

    async def rollback(self, request: web.Request) -> web.Response:
        message = await _body(request, release_registry_pb2.RollbackRequest)
        return await self._unary(self._releases.Rollback, message, request)


M = TypeVar("M", bound=Message)


async def _body(request: web.Request, message_type: type[M]) -> M:
    """The request message from a JSON body (body: "*"), with the path's fields; they must agree."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise invalid("body", f"must be at most {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise invalid("body", f"must be at most {MAX_BODY_BYTES} bytes")
    try:
        value = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as error:
        raise invalid("body", f"is not JSON: {error}") from None
    message = parse(message_type, value)
    for name, path_value in request.match_info.items():
        given = getattr(message, name)
        if given and given != path_value:
            raise invalid(name, f"the body says {given!r} but the path says {path_value!r}")
        setattr(message, name, path_value)
    return message
