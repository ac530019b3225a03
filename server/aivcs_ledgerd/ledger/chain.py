"""The tamper-evident hash chain over a run's events.

digest(n) = SHA-256 of the RFC 8785 canonical JSON of
    {"kind", "payload", "prev": digest(n-1) or "", "seq", "timestamp"}
with the timestamp as RFC 3339 UTC with exactly nine fractional digits.
event.proto documents the same form for clients in other languages.

The canonical object is assembled from the canonical JSON of its parts:
its keys are already in RFC 8785 order and `prev`, `seq` and `timestamp`
need no escaping, so the bytes are exactly those of the whole object.
"""

from __future__ import annotations

import functools
import hashlib
import time

from aivcs_ledgerd.ledger.canonical import canonical_json
from aivcs_ledgerd.model import Event

NANOS = 1_000_000_000


@functools.lru_cache(maxsize=256)  # a run's events mostly share their second with a neighbour
def _second(seconds: int) -> bytes:
    """E.g. b"2026-01-02T03:04:05" (strftime pads no year below 1000; event times lie in 1677 to 2262)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode("ascii")


def event_digest(prev: str, seq: int, kind_json: bytes, payload_json: bytes, timestamp_ns: int) -> str:
    """The digest of one event, from the canonical JSON of its kind and payload; the timestamp as
    RFC 3339 UTC with nine fractional digits, e.g. 2026-01-02T03:04:05.000000006Z."""
    seconds, nanos = divmod(timestamp_ns, NANOS)
    canonical = b'{"kind":%s,"payload":%s,"prev":"%s","seq":%d,"timestamp":"%s.%09dZ"}' % (
        kind_json,
        payload_json,
        prev.encode("ascii"),
        seq,
        _second(seconds),
        nanos,
    )
    return hashlib.sha256(canonical).hexdigest()


def stored_event_digest(prev: str, event: Event) -> str:
    """Recompute a stored event's digest from its content."""
    return event_digest(
        prev,
        event.seq,
        canonical_json("kind", event.kind),
        canonical_json("payload", event.payload),
        event.timestamp_ns,
    )
