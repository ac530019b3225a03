"""The one event shape every measurement sends, so figures compare like with like.

An event is kind "tool_call" with payload {"i": n, "node": "tool_call",
"text": 40 characters}: about 90 bytes on the wire. The engine ceiling
stores rows of the same shape the daemon stores.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aivcs.ledger.v1 import event_pb2, event_stream_pb2, run_ledger_pb2

KIND = "tool_call"
TEXT = "the quick brown fox jumps over a lazy dog"[:40]
AGENT = "bench-agent"
SPEC_DIGEST = hashlib.sha256(b"aivcs bench spec").hexdigest()


def payload(n: int) -> dict[str, Any]:
    return {"i": n, "node": KIND, "text": TEXT}


def event_input(n: int) -> event_pb2.EventInput:
    event = event_pb2.EventInput(kind=KIND)
    event.payload.update(payload(n))
    return event


def append_request(run_id: str, n: int) -> event_stream_pb2.AppendEventsRequest:
    return event_stream_pb2.AppendEventsRequest(run_id=run_id, events=[event_input(n)])


def ingest_request(batch_id: int, run_id: str, first: int, count: int) -> event_stream_pb2.IngestEventsRequest:
    return event_stream_pb2.IngestEventsRequest(
        batch_id=batch_id, run_id=run_id, events=[event_input(n) for n in range(first, first + count)]
    )


def create_request(run_id: str) -> run_ledger_pb2.CreateRunRequest:
    return run_ledger_pb2.CreateRunRequest(run_id=run_id, spec_digest=SPEC_DIGEST, agent_name=AGENT)
