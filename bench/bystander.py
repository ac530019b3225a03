"""A bystander's AppendEvents latency while others read: unloaded, then under two loads.

1. unloaded: one client appends one event per call, one call at a time;
2. the same while 8 readers loop over ReadEvents of a `filter_run_events`
   run with the largest `kinds` filter allowed (MAX_KINDS kinds, one of
   which matches), each on its own connection;
3. the same while `idle_subscribers` SubscribeEvents streams wait on runs
   nobody writes to.

The figure is each loaded p99 over the unloaded p99 of the same run.
`python -m bench.bystander [--smoke]` runs it alone against a fresh daemon.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from aivcs.ledger.v1 import event_pb2, event_stream_pb2_grpc, run_ledger_pb2_grpc
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl

from aivcs_ledgerd.ledger.events import MAX_KINDS
from bench.report import Row
from harness.daemon import DaemonProcess

SPEC = "ab" * 32
READERS = 8
STREAMS_PER_CONNECTION = 200  # under the daemon's default per-connection call limit


@dataclass(frozen=True, slots=True)
class BystanderFigures:
    calls: int  # bystander calls per phase
    unloaded_p99_ms: float
    filtered_readers_p99_ms: float
    idle_subscribers_p99_ms: float
    readers: int
    filter_kinds: int
    filter_run_events: int
    subscribers: int
    reads_done: int  # whole filtered reads finished during phase 2

    def as_dict(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self.__slots__}


def _channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def _p99_ms(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def _bystander(target: str, run_id: str, calls: int) -> float:
    with _channel(target) as channel:
        stub = event_stream_pb2_grpc.EventStreamStub(channel)
        request = es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="bystander")])
        stub.AppendEvents(request, timeout=30)  # connect first
        latencies = []
        for _ in range(calls):
            began = time.perf_counter()
            stub.AppendEvents(request, timeout=30)
            latencies.append(time.perf_counter() - began)
    return _p99_ms(latencies)


def _create(stub: run_ledger_pb2_grpc.RunLedgerStub, run_id: str) -> None:
    stub.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="bench-bystander", run_id=run_id), timeout=30)


def measure(daemon: DaemonProcess, calls: int, filter_run_events: int, subscribers: int) -> BystanderFigures:
    target = daemon.target
    with daemon.channel() as channel:
        runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
        events = event_stream_pb2_grpc.EventStreamStub(channel)
        prefix = f"bench-bystander-{time.monotonic_ns()}"
        bystander_run, filtered_run, quiet_run = f"{prefix}-append", f"{prefix}-filtered", f"{prefix}-quiet"
        for run_id in (bystander_run, filtered_run, quiet_run):
            _create(runs, run_id)
        for first in range(0, filter_run_events, 500):
            kinds = [f"kind-{n % 50}" for n in range(first, min(first + 500, filter_run_events))]
            events.AppendEvents(
                es.AppendEventsRequest(run_id=filtered_run, events=[event_pb2.EventInput(kind=kind) for kind in kinds]),
                timeout=60,
            )
        events.AppendEvents(
            es.AppendEventsRequest(run_id=quiet_run, events=[event_pb2.EventInput(kind="k")]), timeout=30
        )

    unloaded = _bystander(target, bystander_run, calls)

    stop = threading.Event()
    done = [0]
    kinds = ["kind-7", *[f"absent-{n}" for n in range(MAX_KINDS - 1)]]

    def reader() -> None:
        with _channel(target) as channel:
            stub = event_stream_pb2_grpc.EventStreamStub(channel)
            while not stop.is_set():
                for _ in stub.ReadEvents(es.ReadEventsRequest(run_id=filtered_run, kinds=kinds), timeout=300):
                    pass
                done[0] += 1

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(READERS)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every reader under way
    try:
        with_readers = _bystander(target, bystander_run, calls)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    channels = [_channel(target) for _ in range(-(-subscribers // STREAMS_PER_CONNECTION))]
    streams = []
    try:
        # Opened a connection's worth at a time: gRPC's server cancels calls beyond its queue of
        # calls not yet taken up by the application (1,000 by default) when thousands arrive at once.
        for first in range(0, subscribers, STREAMS_PER_CONNECTION):
            stub = event_stream_pb2_grpc.EventStreamStub(channels[first // STREAMS_PER_CONNECTION])
            group = [
                stub.SubscribeEvents(es.SubscribeEventsRequest(run_id=quiet_run), timeout=600)
                for _ in range(min(STREAMS_PER_CONNECTION, subscribers - first))
            ]
            for stream in group:
                next(iter(stream))  # the one stored event: the subscription is open and caught up
            streams += group
        with_subscribers = _bystander(target, bystander_run, calls)
    finally:
        for stream in streams:
            stream.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves RpcContext.cancel unannotated
        for channel in channels:
            channel.close()
    return BystanderFigures(
        calls, unloaded, with_readers, with_subscribers, READERS, len(kinds), filter_run_events, subscribers, done[0]
    )


def main() -> None:
    from harness.daemon import start_daemon

    parser = argparse.ArgumentParser(
        prog="python -m bench.bystander", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the benchmark runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aivcs-bystander-") as folder:
        tmp = Path(folder)
        daemon = start_daemon(tmp, db=f"surrealkv://{tmp / 'data'}", timeout=60)
        try:
            figures = measure(daemon, *SIZES["smoke" if args.smoke else "full"])
        finally:
            daemon.stop()
    for name, value in figures.as_dict().items():
        print(f"{name:<26} {value:.2f}" if isinstance(value, float) else f"{name:<26} {value}")
    for name in ("filtered_readers", "idle_subscribers"):
        ratio = getattr(figures, f"{name}_p99_ms") / figures.unloaded_p99_ms
        print(f"{name} p99 / unloaded p99: {ratio:.2f}")


# Bystander calls, filtered run length and idle subscribers per benchmark mode (bench.sizes).
SIZES = {"smoke": (50, 2_000, 100), "quick": (200, 20_000, 3_000), "full": (300, 20_000, 3_000)}


def rows(figures: BystanderFigures) -> list[Row]:
    """The two figures as rows of `python -m bench`'s table: loaded p99 over unloaded p99."""
    unloaded = figures.unloaded_p99_ms
    return [
        Row(
            "bystander_filtered_readers",
            f"bystander append p99, {figures.readers} readers with {figures.filter_kinds}-kind filters",
            figures.filtered_readers_p99_ms,
            "ms",
            unloaded,
            "unloaded p99, ms",
            figures.filtered_readers_p99_ms / unloaded,
            "(none)",
            None,
        ),
        Row(
            "bystander_idle_subscribers",
            f"bystander append p99, {figures.subscribers:,} idle subscribers",
            figures.idle_subscribers_p99_ms,
            "ms",
            unloaded,
            "unloaded p99, ms",
            figures.idle_subscribers_p99_ms / unloaded,
            "(none)",
            None,
        ),
    ]


if __name__ == "__main__":
    main()
