"""The tamper-evident hash chain over a run's events.

digest(n) = SHA-256 of the RFC 8785 canonical JSON of
    {"kind", "payload", "prev": digest(n-1) or "", "seq", "timestamp"}
with the timestamp as RFC 3339 UTC with exactly nine fractional digits.
event.proto documents the same form for clients in other languages.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import rfc8785

NANOS = 1_000_000_000


def rfc3339_nanos(timestamp_ns: int) -> str:
    """E.g. 2026-01-02T03:04:05.000000006Z, for any time from year 1 to 9999."""
    seconds, nanos = divmod(timestamp_ns, NANOS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def event_digest(prev: str, seq: int, kind: str, payload: dict[str, Any], timestamp_ns: int) -> str:
    canonical = rfc8785.dumps(
        {"kind": kind, "payload": payload, "prev": prev, "seq": seq, "timestamp": rfc3339_nanos(timestamp_ns)}
    )
    return hashlib.sha256(canonical).hexdigest()


def batch_fingerprint(events: list[tuple[str, dict[str, Any], int | None]]) -> str:
    """Identifies a batch's content, so a reused idempotency key can be told apart from a retry."""
    canonical = rfc8785.dumps([{"kind": k, "payload": p, "timestamp": t} for k, p, t in events])
    return hashlib.sha256(canonical).hexdigest()
