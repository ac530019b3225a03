"""Budgets: what one caller (with or without a token) can make the daemon hold, and limits that keep it serving.

The floods here are small enough to run in seconds and big enough that the
daemon without its budgets grows by hundreds of MB; RSS is read from /proc
(bench.servers.rss_mb) while the flood runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2, event_stream_pb2_grpc, run_ledger_pb2_grpc
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from google.protobuf import struct_pb2

from aivcs_ledgerd.app import StartupError
from aivcs_ledgerd.config import Limits
from bench.servers import RssSampler, rss_mb
from tests.daemon import DaemonProcess, start_daemon
from tests.inprocess import Fault, Stubs, running
from tests.inprocess import channel as aio_channel

Code = grpc.StatusCode
SPEC = "ab" * 32
WRITE_TOKEN = "budgets-write-token-0123456789abcdef"
APPEND = "/aivcs.ledger.v1.EventStream/AppendEvents"
INGEST = "/aivcs.ledger.v1.EventStream/IngestEvents"
FLOOD_BYTES = 8 << 20  # one flood request: 8 MiB on the wire
FLOOD_CALLS = 48  # concurrent flood calls per connection


def bearer(token: str = WRITE_TOKEN) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def big_request(run_id: str, size: int = FLOOD_BYTES) -> bytes:
    """An AppendEventsRequest (or IngestEventsRequest: the same fields 1 to 3) of about `size` bytes."""
    payload = struct_pb2.Struct()
    payload.update({"blob": "x" * size})
    return es.AppendEventsRequest(
        run_id=run_id, events=[event_pb2.EventInput(kind="flood", payload=payload)]
    ).SerializeToString()


def separate_channel(target: str) -> grpc.Channel:
    """A channel with a connection of its own."""
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon that requires a token."""
    tmp = tmp_path_factory.mktemp("budgets")
    tokens = tmp / "tokens"
    tokens.write_text(f"read-write {WRITE_TOKEN}\n")
    daemon = start_daemon(tmp, extra=["--auth-token-file", str(tokens)])
    yield daemon
    daemon.stop()


def create_run(channel: grpc.Channel) -> str:
    reply = run_ledger_pb2_grpc.RunLedgerStub(channel).CreateRun(
        rl.CreateRunRequest(spec_digest=SPEC, agent_name="budgets"), metadata=bearer(), timeout=10
    )
    return str(reply.run.run_id)


def bystander_appends(target: str, run_id: str, stop: threading.Event, errors: list[str]) -> list[float]:
    """Small authenticated appends, one at a time, until `stop`; their latencies in seconds."""
    latencies: list[float] = []
    with separate_channel(target) as channel:
        stub = event_stream_pb2_grpc.EventStreamStub(channel)
        while not stop.is_set():
            began = time.monotonic()
            try:
                stub.AppendEvents(
                    es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="bystander")]),
                    metadata=bearer(),
                    timeout=20,
                )
            except grpc.RpcError as error:
                errors.append(f"{error.code()}: {error.details()}")
            latencies.append(time.monotonic() - began)
            time.sleep(0.05)
    return latencies


