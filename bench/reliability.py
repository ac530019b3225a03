"""`python -m bench.reliability`: kill the daemon, soak it, feed it garbage, and count what survived.

The long versions of tests/test_crash.py, tests/test_soak.py and
tests/test_hostile.py, with the same engines and the same invariants:

    python -m bench.reliability --kills 200 --soak-seconds 300 --hostile-examples 500

Crash campaign: the daemon runs on durable `surrealkv://` storage in a
temporary folder; several clients (unary appends and IngestEvents streams)
write into several shared runs with an idempotency key per batch (content and
key depend only on the client and the batch number) and record every
acknowledgement. The daemon is killed with SIGKILL at random moments (some
while it is still opening and recovering its storage) and restarted on the
same folder on a new port; clients reconnect and retry every unacknowledged
batch, same key, same content. At the end every run is read back: every
acknowledged event stored exactly once at the seqs its acknowledgement
names, seqs 1..N without a gap, every batch whole or absent, VerifyRun ok,
and a second send of acknowledged batches is a replay with the same seqs.

Soak: mixed traffic against one daemon while its RSS and open file
descriptors are sampled from /proc; both must stay within a bound after a
warm-up. Hostile: the property tests of tests/test_hostile.py with more
examples. The exit status is 0 only when every invariant held.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aivcs.ledger.v1 import (
    event_pb2,
    event_stream_pb2,
    event_stream_pb2_grpc,
    release_registry_pb2,
    release_registry_pb2_grpc,
    run_ledger_pb2,
    run_ledger_pb2_grpc,
)
from google.protobuf import timestamp_pb2

from tests.daemon import PORT_LINE, wait_serving

Code = grpc.StatusCode
SPEC = "5" * 64
AGENT = "reliability"
# What a client may see when the daemon dies or restarts under it; it retries these.
TRANSIENT = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.CANCELLED})
TRANSIENT_NUMBERS = frozenset(code.value[0] for code in TRANSIENT)
# Codes no request may ever get (docs/architecture.md, "Errors").
FORBIDDEN = frozenset({Code.UNKNOWN, Code.INTERNAL})
CALL_TIMEOUT = 15.0
STREAM_TIMEOUT = 120.0


def say(*parts: object) -> None:
    print(*parts, flush=True)


# --- the daemon under a supervisor that kills it ------------------------------------------------


@dataclass
class Connection:
    generation: int
    channel: grpc.Channel
    runs: run_ledger_pb2_grpc.RunLedgerStub
    events: event_stream_pb2_grpc.EventStreamStub
    releases: release_registry_pb2_grpc.ReleaseRegistryStub

    @classmethod
    def open(cls, target: str, generation: int = 0) -> Connection:
        channel = grpc.insecure_channel(target)
        return cls(
            generation,
            channel,
            run_ledger_pb2_grpc.RunLedgerStub(channel),
            event_stream_pb2_grpc.EventStreamStub(channel),
            release_registry_pb2_grpc.ReleaseRegistryStub(channel),
        )

    def close(self) -> None:
        self.channel.close()


class Supervisor:
    """Runs `aivcs-ledgerd` on one storage folder; kills and restarts it; tells clients where it is.

    `target` is None while the daemon is down. A daemon that exits without
    being killed, or does not become SERVING, counts as a crash.
    """

    def __init__(self, workdir: Path, db: str, extra: Sequence[str] = (), start_timeout: float = 60) -> None:
        self.workdir = workdir
        self.db = db
        self.extra = list(extra)
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.target: str | None = None
        self.generation = 0
        self.kills = 0
        self.early_kills = 0  # killed before it was serving: while opening and recovering storage
        self.crashes: list[str] = []
        self.start_seconds: list[float] = []  # how long each start took until SERVING
        self.early_kill_generations: set[int] = set()  # generations (after a kill) followed by an early kill
        self._changed = threading.Condition()

    def _launch(self) -> subprocess.Popen[bytes]:
        self.log_path = self.workdir / f"daemon-{self.generation:04d}-{time.monotonic_ns()}.log"
        args = [sys.executable, "-m", "aivcs_ledgerd", "--listen", "127.0.0.1:0", "--db", self.db, *self.extra]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        return self.process

    def start(self) -> str:
        """Start the daemon and publish its target once it is SERVING."""
        began = time.monotonic()
        process = self._launch()
        assert self.log_path is not None
        deadline = time.monotonic() + self.start_timeout
        while not (match := PORT_LINE.search(self.log_path.read_bytes())):
            if process.poll() is not None or time.monotonic() > deadline:
                self._crashed("did not start")
                raise RuntimeError(f"the daemon did not start:\n{self._tail()}")
            time.sleep(0.02)
        target = f"127.0.0.1:{int(match.group(1))}"
        try:
            wait_serving(target, max(1.0, deadline - time.monotonic()))
        except RuntimeError:
            self._crashed("never SERVING")
            raise
        self.start_seconds.append(time.monotonic() - began)
        with self._changed:
            self.generation += 1
            self.target = target
            self._changed.notify_all()
        return target

    def kill(self) -> None:
        """SIGKILL the daemon (after taking its target away from clients)."""
        with self._changed:
            self.target = None
            self.generation += 1
            self._changed.notify_all()
        process = self.process
        if process is None:
            return
        if process.poll() is not None:
            self._crashed(f"exited by itself with {process.returncode}")
        else:
            process.kill()
            process.wait()
            self.kills += 1

    def early_kill(self, delay: float) -> None:
        """Start the daemon and SIGKILL it after `delay` seconds, serving or not, without telling clients."""
        process = self._launch()
        time.sleep(delay)
        if process.poll() is not None:
            self._crashed(f"exited by itself with {process.returncode} while starting")
            return
        process.kill()
        process.wait()
        self.kills += 1
        self.early_kills += 1
        self.early_kill_generations.add(self.generation)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        with self._changed:
            self.target = None
            self.generation += 1
            self._changed.notify_all()
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        """Record a crash if the daemon that should be serving has exited."""
        if self.target is not None and self.process is not None and self.process.poll() is not None:
            self._crashed(f"exited by itself with {self.process.returncode}")
            with self._changed:
                self.target = None
                self.generation += 1
                self._changed.notify_all()

    def current(self, timeout: float) -> tuple[int, str] | None:
        """The serving daemon's (generation, target), waiting up to `timeout` seconds for one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.target is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)
            return self.generation, self.target

    def wait_change(self, generation: int, timeout: float) -> None:
        """Wait until the daemon was restarted (or `timeout` passed)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.generation == generation:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)

    def _crashed(self, how: str) -> None:
        self.crashes.append(f"{how}; log {self.log_path}:\n{self._tail()}")

    def _tail(self, size: int = 3000) -> str:
        return "" if self.log_path is None else self.log_path.read_text(errors="replace")[-size:]


# --- batches and the book of what was sent and acknowledged ---------------------------------------


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
            item.payload.update({
                "token": token, "client": self.client, "batch": self.number, "index": index,
                "note": "crash \u202eRTL\u202c \U0001f600 \u00e9", "nested": {"list": [1, 2.5, True, None, "x"]},
            })
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
    return Batch(client, number, rng.choice(run_ids), f"{prefix}{seed}-c{client}-b{number}", tokens, kinds,
                 timestamp_ns)


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
                    f"{batch.key}: acknowledged {first_seq}..{last_seq} for {len(batch.tokens)} events")
            earlier = self.acks.get(batch.key)
            if earlier is not None and (earlier.first_seq, earlier.last_seq) != (first_seq, last_seq):
                self.problems.append(f"{batch.key}: acknowledged {earlier} and later {first_seq}..{last_seq}")
            if earlier is None:
                self.acks[batch.key] = Ack(first_seq, last_seq, replayed, generation)
                self._acknowledged_events += len(batch.tokens)

    def failed(self, batch: Batch | None, code: Code | int, details: str) -> None:
        name = code.name if isinstance(code, Code) else _code_name(code)
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


def _code_name(number: int) -> str:
    for code in Code:
        if code.value[0] == number:
            return code.name
    return f"CODE_{number}"


# --- clients -----------------------------------------------------------------------------------------


class Clients:
    """Client threads writing batches until told to stop; each reconnects to whichever daemon serves."""

    def __init__(
        self, supervisor: Supervisor, book: Book, run_ids: Sequence[str], seed: int, prefix: str = "b",
        give_up_after: float = 120.0, retry: bool = True,
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
                    self.book.failed(None, error.code(), f"CreateRun {run_id}: {error.details()}")  # type: ignore[attr-defined]
                    if error.code() not in TRANSIENT:  # type: ignore[attr-defined]
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
                    code = error.code()  # type: ignore[attr-defined]
                    self.book.failed(batch, code, error.details())  # type: ignore[attr-defined]
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
                transient = self._stream_waves(call, outgoing, backlog, client, numbers, window,
                                               connection.generation)
            except grpc.RpcError as error:
                code = error.code()  # type: ignore[attr-defined]
                self.book.failed(None, code, f"IngestEvents stream: {error.details()}")  # type: ignore[attr-defined]
                transient = code in TRANSIENT
                if not transient:
                    backlog.clear()
            finally:
                outgoing.put(None)
                call.cancel()
            if transient:
                if not self.retry:
                    break
                self._after_failure(connection)
        if connection is not None:
            connection.close()

    def _stream_waves(
        self, call: Any, outgoing: queue.SimpleQueue[Any], backlog: deque[Batch], client: int,
        numbers: Iterator[int], window: int, generation: int,
    ) -> bool:
        """Send every unacknowledged batch, read one answer each, repeat; True on a transient refusal."""
        while backlog and not self.give_up.is_set():
            by_id: dict[int, Batch] = {}
            for batch in backlog:
                batch_id = next(self._batch_ids)
                by_id[batch_id] = batch
                self.book.sent(batch)
                outgoing.put(event_stream_pb2.IngestEventsRequest(
                    batch_id=batch_id, run_id=batch.run_id, events=batch.inputs(), idempotency_key=batch.key
                ))
            transient = False
            for _ in range(len(by_id)):
                reply = next(call)
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
        return not (self.duplicates or self.gaps or self.lost or self.misplaced or self.partial or self.invented
                    or self.verify_failed or self.replay_mismatches or self.problems)


def read_run(connection: Connection, run_id: str) -> list[event_pb2.Event]:
    request = event_stream_pb2.ReadEventsRequest(run_id=run_id)
    return [e for message in connection.events.ReadEvents(request, timeout=60) for e in message.events]


def check_runs(connection: Connection, book: Book, run_ids: Sequence[str], replays: int = 50) -> Verdict:
    """Read every run back and check every invariant against the book."""
    verdict = Verdict(runs=len(run_ids), events_acknowledged=book.events_acknowledged,
                      retried_batches=book.retried)
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
    for places in positions.values():
        verdict.duplicates += len(places) - 1
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
            book.problem(f"{key}: replay answered {reply.first_seq}..{reply.last_seq} replayed={reply.replayed}, "
                         f"acknowledged {ack.first_seq}..{ack.last_seq}")
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
        return (self.daemon_crashes == 0 and self.final_exit_code == 0 and self.before_restart.ok
                and self.after_restart.ok)


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
        with _connection(supervisor.target) as connection:
            figures.before_restart = check_runs(connection, book, run_ids)
        figures.check_seconds = round(time.monotonic() - checking, 1)
        figures.final_exit_code = supervisor.stop(signal.SIGTERM)
        supervisor.start()
        with _connection(supervisor.target) as connection:
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


@contextlib.contextmanager
def _connection(target: str | None) -> Iterator[Connection]:
    assert target is not None
    connection = Connection.open(target)
    try:
        yield connection
    finally:
        connection.close()


# --- the soak --------------------------------------------------------------------------------------------


def process_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def process_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


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
        return (self.daemon_alive and not self.forbidden and not any("crashed" in k for k in self.failures)
                and not self.broken_runs
                and self.rss_growth_with_writes_mb <= self.rss_bound_with_writes_mb
                and self.rss_growth_read_only_mb <= self.rss_bound_read_only_mb
                and self.fds_growth <= self.fd_bound)


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
                self.failures[f"{name} {error.code().name}"] += 1  # type: ignore[attr-defined]
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
            request = run_ledger_pb2.CreateRunRequest(spec_digest=SPEC, agent_name=f"soak-{rng.randrange(4)}",
                                                      run_id=run_id, git_sha="abc")
            request.tags.update({"soak": True, "n": rng.randrange(100)})
            if self.call("CreateRun", lambda r=request: connection.runs.CreateRun(r, timeout=CALL_TIMEOUT)):
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
            reply = self.call("AppendEvents", lambda r=request: connection.events.AppendEvents(r, timeout=CALL_TIMEOUT))
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
                    batch_id=i, run_id=rng.choice(run_ids),
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
        while not self.done():
            run_id = self.pick(rng, finished=rng.random() < 0.5)
            if run_id is None:
                time.sleep(0.01)
                continue
            choice = rng.randrange(5)
            if choice == 0:
                read = es_read(run_id, from_seq=rng.randrange(5))
                self.call("ReadEvents", lambda r=read: sum(1 for _ in connection.events.ReadEvents(r, timeout=60)))
            elif choice == 1:
                get = run_ledger_pb2.GetRunRequest(run_id=run_id)
                self.call("GetRun", lambda r=get: connection.runs.GetRun(r, timeout=CALL_TIMEOUT))
            elif choice == 2:
                verify = run_ledger_pb2.VerifyRunRequest(run_id=run_id)
                verdict = self.call("VerifyRun", lambda r=verify: connection.runs.VerifyRun(r, timeout=60))
                if verdict is not None and not verdict.ok:
                    with self.lock:
                        self.broken_runs[run_id] = f"{verdict.reason} (seq {verdict.first_broken_seq})"
            elif choice == 3:
                size = rng.randint(1, 50)
                self.call("ListRuns", lambda n=size: _list_pages(connection, n))
            else:
                read = es_read(run_id, kinds=["tool.call"], limit=10)
                self.call("ReadEvents", lambda r=read: sum(1 for _ in connection.events.ReadEvents(r, timeout=60)))

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
                call.cancel()

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
                request: Any = run_ledger_pb2.CompleteRunRequest(run_id=run_id, duration_ms=rng.randrange(10**6),
                                                                 final_state_digest="a" * 64)
                self.call("CompleteRun", lambda r=request: connection.runs.CompleteRun(r, timeout=CALL_TIMEOUT))
            elif choice == 4:
                request = run_ledger_pb2.FailRunRequest(run_id=run_id, reason="soak")
                self.call("FailRun", lambda r=request: connection.runs.FailRun(r, timeout=CALL_TIMEOUT))
            else:
                request = run_ledger_pb2.CancelRunRequest(run_id=run_id, reason="soak")
                self.call("CancelRun", lambda r=request: connection.runs.CancelRun(r, timeout=CALL_TIMEOUT))
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
                    agent_name=agent, spec_digest=f"{rng.randrange(16**8):08x}" * 8, promoted_by="soak",
                    version_label="v")
                self.call("Promote", lambda r=promote: connection.releases.Promote(r, timeout=CALL_TIMEOUT))
            elif choice == 2:
                rollback = release_registry_pb2.RollbackRequest(agent_name=agent, promoted_by="soak")
                self.call("Rollback", lambda r=rollback: connection.releases.Rollback(r, timeout=CALL_TIMEOUT))
            elif choice == 3:
                current = release_registry_pb2.GetCurrentRequest(agent_name=agent)
                self.call("GetCurrent", lambda r=current: connection.releases.GetCurrent(r, timeout=CALL_TIMEOUT))
            else:
                history = release_registry_pb2.GetHistoryRequest(agent_name=agent, page_size=20)
                self.call("GetHistory", lambda r=history: connection.releases.GetHistory(r, timeout=CALL_TIMEOUT))
            time.sleep(0.01)

    def churner(self, connection: Connection, rng: random.Random) -> None:
        """A fresh connection per call: leaked sockets or per-connection state would show in the fds."""
        while not self.done():
            with _connection(self.target) as fresh:
                self.call("GetRun(new connection)", lambda c=fresh: c.runs.ListRuns(
                    run_ledger_pb2.ListRunsRequest(page_size=5), timeout=CALL_TIMEOUT))
            time.sleep(0.02)


def es_read(run_id: str, **fields: Any) -> event_stream_pb2.ReadEventsRequest:
    return event_stream_pb2.ReadEventsRequest(run_id=run_id, **fields)


def _soak_event(rng: random.Random, index: int) -> event_pb2.EventInput:
    item = event_pb2.EventInput(kind=rng.choice(["step", "tool.call", "llm.reply"]))
    item.payload.update({"i": index, "text": "x" * rng.randrange(0, 400), "score": rng.random(),
                         "nested": {"a": [1, 2, {"b": "c"}]}})
    return item


def _list_pages(connection: Connection, page_size: int) -> int:
    token, pages = "", 0
    while pages < 3:
        reply = connection.runs.ListRuns(run_ledger_pb2.ListRunsRequest(page_size=page_size, page_token=token),
                                         timeout=CALL_TIMEOUT)
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
    workers = [traffic.creator, traffic.appender, traffic.appender, traffic.ingester, traffic.reader,
               traffic.subscriber, traffic.subscriber, traffic.finisher, traffic.releaser, traffic.churner]
    figures = SoakFigures(warmup_until=round(seconds * warmup, 2), writes_until=round(seconds * (1 - read_only), 2))
    stop = threading.Event()

    def sample() -> None:
        while True:
            with contextlib.suppress(OSError, RuntimeError):
                now = round(time.monotonic() - started, 2)
                figures.samples.append((now, process_rss_bytes(pid), process_fds(pid), traffic.events_stored))
            if stop.wait(interval):
                return

    def work(loop: Callable[[Connection, random.Random], None], index: int) -> None:
        with _connection(target) as connection:
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
    with _connection(target) as connection:
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


# --- the command -------------------------------------------------------------------------------------------


def _hostile(examples: int, workdir: Path) -> dict[str, Any]:
    """The hostile-input properties of tests/test_hostile.py with `examples` examples each."""
    from tests import test_hostile  # hypothesis and the strategies live with the tests

    return test_hostile.campaign(workdir, examples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs of the daemon under load (0: skip)")
    parser.add_argument("--unary-clients", type=int, default=3)
    parser.add_argument("--stream-clients", type=int, default=3)
    parser.add_argument("--runs", type=int, default=4, help="runs the clients share")
    parser.add_argument("--min-uptime", type=float, default=0.2, help="seconds a daemon serves at least")
    parser.add_argument("--max-uptime", type=float, default=2.0, help="seconds a daemon serves at most")
    parser.add_argument("--soak-seconds", type=float, default=120, help="mixed-traffic soak (0: skip)")
    parser.add_argument("--hostile-examples", type=int, default=300, help="examples per hostile property (0: skip)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", action="store_true", help="keep the storage folders and daemon logs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="aivcs-reliability-"))
    say(f"seed {args.seed}; working in {workdir}")
    result: dict[str, Any] = {"seed": args.seed}
    ok = True
    if args.kills:
        say(f"crash campaign: {args.kills} kills, {args.unary_clients} unary + {args.stream_clients} stream "
            f"clients, {args.runs} runs")
        folder = workdir / "crash"
        folder.mkdir()
        crash = crash_campaign(folder, args.kills, args.unary_clients, args.stream_clients, args.runs, args.seed,
                               (args.min_uptime, args.max_uptime), log=say)
        result["crash"] = _crash_dict(crash)
        ok &= crash.ok
        _print_crash(crash)
    if args.soak_seconds:
        say(f"soak: {args.soak_seconds:g} s of mixed traffic")
        folder = workdir / "soak"
        folder.mkdir()
        supervisor = Supervisor(folder, f"surrealkv://{folder / 'ledger-data'}")
        target = supervisor.start()
        assert supervisor.process is not None
        try:
            figures = soak(target, supervisor.process.pid, args.soak_seconds, args.seed)
        finally:
            exit_code = supervisor.stop()
        result["soak"] = {k: v for k, v in asdict(figures).items() if k != "samples"} | {"exit_code": exit_code}
        ok &= figures.ok and exit_code == 0
        _print_soak(figures, exit_code)
    if args.hostile_examples:
        say(f"hostile input: {args.hostile_examples} examples per property")
        folder = workdir / "hostile"
        folder.mkdir()
        hostile = _hostile(args.hostile_examples, folder)
        result["hostile"] = hostile
        ok &= hostile["failed_properties"] == 0 and hostile["daemon_crashes"] == 0
        say(f"  hostile inputs tried   {hostile['inputs_tried']}")
        say(f"  failed properties      {hostile['failed_properties']}")
        say(f"  daemon crashes         {hostile['daemon_crashes']}")
        say(f"  unexpected errors logged by the daemon: {hostile['unexpected_errors_logged']}")
        say(f"  answers                {hostile['answers']}")
        for message in hostile["messages"]:
            say("   ", message)
    crashes = result.get("crash", {}).get("daemon_crashes", 0) + (0 if result.get("soak", {}).get(
        "daemon_alive", True) else 1) + result.get("hostile", {}).get("daemon_crashes", 0)
    say(f"daemon crashes (all parts): {crashes}")
    say("RESULT:", "every invariant held" if ok else "INVARIANTS BROKEN")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


def _crash_dict(figures: CrashFigures) -> dict[str, Any]:
    data = asdict(figures)
    data["crash_logs"] = [log[-2000:] for log in figures.crash_logs]
    return data


def _print_crash(figures: CrashFigures) -> None:
    verdict = figures.before_restart
    say(f"  kills survived         {figures.kills} ({figures.early_kills} while starting or recovering)")
    say(f"  events acknowledged    {verdict.events_acknowledged}")
    say(f"  events stored          {verdict.events_stored}")
    say(f"  duplicates             {verdict.duplicates}")
    say(f"  gaps                   {verdict.gaps}")
    say(f"  lost / misplaced       {verdict.lost} / {verdict.misplaced}")
    say(f"  partial / invented     {verdict.partial} / {verdict.invented}")
    say(f"  retried batches        {verdict.retried_batches} (landed exactly once: {verdict.retried_landed_once})")
    say(f"  VerifyRun failures     {verdict.verify_failed}; replay mismatches {verdict.replay_mismatches}")
    say(f"  transient failures     {figures.transient_failures}")
    if verdict.lost_by_generation:
        early = set(figures.early_kill_generations)
        shown = {g: f"{n}{' (next start killed early)' if g + 1 in early else ''}"
                 for g, n in sorted(verdict.lost_by_generation.items())}
        say(f"  misplaced batches by daemon generation that acknowledged them: {shown}")
    say(f"  daemon crashes         {figures.daemon_crashes}")
    say(f"  SIGTERM exit code      {figures.final_exit_code}; after a clean restart: "
        f"{'ok' if figures.after_restart.ok else figures.after_restart}")
    say(f"  seconds                {figures.seconds} (restart to SERVING: median {figures.restart_seconds_median}, "
        f"max {figures.restart_seconds_max}; final check {figures.check_seconds})")
    for problem in verdict.problems[:20]:
        say("   problem:", problem)
    for log in figures.crash_logs[:3]:
        say("   crash:", log[-1500:])


def _print_soak(figures: SoakFigures, exit_code: int) -> None:
    say(f"  operations             {figures.operations} {figures.by_operation}")
    say(f"  failures               {figures.failures}")
    say(f"  RSS MB after warm-up   {figures.rss_after_warmup_mb}, peak {figures.rss_peak_mb}")
    say(f"  with writes            +{figures.rss_growth_with_writes_mb} MB for {figures.events_stored_while_measured} "
        f"events stored ({figures.rss_bytes_per_event} B/event; bound {figures.rss_bound_with_writes_mb} MB)")
    say(f"  read-only              +{figures.rss_growth_read_only_mb} MB (bound {figures.rss_bound_read_only_mb} MB)")
    say(f"  fds after warm-up      {figures.fds_after_warmup} -> peak {figures.fds_peak} "
        f"(growth {figures.fds_growth}, bound {figures.fd_bound})")
    say(f"  daemon alive           {figures.daemon_alive}; SIGTERM exit code {exit_code}")
    say(f"  runs whose chain broke {len(figures.broken_runs)} of {figures.verify_checks} checked "
        f"{list(figures.broken_runs.items())[:3]}")


if __name__ == "__main__":
    raise SystemExit(main())
