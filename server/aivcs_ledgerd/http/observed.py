"""Every HTTP request timed for the metrics port, and notable API calls logged as their gRPC twins are.

The route is the request's template (`/v1/runs/{run_id}`), never the raw
path, so a caller cannot grow the metrics' label sets or write into the log
what it sends; ids are cut as the gRPC call log cuts them. Logged, on the
`aivcs_ledgerd.calls` logger with the same rules (middleware/calllog.py): a
release promoted or rolled back; any call refused as unauthenticated or not
permitted (WARNING, with the peer); a write refused for the caller's
reasons (INFO); any refusal that points at the daemon (WARNING). Reads the
caller got wrong, and ordinary successes, are only counted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from aivcs_ledgerd.http.auth import API_PREFIX, Handler
from aivcs_ledgerd.http.errors import Refusal, refusal_of
from aivcs_ledgerd.middleware.calllog import DONE, log, log_refusal, notable, subject_of
from aivcs_ledgerd.middleware.metrics import Metrics
from aivcs_ledgerd.util.text import cut

CLIENT_CLOSED = 499  # the status a request the client went away from is counted under (nginx's convention)
RELEASE_METHODS = {":promote": "Promote", ":rollback": "Rollback"}  # the routes' gRPC methods


def observed(metrics: Metrics | None) -> Any:
    """The middleware; it sits inside the one that turns refusals into JSON, so it sees them raised."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        began = time.perf_counter()
        status, refusal = 500, None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        except Exception as error:
            refusal = refusal_of(error)
            status = refusal.http_status
            raise
        finally:
            route = route_of(request)
            if metrics is not None:
                metrics.observe_http(request.method, route, status, time.perf_counter() - began)
            if request.path.startswith(API_PREFIX):
                _log(request, route, status, refusal)

    return middleware


def route_of(request: web.Request) -> str:
    """The template of the route that served `request`, or "unmatched"."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


def _log(request: web.Request, route: str, status: int, refusal: Refusal | None) -> None:
    ids = {name: cut(value) for name, value in request.match_info.items() if name in ("run_id", "agent_name")}
    extra: dict[str, Any] = {"method": f"HTTP {request.method} {route}", **ids}
    if refusal is None:
        done = next((DONE[name] for suffix, name in RELEASE_METHODS.items() if route.endswith(suffix)), None)
        if done is not None and status == 200:
            log.info("%s over HTTP: %s", done, subject_of(ids), extra=extra | {"code": "OK"})
        return
    if not notable(refusal.code, write=request.method != "GET"):
        return
    extra["code"] = refusal.code.name
    peer = request.remote or "unknown"
    log_refusal(extra["method"], refusal.code, refusal.message, subject_of(ids), peer, extra)
