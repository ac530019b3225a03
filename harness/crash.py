"""The crash campaign: clients write with idempotency keys while the daemon is SIGKILLed and restarted.

The daemon runs on durable `surrealkv://` storage in a folder; several clients
(unary appends and IngestEvents streams) write into several shared runs with
an idempotency key per batch (content and key depend only on the client and
the batch number) and record every acknowledgement in a `Book`. The daemon is
killed at random moments (some while it is still opening and recovering its
storage) and restarted on the same folder on a new port; clients reconnect
and retry every unacknowledged batch, same key, same content. `check_runs`
then reads every run back: every acknowledged event stored exactly once at
the seqs its acknowledgement names, seqs 1..N without a gap, every batch
whole or absent, VerifyRun ok, and a second send of acknowledged batches is a
replay with the same seqs.

tests/test_crash.py runs it briefly; `python -m bench.reliability --kills 200` at length.
"""

from __future__ import annotations

import itertools
import queue
import random
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aivcs.ledger.v1 import event_pb2, event_stream_pb2, run_ledger_pb2
from google.protobuf import timestamp_pb2

from harness.codes import TRANSIENT, TRANSIENT_NUMBERS, code_name
from harness.supervisor import Connection, Supervisor, connect

Code = grpc.StatusCode
SPEC = "5" * 64
AGENT = "reliability"
CALL_TIMEOUT = 15.0
STREAM_TIMEOUT = 120.0


