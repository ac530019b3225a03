"""The soak: mixed traffic against one daemon while its RSS and open file descriptors are sampled.

Both must stay within a bound after a warm-up, the daemon must stay up, no
call may get a forbidden status, and every run the traffic wrote must still
verify. tests/test_soak.py runs it briefly; `python -m bench.reliability
--soak-seconds 600` at length.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from aivcs.ledger.v1 import event_pb2, event_stream_pb2, release_registry_pb2, run_ledger_pb2

from harness.codes import FORBIDDEN
from harness.proc import open_fds, rss_bytes
from harness.supervisor import Connection, connect

SPEC = "5" * 64
CALL_TIMEOUT = 15.0


@dataclass
class SoakFigures:
    """The soak's three phases: warm-up, mixed traffic, then the same minus every write.

    Embedded SurrealKV keeps about 1.3 KB of memory per stored event (measured: RSS after a restart
    on 600,000 empty-payload events is 845 MB, the same as before it; about 2 KB per soak event), so
    under writes the bound on RSS growth is `slack + per_event_bytes * events stored`, twice that;
    in the read-only phase nothing is stored and memory must stay within the slack. File
    descriptors must stay within `fd_bound` throughout.
    """

    seconds: float = 0.0
    operations: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # "<operation> <CODE>" -> count
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)  # (seconds, rss, fds, events stored)
    warmup_until: float = 0.0
    writes_until: float = 0.0
    rss_after_warmup_mb: float = 0.0
    rss_peak_mb: float = 0.0
    events_stored_while_measured: int = 0
    rss_growth_with_writes_mb: float = 0.0
    rss_bound_with_writes_mb: float = 0.0
    rss_bytes_per_event: float = 0.0
    rss_growth_read_only_mb: float = 0.0
    rss_bound_read_only_mb: float = 0.0
    fds_after_warmup: int = 0
    fds_peak: int = 0
    fds_growth: int = 0
    fd_bound: int = 0
    daemon_alive: bool = True
    broken_runs: dict[str, str] = field(default_factory=dict)  # runs whose VerifyRun failed, and why
    verify_checks: int = 0  # runs checked at the end

    @property
    def forbidden(self) -> dict[str, int]:
        return {k: v for k, v in self.failures.items() if k.split()[-1] in {c.name for c in FORBIDDEN}}

    @property
    def ok(self) -> bool:
        return (
            self.daemon_alive
            and not self.forbidden
            and not any("crashed" in k for k in self.failures)
            and not self.broken_runs
            and self.rss_growth_with_writes_mb <= self.rss_bound_with_writes_mb
            and self.rss_growth_read_only_mb <= self.rss_bound_read_only_mb
            and self.fds_growth <= self.fd_bound
        )


class _Traffic:
    """Mixed traffic from several threads until `deadline`; counts operations and failures."""

    def __init__(self, target: str, seed: int, deadline: float) -> None:
        self.target = target
        self.deadline = deadline
        self.rng = random.Random(seed)
        self.seed = seed
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.active: list[str] = []  # RUNNING runs
        self.finished: list[str] = []
        self.serial = itertools.count()
        self.events_stored = 0
        self.read_only = threading.Event()  # writers idle while set
        self.broken_runs: dict[str, str] = {}  # run_id -> why VerifyRun said the chain is broken

    def done(self) -> bool:
        return time.monotonic() >= self.deadline

    def idle_writer(self) -> bool:
        """True (after a short nap) while writes are paused."""
        if self.read_only.is_set():
            time.sleep(0.05)
            return True
        return False

    def stored(self, count: int) -> None:
        with self.lock:
            self.events_stored += count

    def call(self, name: str, thunk: Callable[[], Any]) -> Any:
        try:
            result = thunk()
        except grpc.RpcError as error:
            with self.lock:
                self.failures[f"{name} {error.code().name}"] += 1
            return None
        with self.lock:
            self.counts[name] += 1
        return result

    def pick(self, rng: random.Random, finished: bool = False) -> str | None:
        with self.lock:
            pool = self.finished if finished and self.finished else self.active
            return rng.choice(pool) if pool else None

    # One loop per kind of client.

    def creator(self, connection: Connection, rng: random.Random) -> None:
        while not self.done():
            if self.idle_writer():
                continue
            with self.lock:
                crowded = len(self.active) >= 12
            if crowded:
                time.sleep(0.05)
                continue
            run_id = f"soak-{self.seed}-{next(self.serial)}"
            request = run_ledger_pb2.CreateRunRequest(
                spec_digest=SPEC, agent_name=f"soak-{rng.randrange(4)}", run_id=run_id, git_sha="abc"
            )
            request.tags.update({"soak": True, "n": rng.randrange(100)})
            if self.call("CreateRun", partial(connection.runs.CreateRun, request, timeout=CALL_TIMEOUT)):
                with self.lock:
                    self.active.append(run_id)

    def appender(self, connection: Connection, rng: random.Random) -> None:
        while not self.done():
            if self.idle_writer():
                continue
            run_id = self.pick(rng)
            if run_id is None:
                time.sleep(0.01)
                continue
            events = [_soak_event(rng, i) for i in range(rng.randint(1, 20))]
            request = event_stream_pb2.AppendEventsRequest(run_id=run_id, events=events)
            if rng.random() < 0.5:
                request.idempotency_key = f"k{rng.randrange(1_000_000)}"
            reply = self.call("AppendEvents", partial(connection.events.AppendEvents, request, timeout=CALL_TIMEOUT))
            if reply is not None and not reply.replayed:
                self.stored(len(events))

    def ingester(self, connection: Connection, rng: random.Random) -> None:
        while not self.done():
            if self.idle_writer():
                continue
            run_ids = [r for r in (self.pick(rng) for _ in range(3)) if r is not None]
            if not run_ids:
                time.sleep(0.01)
                continue
            requests = [
                event_stream_pb2.IngestEventsRequest(
                    batch_id=i,
                    run_id=rng.choice(run_ids),
                    events=[_soak_event(rng, j) for j in range(rng.randint(1, 30))],
                )
                for i in range(rng.randint(5, 40))
            ]

            def ingest(requests: list[Any] = requests) -> int:
                replies = list(connection.events.IngestEvents(iter(requests), timeout=60))
                self.stored(sum(r.last_seq - r.first_seq + 1 for r in replies if not r.HasField("error")))
                return len(replies)

            self.call("IngestEvents", ingest)

    def reader(self, connection: Connection, rng: random.Random) -> None:
        def read_all(request: event_stream_pb2.ReadEventsRequest) -> int:
            return sum(1 for _ in connection.events.ReadEvents(request, timeout=60))

        while not self.done():
            run_id = self.pick(rng, finished=rng.random() < 0.5)
            if run_id is None:
                time.sleep(0.01)
                continue
            choice = rng.randrange(5)
            if choice == 0:
                read = es_read(run_id, from_seq=rng.randrange(5))
                self.call("ReadEvents", partial(read_all, read))
            elif choice == 1:
                get = run_ledger_pb2.GetRunRequest(run_id=run_id)
                self.call("GetRun", partial(connection.runs.GetRun, get, timeout=CALL_TIMEOUT))
            elif choice == 2:
                verify = run_ledger_pb2.VerifyRunRequest(run_id=run_id)
                verdict = self.call("VerifyRun", partial(connection.runs.VerifyRun, verify, timeout=60))
                if verdict is not None and not verdict.ok:
                    with self.lock:
                        self.broken_runs[run_id] = f"{verdict.reason} (seq {verdict.first_broken_seq})"
            elif choice == 3:
                size = rng.randint(1, 50)
                self.call("ListRuns", partial(_list_pages, connection, size))
            else:
                read = es_read(run_id, kinds=["tool.call"], limit=10)
                self.call("ReadEvents", partial(read_all, read))

    def subscriber(self, connection: Connection, rng: random.Random) -> None:
        while not self.done():
            run_id = self.pick(rng, finished=self.read_only.is_set() or rng.random() < 0.3)
            if run_id is None:
                time.sleep(0.01)
                continue
            left = self.deadline - time.monotonic()
            call = connection.events.SubscribeEvents(
                event_stream_pb2.SubscribeEventsRequest(run_id=run_id, from_seq=rng.randrange(3)),
                timeout=max(1.0, min(30.0, left + 0.5)),
            )
            wanted = rng.randint(1, 5)

            def follow(call: Any = call, wanted: int = wanted) -> int:
                seen = 0
                for _ in call:
                    seen += 1
                    if seen >= wanted or self.done():
                        break
                return seen

            try:
                self.call("SubscribeEvents", follow)
            finally:
                call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves RpcContext.cancel unannotated

    def finisher(self, connection: Connection, rng: random.Random) -> None:
        while not self.done():
            time.sleep(rng.uniform(0.05, 0.3))
            if self.read_only.is_set():
                continue
            with self.lock:
                if len(self.active) < 6:
                    continue
                run_id = self.active.pop(rng.randrange(len(self.active)))
            choice = rng.randrange(6)
            if choice < 4:
                request: Any = run_ledger_pb2.CompleteRunRequest(
                    run_id=run_id, duration_ms=rng.randrange(10**6), final_state_digest="a" * 64
                )
                self.call("CompleteRun", partial(connection.runs.CompleteRun, request, timeout=CALL_TIMEOUT))
            elif choice == 4:
                request = run_ledger_pb2.FailRunRequest(run_id=run_id, reason="soak")
                self.call("FailRun", partial(connection.runs.FailRun, request, timeout=CALL_TIMEOUT))
            else:
                request = run_ledger_pb2.CancelRunRequest(run_id=run_id, reason="soak")
                self.call("CancelRun", partial(connection.runs.CancelRun, request, timeout=CALL_TIMEOUT))
            with self.lock:
                self.finished.append(run_id)
                del self.finished[:-200]

    def releaser(self, connection: Connection, rng: random.Random) -> None:
        while not self.done():
            agent = f"soak-agent-{self.seed}-{rng.randrange(3)}"
            choice = rng.randrange(2, 5) if self.read_only.is_set() else rng.randrange(5)
            if choice == 2 and self.read_only.is_set():
                choice = 3
            if choice < 2:
                promote = release_registry_pb2.PromoteRequest(
                    agent_name=agent,
                    spec_digest=f"{rng.randrange(16**8):08x}" * 8,
                    promoted_by="soak",
                    version_label="v",
                )
                self.call("Promote", partial(connection.releases.Promote, promote, timeout=CALL_TIMEOUT))
            elif choice == 2:
                rollback = release_registry_pb2.RollbackRequest(agent_name=agent, promoted_by="soak")
                self.call("Rollback", partial(connection.releases.Rollback, rollback, timeout=CALL_TIMEOUT))
            elif choice == 3:
                current = release_registry_pb2.GetCurrentRequest(agent_name=agent)
                self.call("GetCurrent", partial(connection.releases.GetCurrent, current, timeout=CALL_TIMEOUT))
            else:
                history = release_registry_pb2.GetHistoryRequest(agent_name=agent, page_size=20)
                self.call("GetHistory", partial(connection.releases.GetHistory, history, timeout=CALL_TIMEOUT))
            time.sleep(0.01)

    def churner(self, connection: Connection, rng: random.Random) -> None:
        """A fresh connection per call: leaked sockets or per-connection state would show in the fds."""
        while not self.done():
            with connect(self.target) as fresh:
                self.call(
                    "GetRun(new connection)",
                    partial(fresh.runs.ListRuns, run_ledger_pb2.ListRunsRequest(page_size=5), timeout=CALL_TIMEOUT),
                )
            time.sleep(0.02)


def es_read(run_id: str, **fields: Any) -> event_stream_pb2.ReadEventsRequest:
    return event_stream_pb2.ReadEventsRequest(run_id=run_id, **fields)


def _soak_event(rng: random.Random, index: int) -> event_pb2.EventInput:
    item = event_pb2.EventInput(kind=rng.choice(["step", "tool.call", "llm.reply"]))
    item.payload.update(
        {"i": index, "text": "x" * rng.randrange(0, 400), "score": rng.random(), "nested": {"a": [1, 2, {"b": "c"}]}}
    )
    return item


def _list_pages(connection: Connection, page_size: int) -> int:
    token, pages = "", 0
    while pages < 3:
        reply = connection.runs.ListRuns(
            run_ledger_pb2.ListRunsRequest(page_size=page_size, page_token=token), timeout=CALL_TIMEOUT
        )
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    return pages


def soak(
    target: str,
    pid: int,
    seconds: float,
    seed: int = 1,
    warmup: float = 0.25,
    read_only: float = 0.3,
    interval: float = 0.5,
    slack_mb: float = 48.0,
    per_event_bytes: int = 4096,
    fd_bound: int = 32,
) -> SoakFigures:
    """Mixed traffic for `seconds` (the last `read_only` share without writes), sampling RSS and fds."""
    started = time.monotonic()
    traffic = _Traffic(target, seed, started + seconds)
    workers = [
        traffic.creator,
        traffic.appender,
        traffic.appender,
        traffic.ingester,
        traffic.reader,
        traffic.subscriber,
        traffic.subscriber,
        traffic.finisher,
        traffic.releaser,
        traffic.churner,
    ]
    figures = SoakFigures(warmup_until=round(seconds * warmup, 2), writes_until=round(seconds * (1 - read_only), 2))
    stop = threading.Event()

    def sample() -> None:
        while True:
            with contextlib.suppress(OSError, RuntimeError):
                now = round(time.monotonic() - started, 2)
                figures.samples.append((now, rss_bytes(pid), open_fds(pid), traffic.events_stored))
            if stop.wait(interval):
                return

    def work(loop: Callable[[Connection, random.Random], None], index: int) -> None:
        with connect(target) as connection:
            try:
                loop(connection, random.Random(f"{seed}:{index}"))
            except Exception as error:
                with traffic.lock:
                    traffic.failures[f"{loop.__name__} crashed: {error!r}"] += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=work, args=(loop, i), daemon=True) for i, loop in enumerate(workers)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, started + figures.writes_until - time.monotonic()))
    traffic.read_only.set()
    for thread in threads:
        thread.join(seconds + 120)
    time.sleep(interval * 2)  # streams and connections just closed: give the daemon a moment to let go
    stop.set()
    sampler.join()
    figures.daemon_alive = Path(f"/proc/{pid}").exists()
    figures.seconds = round(time.monotonic() - started, 1)
    figures.by_operation = dict(traffic.counts)
    figures.operations = sum(traffic.counts.values())
    figures.failures = dict(traffic.failures)
    _judge(figures, slack_mb, per_event_bytes, fd_bound)
    # Every run the traffic wrote must still verify.
    with connect(target) as connection:
        for run_id in traffic.active + traffic.finished:
            verdict = connection.runs.VerifyRun(run_ledger_pb2.VerifyRunRequest(run_id=run_id), timeout=120)
            figures.verify_checks += 1
            if not verdict.ok:
                traffic.broken_runs[run_id] = f"{verdict.reason} (seq {verdict.first_broken_seq})"
    figures.broken_runs = dict(traffic.broken_runs)
    return figures


def _judge(figures: SoakFigures, slack_mb: float, per_event_bytes: int, fd_bound: int) -> None:
    samples = figures.samples
    warm = [s for s in samples if s[0] <= figures.warmup_until] or samples[:1]
    writing = [s for s in samples if figures.warmup_until < s[0] <= figures.writes_until + 1.0]
    # The read-only phase starts once writes in flight have settled.
    reading = [s for s in samples if s[0] > figures.writes_until + 1.0]
    figures.fd_bound = fd_bound
    if not (warm and writing and reading):
        return
    base = warm[-1]
    base_rss = max(s[1] for s in warm)
    figures.rss_after_warmup_mb = round(base_rss / 1e6, 1)
    figures.rss_peak_mb = round(max(s[1] for s in samples) / 1e6, 1)
    stored = writing[-1][3] - base[3]
    figures.events_stored_while_measured = stored
    growth = max(0, max(s[1] for s in writing) - base_rss)
    figures.rss_growth_with_writes_mb = round(growth / 1e6, 1)
    figures.rss_bytes_per_event = round(growth / stored) if stored else 0.0
    figures.rss_bound_with_writes_mb = round(slack_mb + per_event_bytes * stored / 1e6, 1)
    start_rss = reading[0][1]
    figures.rss_growth_read_only_mb = round(max(0, max(s[1] for s in reading) - start_rss) / 1e6, 1)
    figures.rss_bound_read_only_mb = slack_mb
    base_fds = max(s[2] for s in warm)
    figures.fds_after_warmup = base_fds
    figures.fds_peak = max(s[2] for s in samples)
    figures.fds_growth = max(0, figures.fds_peak - base_fds)
