"""A run's events as Server-Sent Events, for browsers: stored ones from a seq, then live ones.

    GET /v1/runs/{run_id}/events:subscribe?from_seq=N

Each committed batch is one `events` message whose data is a
SubscribeEventsResponse in proto3 JSON and whose id is the last seq it
holds, so a client that reconnects with `Last-Event-ID` (EventSource does
by itself) resumes after it, with nothing missed or repeated. When the run
is terminal and every event has been sent, an `end` message (data: the
final Run) closes the stream; a refusal is an `error` message holding the
JSON error body, then the stream ends. The feed is the one SubscribeEvents
serves (Events.follow): ordered, gap-free, bounded memory per client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from aiohttp import web
from aivcs.ledger.v1 import event_stream_pb2, run_ledger_pb2

from aivcs_ledgerd.http.errors import invalid, refusal_of, status_body
from aivcs_ledgerd.http.jsonmap import from_query, to_json
from aivcs_ledgerd.ledger import Ledger, validation
from aivcs_ledgerd.ledger.errors import LedgerError
from aivcs_ledgerd.transport.convert import event_to_proto, run_to_proto


def message(event: str, data: object, event_id: int | None = None) -> bytes:
    """One SSE message; JSON data has no raw newline, so it is one `data:` line."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


async def aclose(events: AsyncIterator[object]) -> None:
    """End the follower now, so its hub listener goes at once rather than when collected."""
    closer = getattr(events, "aclose", None)
    if closer is not None:
        await closer()


class LiveFeed:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/runs/{run_id}/events:subscribe", self.subscribe)

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        query = from_query(event_stream_pb2.SubscribeEventsRequest, list(request.query.items()), request.match_info)
        from_seq = query.from_seq
        resume = request.headers.get("Last-Event-ID")
        if resume is not None:
            if not resume.isdigit():
                raise invalid("Last-Event-ID", f"must be a seq, got {resume!r}")
            from_seq = max(from_seq, int(resume) + 1)
        await self._ledger.runs.get(validation.identifier("run_id", query.run_id))  # 404 as JSON, before the stream
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n")  # EventSource reconnects after a second, with Last-Event-ID
        events = self._ledger.events.follow(query.run_id, from_seq)
        try:
            async for window in events:
                batch = event_stream_pb2.SubscribeEventsResponse(events=[event_to_proto(e) for e in window])
                await response.write(message("events", to_json(batch), window[-1].seq))
            run = await self._ledger.runs.get(query.run_id)
            await response.write(message("end", to_json(run_ledger_pb2.GetRunResponse(run=run_to_proto(run)))))
        except LedgerError as error:
            await response.write(message("error", status_body(refusal_of(error))))
        except ConnectionResetError:
            pass  # the client left
        finally:
            await aclose(events)
        return response