@dataclass(frozen=True)
class Batch:
    """One client's batch: its content and key depend only on (seed, client, number)."""

    client: int
    number: int
    run_id: str
    key: str
    tokens: tuple[str, ...]
    kinds: tuple[str, ...]
    timestamp_ns: int | None

    def inputs(self) -> list[event_pb2.EventInput]:
        inputs = []
        for index, (token, kind) in enumerate(zip(self.tokens, self.kinds, strict=True)):
            item = event_pb2.EventInput(kind=kind)
            item.payload.update(
                {
                    "token": token,
                    "client": self.client,
                    "batch": self.number,
                    "index": index,
                    "note": "crash \u202eRTL\u202c \U0001f600 \u00e9",
                    "nested": {"list": [1, 2.5, True, None, "x"]},
                }
            )
            if self.timestamp_ns is not None:
                seconds, nanos = divmod(self.timestamp_ns + index, 1_000_000_000)
                item.timestamp.CopyFrom(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
            inputs.append(item)
        return inputs


def make_batch(seed: int, client: int, number: int, run_ids: Sequence[str], prefix: str = "b") -> Batch:
    rng = random.Random(f"{seed}:{client}:{number}")
    size = rng.choice([1, 1, 2, 3, 5, 8, 13])
    kinds = tuple(rng.choice(["step", "tool.call", "llm.reply", "note"]) for _ in range(size))
    timestamp_ns = rng.randrange(1_600_000_000, 1_900_000_000) * 1_000_000_000 if rng.random() < 0.3 else None
    tokens = tuple(f"{prefix}{seed}.c{client}.b{number}.e{i}" for i in range(size))
    return Batch(
        client, number, rng.choice(run_ids), f"{prefix}{seed}-c{client}-b{number}", tokens, kinds, timestamp_ns
    )


@dataclass
class Ack:
    first_seq: int
    last_seq: int
    replayed: bool
    generation: int = 0  # which daemon (counting starts and kills) acknowledged it


class Book:
    """Every batch sent, how often, and its acknowledgement; every surprise, by kind. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batches: dict[str, Batch] = {}
        self.sends: Counter[str] = Counter()
        self.acks: dict[str, Ack] = {}
        self.refused: dict[str, str] = {}  # key -> the non-transient refusal it got
        self.problems: list[str] = []
        self.codes: Counter[str] = Counter()
        self._acknowledged_events = 0

    def sent(self, batch: Batch) -> None:
        with self._lock:
            self.batches[batch.key] = batch
            self.sends[batch.key] += 1

    def ack(self, batch: Batch, first_seq: int, last_seq: int, replayed: bool, generation: int = 0) -> None:
        with self._lock:
            if last_seq - first_seq + 1 != len(batch.tokens):
                self.problems.append(
                    f"{batch.key}: acknowledged {first_seq}..{last_seq} for {len(batch.tokens)} events"
                )
            earlier = self.acks.get(batch.key)
            if earlier is not None and (earlier.first_seq, earlier.last_seq) != (first_seq, last_seq):
                self.problems.append(f"{batch.key}: acknowledged {earlier} and later {first_seq}..{last_seq}")
            if earlier is None:
                self.acks[batch.key] = Ack(first_seq, last_seq, replayed, generation)
                self._acknowledged_events += len(batch.tokens)

    def failed(self, batch: Batch | None, code: Code | int, details: str | None) -> None:
        name = code.name if isinstance(code, Code) else code_name(code)
        with self._lock:
            self.codes[name] += 1
            if name in {c.name for c in TRANSIENT}:
                return
            if batch is not None:
                self.refused[batch.key] = f"{name}: {details}"
            self.problems.append(f"{batch.key if batch else '-'}: {name}: {details}")

    def problem(self, text: str) -> None:
        with self._lock:
            self.problems.append(text)

    @property
    def retried(self) -> int:
        with self._lock:
            return sum(1 for n in self.sends.values() if n > 1)

    @property
    def events_acknowledged(self) -> int:
        with self._lock:
            return self._acknowledged_events


# --- clients -----------------------------------------------------------------------------------------


class Clients:
    """Client threads writing batches until told to stop; each reconnects to whichever daemon serves."""

    def __init__(
        self,
        supervisor: Supervisor,
        book: Book,
        run_ids: Sequence[str],
        seed: int,
        prefix: str = "b",
        give_up_after: float = 120.0,
        retry: bool = True,
    ) -> None:
        self.supervisor = supervisor
        self.book = book
        self.run_ids = list(run_ids)
        self.seed = seed
        self.prefix = prefix
        self.stop = threading.Event()  # no new batches; finish (and retry) the outstanding ones
        self.give_up = threading.Event()  # stop at once
        self.give_up_after = give_up_after
        self.retry = retry
        self._threads: list[threading.Thread] = []
        self._batch_ids = itertools.count(1)

    def start(self, unary: int, streams: int) -> None:
        for client in range(unary + streams):
            work = self._unary if client < unary else self._stream
            thread = threading.Thread(target=self._guard, args=(work, client), name=f"client-{client}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> bool:
        """Wait for every client to finish; True if they all did."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _guard(self, work: Callable[[int], None], client: int) -> None:
        try:
            work(client)
        except Exception as error:  # a bug in the client itself must show in the figures, not vanish
            self.book.problem(f"client {client} crashed: {error!r}")

    def _connect(self, client: int, old: Connection | None) -> Connection | None:
        deadline = time.monotonic() + self.give_up_after
        while (found := self.supervisor.current(0.25)) is None:
            if self.give_up.is_set() or time.monotonic() > deadline:
                return None
        if self.give_up.is_set():
            return None
        generation, target = found
        if old is not None and old.generation == generation:
            return old
        if old is not None:
            old.close()
        return Connection.open(target, generation)

    def _after_failure(self, connection: Connection) -> None:
        """Wait for the next daemon, or a little, before retrying."""
        self.supervisor.wait_change(connection.generation, 0.5)

    def _ensure_runs(self, client: int) -> Connection | None:
        """Create every shared run (a safe retry when another client did already)."""
        connection: Connection | None = None
        for run_id in self.run_ids:
            while True:
                connection = self._connect(client, connection)
                if connection is None:
                    return None
                try:
                    reply = connection.runs.CreateRun(
                        run_ledger_pb2.CreateRunRequest(spec_digest=SPEC, agent_name=AGENT, run_id=run_id),
                        timeout=CALL_TIMEOUT,
                    )
                except grpc.RpcError as error:
                    self.book.failed(None, error.code(), f"CreateRun {run_id}: {error.details()}")
                    if error.code() not in TRANSIENT:
                        return connection
                    self._after_failure(connection)
                    continue
                if reply.run.run_id != run_id:
                    self.book.problem(f"CreateRun {run_id} answered {reply.run.run_id}")
                break
        return connection

    def _unary(self, client: int) -> None:
        connection = self._ensure_runs(client)
        for number in itertools.count():
            if self.stop.is_set() or self.give_up.is_set():
                break
            batch = make_batch(self.seed, client, number, self.run_ids, self.prefix)
            while not self.give_up.is_set():
                connection = self._connect(client, connection)
                if connection is None:
                    return
                self.book.sent(batch)
                request = event_stream_pb2.AppendEventsRequest(
                    run_id=batch.run_id, events=batch.inputs(), idempotency_key=batch.key
                )
                try:
                    reply = connection.events.AppendEvents(request, timeout=CALL_TIMEOUT)
                except grpc.RpcError as error:
                    code = error.code()
                    self.book.failed(batch, code, error.details())
                    if code in TRANSIENT and self.retry:
                        self._after_failure(connection)
                        continue
                    break
                self.book.ack(batch, reply.first_seq, reply.last_seq, reply.replayed, connection.generation)
                break
        if connection is not None:
            connection.close()

    def _stream(self, client: int, window: int = 8) -> None:
        """IngestEvents: up to `window` batches in flight on one stream; resend the unacknowledged on a new one."""
        connection = self._ensure_runs(client)
        numbers = itertools.count()
        backlog: deque[Batch] = deque()
        while not self.give_up.is_set():
            if not self.stop.is_set():
                while len(backlog) < window:
                    backlog.append(make_batch(self.seed, client, next(numbers), self.run_ids, self.prefix))
            if not backlog:
                break
            connection = self._connect(client, connection)
            if connection is None:
                return
            outgoing: queue.SimpleQueue[event_stream_pb2.IngestEventsRequest | None] = queue.SimpleQueue()
            call = connection.events.IngestEvents(iter(outgoing.get, None), timeout=STREAM_TIMEOUT)
            try:
                transient = self._stream_waves(call, outgoing, backlog, client, numbers, window, connection.generation)
            except grpc.RpcError as error:
                code = error.code()
                self.book.failed(None, code, f"IngestEvents stream: {error.details()}")
                transient = code in TRANSIENT
                if not transient:
                    backlog.clear()
            finally:
                outgoing.put(None)
                call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves RpcContext.cancel unannotated
            if transient:
                if not self.retry:
                    break
                self._after_failure(connection)
        if connection is not None:
            connection.close()

    def _stream_waves(
        self,
        call: grpc.CallIterator[event_stream_pb2.IngestEventsResponse],
        outgoing: queue.SimpleQueue[Any],
        backlog: deque[Batch],
        client: int,
        numbers: Iterator[int],
        window: int,
        generation: int,
    ) -> bool:
        """Send every unacknowledged batch, read one answer each, repeat; True on a transient refusal."""
        replies = iter(call)  # the call itself: grpc-stubs gives CallIterator no __next__
        while backlog and not self.give_up.is_set():
            by_id: dict[int, Batch] = {}
            for queued in backlog:
                batch_id = next(self._batch_ids)
                by_id[batch_id] = queued
                self.book.sent(queued)
                outgoing.put(
                    event_stream_pb2.IngestEventsRequest(
                        batch_id=batch_id, run_id=queued.run_id, events=queued.inputs(), idempotency_key=queued.key
                    )
                )
            transient = False
            for _ in range(len(by_id)):
                reply = next(replies)
                batch = by_id.pop(reply.batch_id, None)
                if batch is None:
                    self.book.problem(f"client {client}: answer for unknown batch_id {reply.batch_id}")
                    continue
                if reply.HasField("error"):
                    self.book.failed(batch, reply.error.code, reply.error.message)
                    if reply.error.code in TRANSIENT_NUMBERS:
                        transient = True
                        continue
                else:
                    self.book.ack(batch, reply.first_seq, reply.last_seq, reply.replayed, generation)
                backlog.remove(batch)
            if by_id:
                self.book.problem(f"client {client}: no answer for batch ids {sorted(by_id)}")
            if transient:
                return True
            if not self.stop.is_set():
                while len(backlog) < window:
                    backlog.append(make_batch(self.seed, client, next(numbers), self.run_ids, self.prefix))
        return False


# --- checking every run --------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What is stored, against what was sent and acknowledged."""

    runs: int = 0
    events_acknowledged: int = 0
    events_stored: int = 0
    duplicates: int = 0  # a token stored more than once, or a seq read twice
    gaps: int = 0  # missing seqs in 1..N, or total_events != N
    lost: int = 0  # acknowledged events not stored
    misplaced: int = 0  # acknowledged batches not stored at the seqs their acknowledgement names
    partial: int = 0  # batches with some, not all, events stored, or not contiguous
    invented: int = 0  # stored events no client sent
    retried_batches: int = 0
    retried_landed_once: int = 0
    verify_failed: int = 0
    replay_mismatches: int = 0
    lost_by_generation: dict[int, int] = field(default_factory=dict)  # daemon generation -> batches lost
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.duplicates
            or self.gaps
            or self.lost
            or self.misplaced
            or self.partial
            or self.invented
            or self.verify_failed
            or self.replay_mismatches
            or self.problems
        )


