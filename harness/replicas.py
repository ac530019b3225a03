"""Several daemon replicas on one stand-in SurrealDB server, for the scale-out tests and benchmarks."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc
from aivcs.ledger.v1 import event_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1.event_stream_pb2_grpc import EventStreamStub
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub

from harness.codes import TRANSIENT  # as the Python client retries: "try again", or a call the transport cut
from harness.daemon import DaemonProcess, start_daemon


def start_replicas(
    tmp: Path, db: str, count: int = 3, extra: Sequence[str] = (), env: dict[str, str] | None = None
) -> list[DaemonProcess]:
    """Start `count` daemons on `db` at the same moment; each is SERVING when this returns.

    Raises the first start-up failure, after stopping the replicas that did start.
    """
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(start_daemon, tmp, db, extra, env, 60) for _ in range(count)]
    started = [f.result() for f in futures if f.exception() is None]
    failures = [f.exception() for f in futures if f.exception() is not None]
    if failures:
        stop_replicas(started)
        raise failures[0]  # type: ignore[misc]
    return started


def stop_replicas(replicas: Sequence[DaemonProcess]) -> None:
    for replica in replicas:
        replica.stop()


SPEC = "d" * 64


@dataclass
class Tally:
    """What writers were told: every acknowledged append, and every retryable refusal."""

    acknowledged: dict[tuple[str, str], int] = field(default_factory=dict)  # (run_id, key) -> seq
    attempts: int = 0
    refused: int = 0
    replayed: int = 0
    ack_times: list[float] = field(default_factory=list)  # monotonic, one per acknowledgement
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def create_runs(target: str, count: int, prefix: str = "shared") -> list[str]:
    ids = [f"{prefix}-{uuid.uuid4()}" for _ in range(count)]
    with grpc.insecure_channel(target) as channel:
        stub = RunLedgerStub(channel)
        for run_id in ids:
            stub.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="replicas", run_id=run_id), timeout=30)
    return ids


def write(
    targets: Sequence[str],
    run_ids: Sequence[str],
    writers: int,
    appends_each: int | None = None,
    until: threading.Event | None = None,
    tally: Tally | None = None,
    retry_for: float = 30.0,
) -> Tally:
    """`writers` threads, writer w on targets[w % len] and run_ids[w % len], appending one event at a time.

    Each append carries an idempotency key and is retried on a retryable
    refusal (on the next target, as a client fails over) for up to
    `retry_for` seconds. Stops after `appends_each` appends per writer or
    when `until` is set.
    """
    tally = tally or Tally()

    def writer(w: int) -> None:
        channels = [grpc.insecure_channel(t) for t in targets]
        stubs = [EventStreamStub(c) for c in channels]
        run_id = run_ids[w % len(run_ids)]
        home = w % len(targets)
        i = 0
        try:
            while (appends_each is None or i < appends_each) and not (until is not None and until.is_set()):
                key = f"w{w}-{i}"
                request = es.AppendEventsRequest(
                    run_id=run_id, idempotency_key=key, events=[event_pb2.EventInput(kind="step")]
                )
                request.events[0].payload.update({"writer": w, "i": i})
                deadline = time.monotonic() + retry_for
                target = home
                while True:
                    with tally.lock:
                        tally.attempts += 1
                    try:
                        reply = stubs[target].AppendEvents(request, timeout=10)
                        break
                    except grpc.RpcError as error:
                        code = error.code()
                        if code not in TRANSIENT or time.monotonic() > deadline:
                            with tally.lock:
                                tally.failures.append(f"{key}: {code} {error.details()}")
                            return
                        with tally.lock:
                            tally.refused += 1
                        target = (target + 1) % len(targets)
                        time.sleep(0.05)
                assert reply.first_seq == reply.last_seq, reply
                with tally.lock:
                    tally.acknowledged[(run_id, key)] = reply.first_seq
                    tally.replayed += reply.replayed
                    tally.ack_times.append(time.monotonic())
                i += 1
        finally:
            for channel in channels:
                channel.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


def longest_pause(tally: Tally, after: float) -> float:
    """The longest time without any acknowledgement, from monotonic `after` to the last one."""
    times = sorted(t for t in tally.ack_times if t >= after)
    if not times:
        return float("inf")
    return max(b - a for a, b in zip([after, *times], times, strict=False))


def owner_of(replicas: Sequence[DaemonProcess], run_id: str) -> DaemonProcess:
    """The replica that took ownership of `run_id` last (from the replicas' logs)."""
    best: tuple[str, DaemonProcess] | None = None
    for replica in replicas:
        for line in replica.log().splitlines():
            if f"took ownership of run:{run_id} " in line and (best is None or line[:23] > best[0]):
                best = (line[:23], replica)
    assert best is not None, f"no replica owns {run_id}"
    return best[1]


def check_stored(target: str, run_ids: Sequence[str], tally: Tally) -> list[str]:
    """Problems with what is stored: gaps, doubles, acknowledged appends missing or elsewhere, chain breaks."""
    problems: list[str] = []
    with grpc.insecure_channel(target) as channel:
        events, runs = EventStreamStub(channel), RunLedgerStub(channel)
        for run_id in run_ids:
            stored = [e for m in events.ReadEvents(es.ReadEventsRequest(run_id=run_id), timeout=60) for e in m.events]
            seqs = [e.seq for e in stored]
            if seqs != list(range(1, len(seqs) + 1)):
                problems.append(f"{run_id}: seqs not contiguous")
            total = runs.GetRun(rl.GetRunRequest(run_id=run_id), timeout=30).run.total_events
            if total != len(stored):
                problems.append(f"{run_id}: total_events {total} but {len(stored)} stored")
            # The writers store both as numbers: a Struct holds them as floats.
            keys = [f"w{int(cast(float, e.payload['writer']))}-{int(cast(float, e.payload['i']))}" for e in stored]
            if len(set(keys)) != len(keys):
                problems.append(f"{run_id}: {len(keys) - len(set(keys))} appends stored twice")
            where = dict(zip(keys, seqs, strict=True))
            for (acked_run, key), seq in tally.acknowledged.items():
                if acked_run == run_id and where.get(key) != seq:
                    problems.append(f"{run_id}: {key} acknowledged at seq {seq}, stored at {where.get(key)}")
            verdict = runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id), timeout=60)
            if not verdict.ok:
                problems.append(f"{run_id}: VerifyRun: {verdict.reason}")
    return problems


