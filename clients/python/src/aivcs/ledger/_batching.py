"""The bookkeeping of a buffered event writer, with no I/O in it.

`EventWriter` (threads) and `AsyncEventWriter` (asyncio) drive the same
`BatchBook`, so the rules that make retries safe live in one place:

- Events are stamped when emitted and sealed into batches of at most
  `max_batch_events` events or `max_batch_bytes` bytes. A sealed batch never
  changes: its request message is built once.
- Batch n of writer w carries the idempotency key "w:n" and batch_id n. After
  a lost connection every unacknowledged batch is sent again, in order, as
  the very same message, so the daemon either writes it or answers with the
  seqs it gave it the first time: nothing is lost, nothing is doubled.
- `buffered` counts events not yet acknowledged (open or sealed); the
  writers block `emit` while it is at the bound, which is the backpressure.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import grpc

from aivcs.ledger._errors import Internal, LedgerError, error_from_code
from aivcs.ledger.v1 import event_pb2, event_stream_pb2

# Status codes after which a stream (or a refused batch) is worth sending
# again: the daemon restarted, drained, or lost its database for a moment.
# The daemon never answers UNKNOWN or INTERNAL itself, so those come from
# the transport (a reset connection) and are retried too.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
# A refused batch is retried only when the refusal says "try again".
RETRYABLE_BATCH = frozenset({grpc.StatusCode.UNAVAILABLE})

INITIAL_BACKOFF = 0.05
MAX_BACKOFF = 1.0


@dataclass(slots=True)
class Batch:
    batch_id: int
    size: int
    request: event_stream_pb2.IngestEventsRequest
    sent: bool = False


class BatchRefused(Exception):
    """The daemon answered a batch with an error."""

    def __init__(self, error: LedgerError) -> None:
        super().__init__(str(error))
        self.error = error

    @property
    def retryable(self) -> bool:
        return self.error.code in RETRYABLE_BATCH


class BatchBook:
    """Open events, sealed batches awaiting acknowledgement, and counters."""

    def __init__(self, run_id: str, writer_id: str, max_batch_events: int, max_batch_bytes: int) -> None:
        self.run_id = run_id
        self.writer_id = writer_id
        self._max_events = max_batch_events
        self._max_bytes = max_batch_bytes
        self._open: list[event_pb2.EventInput] = []
        self._open_bytes = 0
        self._open_since: float | None = None
        self._unacked: deque[Batch] = deque()
        self._idle_since = time.monotonic()
        self._in_flight = 0
        self._next_batch = 1
        self.buffered = 0
        self.acknowledged = 0
        self.last_seq = 0

    @property
    def idle(self) -> bool:
        """Every emitted event is acknowledged."""
        return not self._open and not self._unacked

    @property
    def has_unsent(self) -> bool:
        return bool(self._open) or any(not batch.sent for batch in self._unacked)

    def add(self, event: event_pb2.EventInput) -> None:
        size = event.ByteSize()
        if self._open and self._open_bytes + size > self._max_bytes:
            self.seal()
        if not self._open:
            self._open_since = time.monotonic()
        self._open.append(event)
        self._open_bytes += size
        self.buffered += 1
        if len(self._open) >= self._max_events:
            self.seal()

    def seal(self) -> None:
        """Close the open batch, if any; from now on it is sent as it is."""
        if not self._open:
            return
        batch_id = self._next_batch
        self._next_batch += 1
        request = event_stream_pb2.IngestEventsRequest(
            batch_id=batch_id,
            run_id=self.run_id,
            events=self._open,
            idempotency_key=f"{self.writer_id}:{batch_id}",
        )
        self._unacked.append(Batch(batch_id, len(self._open), request))
        self._open, self._open_bytes, self._open_since = [], 0, None

    def time_to_act(self, linger: float, idle_timeout: float) -> float | None:
        """Seconds until the sender must act: seal the open batch, or end an idle stream."""
        now = time.monotonic()
        if self._open_since is not None:
            return self._open_since + linger - now
        if self.idle:
            return self._idle_since + idle_timeout - now
        return None  # batches in flight: wait for their answers

    def next_to_send(self, max_in_flight: int) -> event_stream_pb2.IngestEventsRequest | None:
        """The oldest batch not yet sent on this stream, if the in-flight window has room."""
        if self._in_flight >= max_in_flight:
            return None
        for batch in self._unacked:
            if not batch.sent:
                batch.sent = True
                self._in_flight += 1
                return batch.request
        return None

    def ack(self, response: event_stream_pb2.IngestEventsResponse) -> None:
        """Settle the oldest batch in flight; raise BatchRefused if the daemon refused it."""
        if not self._unacked or not self._unacked[0].sent or response.batch_id != self._unacked[0].batch_id:
            expected = self._unacked[0].batch_id if self._unacked else None
            raise BatchRefused(Internal(f"IngestEvents answered batch {response.batch_id}, expected {expected}"))
        if response.HasField("error"):
            raise BatchRefused(error_from_code(response.error.code, response.error.message, response.error.details))
        batch = self._unacked.popleft()
        self._in_flight -= 1
        if self.idle:
            self._idle_since = time.monotonic()
        self.buffered -= batch.size
        self.acknowledged += batch.size
        self.last_seq = max(self.last_seq, response.last_seq)

    def rewind(self) -> None:
        """A new stream starts: every unacknowledged batch must be sent again."""
        for batch in self._unacked:
            batch.sent = False
        self._in_flight = 0
        self._idle_since = time.monotonic()


class Backoff:
    """Exponential pauses between reconnects, and the give-up clock."""

    def __init__(self, retry_timeout: float) -> None:
        self._timeout = retry_timeout
        self._delay = INITIAL_BACKOFF
        self._failing_since: float | None = None

    def progress(self) -> None:
        self._delay = INITIAL_BACKOFF
        self._failing_since = None

    def restart_clock(self) -> None:
        """Count the time to give up from now, e.g. when a writer that never gives up is being closed."""
        self._failing_since = None

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt, or None when it is time to give up."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since > self._timeout:
            return None
        delay = self._delay
        self._delay = min(self._delay * 2, MAX_BACKOFF)
        return delay