def read_run(connection: Connection, run_id: str) -> list[event_pb2.Event]:
    request = event_stream_pb2.ReadEventsRequest(run_id=run_id)
    return [e for message in connection.events.ReadEvents(request, timeout=60) for e in message.events]


def check_runs(connection: Connection, book: Book, run_ids: Sequence[str], replays: int = 50) -> Verdict:
    """Read every run back and check every invariant against the book."""
    verdict = Verdict(runs=len(run_ids), events_acknowledged=book.events_acknowledged, retried_batches=book.retried)
    token_owner = {token: key for key, batch in book.batches.items() for token in batch.tokens}
    positions: dict[str, list[tuple[str, int]]] = {}  # token -> [(run_id, seq)]
    for run_id in run_ids:
        stored = read_run(connection, run_id)
        run = connection.runs.GetRun(run_ledger_pb2.GetRunRequest(run_id=run_id), timeout=30).run
        verdict.events_stored += len(stored)
        seqs = [event.seq for event in stored]
        verdict.duplicates += len(seqs) - len(set(seqs))
        if seqs != sorted(seqs):
            verdict.problems.append(f"{run_id}: ReadEvents out of order")
        top = max(seqs, default=0)
        verdict.gaps += top - len(set(seqs)) + abs(run.total_events - top)
        for event in stored:
            token = event.payload.fields["token"].string_value if "token" in event.payload.fields else ""
            if token not in token_owner:
                verdict.invented += 1
            positions.setdefault(token, []).append((run_id, event.seq))
        answer = connection.runs.VerifyRun(run_ledger_pb2.VerifyRunRequest(run_id=run_id), timeout=60)
        if not answer.ok or answer.verified_events != len(stored):
            verdict.verify_failed += 1
            verdict.problems.append(f"{run_id}: VerifyRun {answer.reason!r} at {answer.first_broken_seq}")
    for held in positions.values():
        verdict.duplicates += len(held) - 1
    for key, batch in book.batches.items():
        places = [positions.get(token, []) for token in batch.tokens]
        present = [p for p in places if p]
        ack = book.acks.get(key)
        if ack is not None:
            verdict.lost += sum(1 for p in places if not p)
            expected = [(batch.run_id, seq) for seq in range(ack.first_seq, ack.last_seq + 1)]
            if [p[0] for p in places if p] != expected or len(present) != len(places):
                verdict.misplaced += 1
                verdict.lost_by_generation[ack.generation] = verdict.lost_by_generation.get(ack.generation, 0) + 1
        if present and len(present) != len(places):
            verdict.partial += 1
        elif present:
            seqs = [p[0][1] for p in present]
            if seqs != list(range(seqs[0], seqs[0] + len(seqs))) or any(p[0][0] != batch.run_id for p in present):
                verdict.partial += 1
        if book.sends[key] > 1 and all(len(p) == 1 for p in places) and ack is not None:
            verdict.retried_landed_once += 1
    verdict.replay_mismatches = _check_replays(connection, book, replays)
    return verdict


