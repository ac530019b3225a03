"""A flood of one run through one IngestEvents stream, as fast as the client can send, with the daemon's RSS sampled.

The daemon reads at most a fixed number of batches of one stream ahead of
their commits; past that, gRPC flow control makes the client wait, so RSS
should rise by the engine's own caches and settle, whatever the number of
events. tests/test_ingest.py runs a scaled-down flood; `python -m
bench.flood_memory` the full one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import grpc
from aivcs.ledger.v1 import event_pb2, run_ledger_pb2, run_ledger_pb2_grpc
from aivcs.ledger.v1 import event_stream_pb2 as es

from harness.daemon import DaemonProcess
from harness.proc import RssSampler

INGEST_METHOD = "/aivcs.ledger.v1.EventStream/IngestEvents"
SPEC_DIGEST = "f1" * 32
AGENT = "flood-bench"
SAMPLE_SECONDS = 0.5
MB = 1024 * 1024


@dataclass
class FloodResult:
    db: str
    events: int
    batch_events: int
    payload_bytes: int
    seconds: float
    events_per_second: float
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float
    rss_growth_mb: float  # peak - before
    stored_events: int
    most_batches_ahead: int  # sent but not yet answered, at most: held by the transport and the daemon
    most_mb_ahead: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, RSS MB)


def batch_requests(run_id: str, events: int, batch: int, payload_bytes: int, payload_fields: int = 0) -> list[bytes]:
    """The whole flood, serialized up front so the client sends as fast as gRPC lets it."""
    pad = "x" * payload_bytes
    fields = {f"f{i}": i for i in range(payload_fields)}
    requests = []
    for batch_id, first in enumerate(range(0, events, batch)):
        request = es.IngestEventsRequest(batch_id=batch_id, run_id=run_id)
        for n in range(first, min(first + batch, events)):
            event = event_pb2.EventInput(kind="flood")
            event.payload.update({"n": n, "pad": pad, **fields})
            request.events.append(event)
        requests.append(request.SerializeToString())
    return requests


def flood(channel: grpc.Channel, requests: Sequence[bytes], batch: int, total: int) -> int:
    """Send every request on one IngestEvents stream and check each answer as it comes.

    Returns the most batches the client ever had sent but not yet answered:
    what the daemon and the transport between them held at once.
    """
    ingest = channel.stream_stream(
        INGEST_METHOD, request_serializer=None, response_deserializer=es.IngestEventsResponse.FromString
    )
    sent = 0

    def counted() -> Iterator[bytes]:
        nonlocal sent
        for request in requests:
            sent += 1  # gRPC takes the next request only once the transport accepts it
            yield request

    expected_first = 1
    most_ahead = 0
    answers: grpc.CallIterator[es.IngestEventsResponse] = ingest(counted())
    for batch_id, answer in enumerate(answers):
        most_ahead = max(most_ahead, sent - batch_id)
        if answer.HasField("error"):
            raise RuntimeError(f"batch {answer.batch_id} refused: {answer.error.code} {answer.error.message}")
        size = min(batch, total - batch_id * batch)
        if (answer.batch_id, answer.first_seq, answer.last_seq) != (
            batch_id,
            expected_first,
            expected_first + size - 1,
        ):
            raise RuntimeError(
                f"answer out of order or misplaced: {answer} (expected batch {batch_id} at seq {expected_first})"
            )
        expected_first += size
    if expected_first - 1 != total:
        raise RuntimeError(f"stream ended after {expected_first - 1} of {total} events")
    return most_ahead


def run_flood(
    daemon: DaemonProcess,
    db: str,
    events: int,
    batch: int = 10,
    payload_bytes: int = 200,
    interval: float = SAMPLE_SECONDS,
    payload_fields: int = 0,
) -> FloodResult:
    """Flood one new run of `daemon` and measure its RSS throughout."""
    run_id = f"flood-{time.time_ns()}"
    requests = batch_requests(run_id, events, batch, payload_bytes, payload_fields)
    with daemon.channel() as channel:
        runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
        runs.CreateRun(run_ledger_pb2.CreateRunRequest(spec_digest=SPEC_DIGEST, agent_name=AGENT, run_id=run_id))
        pid = daemon.process.pid
        with RssSampler(pid, interval) as sampler:
            started = time.monotonic()
            most_ahead = flood(channel, requests, batch, events)
            seconds = time.monotonic() - started
        stored = runs.GetRun(run_ledger_pb2.GetRunRequest(run_id=run_id)).run.total_events
    before, after, peak = sampler.samples[0][1], sampler.samples[-1][1], sampler.peak_bytes
    return FloodResult(
        db=db,
        events=events,
        batch_events=batch,
        payload_bytes=payload_bytes,
        seconds=round(seconds, 3),
        events_per_second=round(events / seconds, 1),
        rss_before_mb=round(before / MB, 1),
        rss_peak_mb=round(peak / MB, 1),
        rss_after_mb=round(after / MB, 1),
        rss_growth_mb=round((peak - before) / MB, 1),
        stored_events=stored,
        most_batches_ahead=most_ahead,
        most_mb_ahead=round(most_ahead * len(requests[0]) / MB, 1),
        samples=[(round(t, 2), round(rss / MB, 1)) for t, rss in sampler.samples],
    )