@dataclass
class Lag:
    """Seconds from an append's acknowledgement until each subscriber had it (0 when it came first)."""

    seconds: list[float]
    detail: list[tuple[int, int, float]] = field(default_factory=list)  # (subscriber, seq, seconds)

    def slowest(self, count: int = 5) -> list[tuple[int, int, float]]:
        return sorted(self.detail, key=lambda item: -item[2])[:count]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def worst(self) -> float:
        return max(self.seconds)


def subscription_lag(
    write_target: str, subscribe_targets: Sequence[str], events: int = 100, interval: float = 0.02
) -> Lag:
    """A steady trickle of single-event appends through `write_target`, subscribed to on every other target."""
    [run_id] = create_runs(write_target, 1, prefix="lag")
    acknowledged: dict[int, float] = {}
    received: list[dict[int, float]] = [{} for _ in subscribe_targets]
    ready = threading.Barrier(len(subscribe_targets) + 1)

    def subscriber(index: int) -> None:
        with grpc.insecure_channel(subscribe_targets[index]) as channel:
            stream = EventStreamStub(channel).SubscribeEvents(es.SubscribeEventsRequest(run_id=run_id), timeout=120)
            ready.wait()
            for message in stream:
                now = time.monotonic()
                for event in message.events:
                    received[index][event.seq] = now
                if message.events and message.events[-1].seq >= events:
                    stream.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves RpcContext.cancel unannotated
                    return

    threads = [threading.Thread(target=subscriber, args=(i,)) for i in range(len(subscribe_targets))]
    for thread in threads:
        thread.start()
    ready.wait()
    time.sleep(0.5)  # the subscriptions are open at their replicas
    with grpc.insecure_channel(write_target) as channel:
        stub = EventStreamStub(channel)
        for _ in range(events):
            reply = stub.AppendEvents(
                es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="tick")]), timeout=30
            )
            acknowledged[reply.first_seq] = time.monotonic()
            time.sleep(interval)
    for thread in threads:
        thread.join(timeout=60)
    assert all(len(got) == events for got in received), [len(got) for got in received]
    lags = [max(0.0, got[seq] - at) for got in received for seq, at in acknowledged.items()]
    return Lag(lags, [(i, seq, got[seq] - at) for i, got in enumerate(received) for seq, at in acknowledged.items()])