def _check_replays(connection: Connection, book: Book, count: int) -> int:
    """Send some acknowledged batches again, same key and content: each must replay its original seqs."""
    keys = sorted(book.acks)
    mismatches = 0
    for key in random.Random(len(keys)).sample(keys, min(count, len(keys))):
        batch, ack = book.batches[key], book.acks[key]
        reply = connection.events.AppendEvents(
            event_stream_pb2.AppendEventsRequest(run_id=batch.run_id, events=batch.inputs(), idempotency_key=key),
            timeout=CALL_TIMEOUT,
        )
        if not reply.replayed or (reply.first_seq, reply.last_seq) != (ack.first_seq, ack.last_seq):
            mismatches += 1
            book.problem(
                f"{key}: replay answered {reply.first_seq}..{reply.last_seq} replayed={reply.replayed}, "
                f"acknowledged {ack.first_seq}..{ack.last_seq}"
            )
    return mismatches


# --- the crash campaign ----------------------------------------------------------------------------------


@dataclass
class CrashFigures:
    kills: int = 0
    early_kills: int = 0
    daemon_crashes: int = 0
    final_exit_code: int | None = None
    seconds: float = 0.0
    restart_seconds_median: float = 0.0
    restart_seconds_max: float = 0.0
    check_seconds: float = 0.0
    transient_failures: dict[str, int] = field(default_factory=dict)
    before_restart: Verdict = field(default_factory=Verdict)
    after_restart: Verdict = field(default_factory=Verdict)
    crash_logs: list[str] = field(default_factory=list)
    early_kill_generations: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.daemon_crashes == 0 and self.final_exit_code == 0 and self.before_restart.ok and self.after_restart.ok
        )