def flood_without_token(target: str, connections: int, data: bytes) -> list[Code]:
    """FLOOD_CALLS concurrent big AppendEvents without a token on each of `connections` connections."""
    channels = [separate_channel(target) for _ in range(connections)]
    try:
        futures = [
            channel.unary_unary(APPEND).future(data, timeout=60) for channel in channels for _ in range(FLOOD_CALLS)
        ]
        codes = []
        for future in futures:
            try:
                future.result()
                codes.append(Code.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
        return codes
    finally:
        for channel in channels:
            channel.close()


# The most a flood of refused calls may add to the daemon's RSS (README, Limits and budgets).
UNAUTHENTICATED_FLOOD_MB = 200


@pytest.mark.parametrize("connections", [1, 4])
def test_unauthenticated_flood_is_refused_before_its_bodies_are_held(guarded: DaemonProcess, connections: int) -> None:
    with guarded.channel() as channel:
        run_id = create_run(channel)
    data = big_request(run_id)
    baseline = rss_mb(guarded.process.pid)
    stop, errors = threading.Event(), []
    latencies: list[float] = []
    bystander = threading.Thread(
        target=lambda: latencies.extend(bystander_appends(guarded.target, run_id, stop, errors))
    )
    bystander.start()
    try:
        with RssSampler(guarded.process.pid, interval=0.1) as rss:
            codes = flood_without_token(guarded.target, connections, data)
    finally:
        stop.set()
        bystander.join()
    assert set(codes) == {Code.UNAUTHENTICATED}, codes
    assert not errors, errors
    assert latencies, "the bystander made no call"
    grown = rss.peak_mb - baseline
    assert grown < UNAUTHENTICATED_FLOOD_MB, (
        f"RSS grew by {grown:.0f} MB under {connections * FLOOD_CALLS} refused {len(data) >> 20} MiB calls"
    )


def ingest_batch(run_id: str, batch_id: int, events: int = 7, payload_bytes: int = 1_000_000) -> bytes:
    """An IngestEventsRequest of `events` payloads just under the default payload limit."""
    payload = struct_pb2.Struct()
    payload.update({"blob": "y" * payload_bytes})
    return es.IngestEventsRequest(
        batch_id=batch_id,
        run_id=run_id,
        events=[event_pb2.EventInput(kind="flood", payload=payload) for _ in range(events)],
    ).SerializeToString()


def ingest_flood(target: str, run_id: str, streams: int, batches: int) -> list[int]:
    """`streams` IngestEvents streams (own connections) of `batches` big batches each; the error codes answered."""
    data = [ingest_batch(run_id, n) for n in range(1, 3)]
    codes: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        with separate_channel(target) as channel:
            call = channel.stream_stream(INGEST, response_deserializer=es.IngestEventsResponse.FromString)
            answers = call(iter(data[n % 2] for n in range(batches)), metadata=bearer(), timeout=120)
            found = [answer.error.code for answer in answers]
        with lock:
            codes.extend(found)

    threads = [threading.Thread(target=one) for _ in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


# What a write-token flood of refused IngestEvents batches may add to RSS, with the budget set to 32 MiB.
INGEST_FLOOD_MB = 800


def test_ingest_flood_to_a_cancelled_run_stays_within_the_budget(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"read-write {WRITE_TOKEN}\n")
    daemon = start_daemon(
        tmp_path, extra=["--auth-token-file", str(tokens), "--max-inflight-request-bytes", str(32 << 20)]
    )
    try:
        with daemon.channel() as channel:
            run_id = create_run(channel)
            run_ledger_pb2_grpc.RunLedgerStub(channel).CancelRun(
                rl.CancelRunRequest(run_id=run_id, reason="flood target"), metadata=bearer(), timeout=10
            )
            other = create_run(channel)
        baseline = rss_mb(daemon.process.pid)
        stop, errors = threading.Event(), []
        bystander = threading.Thread(target=bystander_appends, args=(daemon.target, other, stop, errors))
        bystander.start()
        try:
            with RssSampler(daemon.process.pid, interval=0.1) as rss:
                codes = ingest_flood(daemon.target, run_id, streams=4, batches=40)
        finally:
            stop.set()
            bystander.join()
        assert set(codes) == {Code.FAILED_PRECONDITION.value[0]} and len(codes) == 160, set(codes)
        assert not errors, errors
        grown = rss.peak_mb - baseline
        assert grown < INGEST_FLOOD_MB, f"RSS grew by {grown:.0f} MB under 4 streams of 7 MB batches"
        # Memory comes back once the flood is over (the daemon trims its heap every second).
        deadline = time.monotonic() + 10
        while rss_mb(daemon.process.pid) - baseline > 100 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rss_mb(daemon.process.pid) - baseline < 100, rss_mb(daemon.process.pid) - baseline
    finally:
        daemon.stop()


async def test_unary_requests_over_the_daemon_budget_are_resource_exhausted() -> None:
    limits = Limits(max_message_bytes=1 << 20)
    async with (
        running(limits=limits, max_inflight_request_bytes=2 << 20, db_timeout=5) as daemon,
        aio_channel(daemon) as ch,
    ):
        stubs = Stubs(ch)
        runs = [await stubs.create() for _ in range(3)]
        payload = struct_pb2.Struct()
        payload.update({"blob": "z" * 900_000})

        def big(run_id: str) -> es.AppendEventsRequest:
            return es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="k", payload=payload)])

        fault = Fault(daemon)
        fault.hang()  # admitted appends stay in flight, holding their bytes
        held = [asyncio.ensure_future(stubs.events.AppendEvents(big(run_id), timeout=10)) for run_id in runs[:2]]
        await asyncio.sleep(0.5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stubs.events.AppendEvents(big(runs[2]), timeout=10)
        assert info.value.code() == Code.RESOURCE_EXHAUSTED, info.value
        assert "not yet answered" in (info.value.details() or "")
        fault.recover()
        await asyncio.gather(*held, return_exceptions=True)
        # The budget came back: the same request is accepted now.
        reply = await stubs.events.AppendEvents(big(runs[2]), timeout=10)
        assert reply.last_seq == 1


async def test_a_budget_smaller_than_a_message_is_refused_at_start() -> None:
    with pytest.raises(StartupError, match="--max-inflight-request-bytes"):
        async with running(max_inflight_request_bytes=1 << 20):
            pass
