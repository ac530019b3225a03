"""Flow control under a flood: the daemon's memory must stay bounded.

Starts the real daemon (on `surrealkv://` in a temporary folder unless
`--db` says otherwise), floods one run through one IngestEvents stream as
fast as this client can send, in small batches, and samples the daemon's
RSS from /proc/<pid>/status every 0.5 s. Prints a table and writes JSON
(bench-results/flood_memory.json by default).

The daemon reads at most a fixed number of batches of one stream ahead of
their commits; past that, gRPC flow control makes the client wait. So RSS
should rise by the engine's own caches and settle, whatever the number of
events. A daemon that buffered everything the client sent would instead
grow with the flood: the client sends requests several times faster than
storage commits them.

    python -m bench.flood_memory                    # 200,000 events, batches of 10
    python -m bench.flood_memory --events 20000 --db mem://

tests/test_ingest.py runs a scaled-down flood through `run_flood`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script: make `tests.daemon` importable
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from aivcs.ledger.v1 import event_pb2, run_ledger_pb2, run_ledger_pb2_grpc  # noqa: E402
from aivcs.ledger.v1 import event_stream_pb2 as es  # noqa: E402

from tests.daemon import DaemonProcess, start_daemon  # noqa: E402

INGEST_METHOD = "/aivcs.ledger.v1.EventStream/IngestEvents"
SPEC_DIGEST = "f1" * 32
AGENT = "flood-bench"
SAMPLE_SECONDS = 0.5
MB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid`, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's RSS on a background thread until stopped."""

    def __init__(self, pid: int, interval: float = SAMPLE_SECONDS) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._start = 0.0

    def __enter__(self) -> RssSampler:
        self._start = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def peak(self) -> int:
        return max(rss for _, rss in self.samples)

    def _sample(self) -> None:
        self.samples.append((time.monotonic() - self._start, rss_bytes(self.pid)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()


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
    ingest = channel.stream_stream(INGEST_METHOD, response_deserializer=es.IngestEventsResponse.FromString)
    sent = 0

    def counted() -> Iterator[bytes]:
        nonlocal sent
        for request in requests:
            sent += 1  # gRPC takes the next request only once the transport accepts it
            yield request

    expected_first = 1
    most_ahead = 0
    answers: Iterator[es.IngestEventsResponse] = ingest(counted())
    for batch_id, answer in enumerate(answers):
        most_ahead = max(most_ahead, sent - batch_id)
        if answer.HasField("error"):
            raise RuntimeError(f"batch {answer.batch_id} refused: {answer.error.code} {answer.error.message}")
        size = min(batch, total - batch_id * batch)
        if (answer.batch_id, answer.first_seq, answer.last_seq) != (batch_id, expected_first,
                                                                    expected_first + size - 1):
            raise RuntimeError(f"answer out of order or misplaced: {answer} (expected batch {batch_id} "
                               f"at seq {expected_first})")
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
    before, after, peak = sampler.samples[0][1], sampler.samples[-1][1], sampler.peak
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


def table(result: FloodResult) -> str:
    rows = [
        ("database", result.db),
        ("events", f"{result.events:,}"),
        ("batch size (events)", str(result.batch_events)),
        ("payload pad (bytes)", str(result.payload_bytes)),
        ("seconds", f"{result.seconds:.2f}"),
        ("events/s", f"{result.events_per_second:,.0f}"),
        ("RSS before (MB)", f"{result.rss_before_mb:.1f}"),
        ("RSS peak (MB)", f"{result.rss_peak_mb:.1f}"),
        ("RSS after (MB)", f"{result.rss_after_mb:.1f}"),
        ("RSS growth, peak - before (MB)", f"{result.rss_growth_mb:.1f}"),
        ("events stored", f"{result.stored_events:,}"),
        ("most batches sent, not yet answered", f"{result.most_batches_ahead:,} ({result.most_mb_ahead:.1f} MB)"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events to send (default %(default)s)")
    parser.add_argument("--batch", type=int, default=10, help="events per batch (default %(default)s)")
    parser.add_argument("--payload-bytes", type=int, default=200, help="padding per event (default %(default)s)")
    parser.add_argument("--db", default=None, help="daemon --db URL (default: surrealkv:// in a temp folder)")
    parser.add_argument("--interval", type=float, default=SAMPLE_SECONDS, help="RSS sampling period in seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "flood_memory.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="aivcs-flood-") as folder:
        tmp = Path(folder)
        db = args.db or f"surrealkv://{tmp / 'data'}"
        daemon = start_daemon(tmp, db=db)
        try:
            result = run_flood(daemon, db, args.events, args.batch, args.payload_bytes, args.interval)
        finally:
            code = daemon.stop()
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**asdict(result), "daemon_exit_code": code}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0 if result.stored_events == result.events and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
