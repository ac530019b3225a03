"""Client work, run inside client processes (see clients.py).

Every job opens its own grpc.aio channel, prepares its requests, waits at
the barrier so that all processes of a measurement start together, and
returns what it did and when. Requests are built before the barrier, so
the timed part is the RPCs alone. Every answer is checked (no error, seqs
contiguous): a benchmark that counts refusals as work would be worthless.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from aivcs.ledger.v1 import event_stream_pb2, event_stream_pb2_grpc, run_ledger_pb2, run_ledger_pb2_grpc

from bench import workload

WARM_CALLS = 20  # calls before a sequential measurement starts its clock: connection, handlers, caches
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]


class Barrier(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...

    def abort(self) -> None: ...


class BenchError(RuntimeError):
    """The server refused or mangled work the benchmark sent."""


@dataclass(frozen=True, slots=True)
class Unary:
    """`calls` AppendEvents with one event each, `in_flight` at a time."""

    target: str
    run_id: str
    calls: int
    in_flight: int
    first: int = 0  # payload numbering


@dataclass(frozen=True, slots=True)
class Ingest:
    """One IngestEvents stream of `messages` batches of `per_message` events, pipelined."""

    target: str
    run_id: str
    messages: int
    per_message: int
    first: int = 0
    prebuild: bool = True  # False for long fills: build each request as it is sent


@dataclass(frozen=True, slots=True)
class Read:
    """One ReadEvents of seq from_seq..to_seq."""

    target: str
    run_id: str
    from_seq: int
    to_seq: int


@dataclass(frozen=True, slots=True)
class CreateRuns:
    """CreateRun for each id, `in_flight` at a time."""

    target: str
    run_ids: tuple[str, ...]
    in_flight: int


@dataclass(frozen=True, slots=True)
class ListPages:
    """Time ListRuns page 1 and page `deep_page`, `repeats` times each, alternating."""

    target: str
    page_size: int
    deep_page: int
    repeats: int


@dataclass(frozen=True, slots=True)
class GetRuns:
    """GetRun of one run, `calls` times, one call at a time."""

    target: str
    run_id: str
    calls: int


Job = Unary | Ingest | Read | CreateRuns | ListPages | GetRuns


@dataclass(slots=True)
class Outcome:
    """What one process did: counts, its timed window (CLOCK_MONOTONIC, shared by processes), latencies."""

    events: int = 0
    messages: int = 0
    started: float = 0.0
    finished: float = 0.0
    cpu: float = 0.0  # CPU seconds this process spent in the timed window
    latencies: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def run_job(job: Job, barrier: Barrier | None) -> Outcome:
    """Entry point in a client process."""
    try:
        return asyncio.run(_run(job, barrier))
    except BaseException:
        if barrier is not None:
            barrier.abort()  # the other processes of this measurement stop waiting
        raise


async def _run(job: Job, barrier: Barrier | None) -> Outcome:
    async with grpc.aio.insecure_channel(job.target, options=CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        if isinstance(job, Unary):
            outcome = await _unary(channel, job, barrier)
        elif isinstance(job, Ingest):
            outcome = await _ingest(channel, job, barrier)
        elif isinstance(job, Read):
            outcome = await _read(channel, job, barrier)
        elif isinstance(job, CreateRuns):
            outcome = await _create_runs(channel, job, barrier)
        elif isinstance(job, GetRuns):
            outcome = await _get_runs(channel, job, barrier)
        else:
            outcome = await _list_pages(channel, job, barrier)
    outcome.cpu = time.process_time() - outcome.cpu
    return outcome


async def _start(barrier: Barrier | None, outcome: Outcome) -> None:
    """Wait for the other processes of the measurement, then start the clock."""
    if barrier is not None:
        await asyncio.to_thread(barrier.wait, 120)
    outcome.started = time.monotonic()
    outcome.cpu = time.process_time()


async def _unary(channel: grpc.aio.Channel, job: Unary, barrier: Barrier | None) -> Outcome:
    stub = event_stream_pb2_grpc.EventStreamStub(channel)
    requests = [workload.append_request(job.run_id, job.first + i) for i in range(job.calls)]
    # Warm the connection and the server's handlers; not counted.
    warm = [workload.append_request(job.run_id, -1 - i) for i in range(max(job.in_flight, WARM_CALLS))]
    for start in range(0, len(warm), job.in_flight):
        await asyncio.gather(*(stub.AppendEvents(request) for request in warm[start : start + job.in_flight]))
    latencies: list[float] = []
    pending = iter(requests)

    async def caller() -> None:
        for request in pending:  # shared: each request is taken by exactly one caller
            sent = time.perf_counter()
            reply = await stub.AppendEvents(request)
            latencies.append(time.perf_counter() - sent)
            if reply.last_seq != reply.first_seq or reply.first_seq == 0:
                raise BenchError(f"AppendEvents answered seqs {reply.first_seq}..{reply.last_seq} for one event")

    outcome = Outcome(events=job.calls, messages=job.calls, latencies=latencies)
    await _start(barrier, outcome)
    await asyncio.gather(*(caller() for _ in range(job.in_flight)))
    outcome.finished = time.monotonic()
    return outcome


def _ingest_requests(job: Ingest) -> Iterable[event_stream_pb2.IngestEventsRequest]:
    def generate() -> Iterator[event_stream_pb2.IngestEventsRequest]:
        for batch in range(job.messages):
            first = job.first + batch * job.per_message
            yield workload.ingest_request(batch + 1, job.run_id, first, job.per_message)

    return list(generate()) if job.prebuild else generate()


async def _ingest(channel: grpc.aio.Channel, job: Ingest, barrier: Barrier | None) -> Outcome:
    stub = event_stream_pb2_grpc.EventStreamStub(channel)
    requests = _ingest_requests(job)
    outcome = Outcome()
    await _start(barrier, outcome)
    # No request iterator: this process writes (sender task) and reads (here) itself.
    call = stub.IngestEvents()  # type: ignore[call-arg]

    async def send() -> None:
        for request in requests:
            await call.write(request)
        await call.done_writing()

    sender = asyncio.create_task(send())
    next_seq: int | None = None
    try:
        while True:
            reply = await call.read()
            if reply is grpc.aio.EOF:  # type: ignore[attr-defined]
                break
            assert isinstance(reply, event_stream_pb2.IngestEventsResponse)
            if reply.HasField("error"):
                raise BenchError(f"batch {reply.batch_id} refused: {reply.error.code} {reply.error.message}")
            if next_seq is not None and reply.first_seq != next_seq:
                raise BenchError(f"batch {reply.batch_id} got first_seq {reply.first_seq}, expected {next_seq}")
            next_seq = reply.last_seq + 1
            outcome.events += reply.last_seq - reply.first_seq + 1
            outcome.messages += 1
        await sender
    finally:
        sender.cancel()
    outcome.finished = time.monotonic()
    if outcome.messages != job.messages or outcome.events != job.messages * job.per_message:
        raise BenchError(f"ingest answered {outcome.messages} of {job.messages} batches, {outcome.events} events")
    outcome.extra["last_seq"] = next_seq - 1 if next_seq is not None else 0
    return outcome


async def _read(channel: grpc.aio.Channel, job: Read, barrier: Barrier | None) -> Outcome:
    stub = event_stream_pb2_grpc.EventStreamStub(channel)
    request = event_stream_pb2.ReadEventsRequest(run_id=job.run_id, from_seq=job.from_seq, to_seq=job.to_seq)
    outcome = Outcome()
    expected = job.from_seq
    await _start(barrier, outcome)
    async for reply in stub.ReadEvents(request):
        events = reply.events
        if not events or events[0].seq != expected or events[-1].seq != expected + len(events) - 1:
            raise BenchError(f"ReadEvents chunk does not continue at seq {expected}")
        expected += len(events)
        outcome.events += len(events)
        outcome.messages += 1
    outcome.finished = time.monotonic()
    if expected != job.to_seq + 1:
        raise BenchError(f"ReadEvents stopped at seq {expected - 1}, expected {job.to_seq}")
    return outcome


async def _create_runs(channel: grpc.aio.Channel, job: CreateRuns, barrier: Barrier | None) -> Outcome:
    stub = run_ledger_pb2_grpc.RunLedgerStub(channel)
    pending = iter([workload.create_request(run_id) for run_id in job.run_ids])

    async def caller() -> None:
        for request in pending:
            await stub.CreateRun(request)

    outcome = Outcome(messages=len(job.run_ids))
    await _start(barrier, outcome)
    await asyncio.gather(*(caller() for _ in range(job.in_flight)))
    outcome.finished = time.monotonic()
    return outcome


async def _get_runs(channel: grpc.aio.Channel, job: GetRuns, barrier: Barrier | None) -> Outcome:
    stub = run_ledger_pb2_grpc.RunLedgerStub(channel)
    request = run_ledger_pb2.GetRunRequest(run_id=job.run_id)
    for _ in range(WARM_CALLS):
        await stub.GetRun(request)
    outcome = Outcome(events=job.calls, messages=job.calls)
    await _start(barrier, outcome)
    for _ in range(job.calls):
        sent = time.perf_counter()
        reply = await stub.GetRun(request)
        outcome.latencies.append(time.perf_counter() - sent)
        if reply.run.run_id != job.run_id:
            raise BenchError(f"GetRun answered run {reply.run.run_id!r} for {job.run_id!r}")
    outcome.finished = time.monotonic()
    return outcome


async def _list_pages(channel: grpc.aio.Channel, job: ListPages, barrier: Barrier | None) -> Outcome:
    stub = run_ledger_pb2_grpc.RunLedgerStub(channel)
    outcome = Outcome()
    await _start(barrier, outcome)
    token = ""
    for page in range(1, job.deep_page):
        reply = await stub.ListRuns(run_ledger_pb2.ListRunsRequest(page_size=job.page_size, page_token=token))
        if not reply.next_page_token:
            raise BenchError(f"ListRuns has no page after page {page}; the database holds too few runs")
        token = reply.next_page_token
    first = run_ledger_pb2.ListRunsRequest(page_size=job.page_size)
    deep = run_ledger_pb2.ListRunsRequest(page_size=job.page_size, page_token=token)
    timings: dict[str, list[float]] = {"first": [], "deep": []}
    for _ in range(job.repeats):
        for name, request in (("first", first), ("deep", deep)):
            sent = time.perf_counter()
            reply = await stub.ListRuns(request)
            timings[name].append(time.perf_counter() - sent)
            if len(reply.runs) != job.page_size:
                raise BenchError(f"ListRuns page ({name}) held {len(reply.runs)} runs, not {job.page_size}")
    outcome.finished = time.monotonic()
    outcome.extra = timings
    return outcome