def crash_campaign(
    workdir: Path,
    kills: int = 20,
    unary_clients: int = 2,
    stream_clients: int = 2,
    runs: int = 3,
    seed: int = 1,
    uptime: tuple[float, float] = (0.2, 1.2),
    early_kill_share: float = 0.15,
    log: Callable[[str], None] = lambda _: None,
) -> CrashFigures:
    """Kill the daemon `kills` times under load; then check every run, restart cleanly, check again."""
    started = time.monotonic()
    rng = random.Random(seed)
    supervisor = Supervisor(workdir, f"surrealkv://{workdir / 'ledger-data'}")
    book = Book()
    run_ids = [f"crash-{seed}-run-{i}" for i in range(runs)]
    clients = Clients(supervisor, book, run_ids, seed)
    figures = CrashFigures()
    supervisor.start()
    clients.start(unary_clients, stream_clients)
    report_at = 10
    try:
        try:
            while supervisor.kills < kills:
                time.sleep(rng.uniform(*uptime))
                supervisor.check_alive()
                supervisor.kill()
                if supervisor.kills < kills and rng.random() < early_kill_share:
                    supervisor.early_kill(rng.uniform(0.0, 1.5))
                _restart(supervisor)
                if supervisor.kills >= report_at:
                    log(f"  {supervisor.kills} kills, {book.events_acknowledged} events acknowledged")
                    report_at += 10
        except RuntimeError as error:  # the daemon no longer starts: report what happened to the data anyway
            book.problem(f"the campaign stopped after {supervisor.kills} kills: {str(error)[:2000]}")
            _restart(supervisor)
        clients.stop.set()
        if not clients.join(timeout=180):
            book.problem("clients did not finish their outstanding batches within 180 s")
        supervisor.check_alive()
        assert supervisor.target is not None
        checking = time.monotonic()
        with connect(supervisor.target) as connection:
            figures.before_restart = check_runs(connection, book, run_ids)
        figures.check_seconds = round(time.monotonic() - checking, 1)
        figures.final_exit_code = supervisor.stop(signal.SIGTERM)
        supervisor.start()
        with connect(supervisor.target) as connection:
            figures.after_restart = check_runs(connection, book, run_ids, replays=20)
    finally:
        clients.give_up.set()
        clients.stop.set()
        if supervisor.alive():
            supervisor.stop(signal.SIGKILL)
    figures.kills = supervisor.kills
    figures.early_kills = supervisor.early_kills
    figures.daemon_crashes = len(supervisor.crashes)
    figures.crash_logs = supervisor.crashes
    figures.early_kill_generations = sorted(supervisor.early_kill_generations)
    starts = sorted(supervisor.start_seconds)
    figures.restart_seconds_median = round(starts[len(starts) // 2], 2) if starts else 0.0
    figures.restart_seconds_max = round(starts[-1], 2) if starts else 0.0
    figures.transient_failures = dict(book.codes)
    figures.before_restart.problems = book.problems + figures.before_restart.problems
    figures.seconds = round(time.monotonic() - started, 1)
    return figures


def _restart(supervisor: Supervisor, attempts: int = 3) -> None:
    """Start the daemon again; a start that fails counts as a crash, and three in a row end the campaign."""
    for attempt in range(attempts):
        try:
            supervisor.start()
            return
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            if supervisor.process is not None and supervisor.process.poll() is None:
                supervisor.process.kill()
                supervisor.process.wait()
