"""Operations: health that follows the database, bounded failures, reconnects, metrics, logs."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from grpc_health.v1 import health_pb2, health_pb2_grpc
from surrealdb import AsyncSurreal

from aivcs_ledgerd.methods import LEDGER_SERVICES
from aivcs_ledgerd.middleware.metrics import Metrics
from aivcs_ledgerd.process.operations import LIVENESS
from aivcs_ledgerd.store import Database, StoreError
from aivcs_ledgerd.store.database import Session
from aivcs_ledgerd.upkeep.reconnect import DatabaseProbe
from harness.daemon import free_port, start_daemon
from harness.data import SPEC, unique
from harness.faults import StoreFaults
from harness.inprocess import Stubs, channel, running
from harness.metrics import sample, scrape

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
Code = grpc.StatusCode
ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 0.2
DB_TIMEOUT = 0.5


async def expect_unavailable(call: Any, bound: float = DB_TIMEOUT + 1.0) -> None:
    """`call` fails with UNAVAILABLE (not a client deadline) within `bound` seconds."""
    began = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    elapsed = time.monotonic() - began
    assert info.value.code() == Code.UNAVAILABLE, f"{info.value.code()}: {info.value.details()}"
    assert elapsed < bound, f"UNAVAILABLE after {elapsed:.2f}s, more than {bound}s"


async def next_status(statuses: asyncio.Queue[int], within: float) -> int:
    return await asyncio.wait_for(statuses.get(), within)


async def check_all(health: health_pb2_grpc.HealthStub, expected: int) -> None:
    for name in ["", *LEDGER_SERVICES]:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == expected, name


# --- health follows the database ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fail", "hang"])
async def test_health_flips_with_the_database_and_rpcs_answer_unavailable_meanwhile(mode: str) -> None:
    async with running(health_interval=INTERVAL, db_timeout=DB_TIMEOUT) as daemon, channel(daemon) as ch:
        stubs = Stubs(ch)
        health = health_pb2_grpc.HealthStub(ch)
        run_id = await stubs.create()
        await stubs.append(run_id)

        statuses: asyncio.Queue[int] = asyncio.Queue()

        async def watch() -> None:
            async for reply in health.Watch(health_pb2.HealthCheckRequest(service="")):
                await statuses.put(reply.status)

        watcher = asyncio.create_task(watch())
        try:
            assert await next_status(statuses, 5) == SERVING
            fault = StoreFaults(daemon)
            began = time.monotonic()
            fault.fail() if mode == "fail" else fault.hang()

            assert await next_status(statuses, 5) == NOT_SERVING
            assert time.monotonic() - began < 3 * INTERVAL + 1
            await check_all(health, NOT_SERVING)
            live = await health.Check(health_pb2.HealthCheckRequest(service=LIVENESS), timeout=5)
            assert live.status == SERVING, "liveness does not follow the database"

            # Every kind of call answers UNAVAILABLE within the database timeout; none hangs.
            await expect_unavailable(stubs.runs.GetRun(rl.GetRunRequest(run_id=run_id), timeout=10))
            await expect_unavailable(stubs.runs.ListRuns(rl.ListRunsRequest(), timeout=10))
            await expect_unavailable(
                stubs.runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="ops-agent"), timeout=10)
            )
            await expect_unavailable(stubs.append(run_id))
            await expect_unavailable(stubs.append(run_id))  # a second write waits on no stuck lock
            await expect_unavailable(stubs.runs.CompleteRun(rl.CompleteRunRequest(run_id=run_id), timeout=10))
            reads = stubs.events.ReadEvents(es.ReadEventsRequest(run_id=run_id), timeout=10)
            await expect_unavailable(reads.read())

            fault.restore()
            assert await next_status(statuses, 5) == SERVING
            await check_all(health, SERVING)
            assert statuses.empty(), "Watch reports each change once"
        finally:
            watcher.cancel()

        # The ledger works again, and nothing acknowledged was lost.
        reply = await stubs.append(run_id, "after")
        assert reply.first_seq == 2
        run = await stubs.runs.GetRun(rl.GetRunRequest(run_id=run_id), timeout=5)
        assert run.run.total_events == 2


async def test_ingest_stream_answers_each_batch_unavailable_while_the_database_is_down() -> None:
    async with running(health_interval=INTERVAL, db_timeout=DB_TIMEOUT) as daemon, channel(daemon) as ch:
        stubs = Stubs(ch)
        run_id = await stubs.create()
        fault = StoreFaults(daemon)
        fault.fail()
        requests = [
            es.IngestEventsRequest(batch_id=n, run_id=run_id, events=[event_pb2.EventInput(kind="k")]) for n in (1, 2)
        ]
        began = time.monotonic()
        answers = [answer async for answer in stubs.events.IngestEvents(iter(requests), timeout=10)]
        assert time.monotonic() - began < DB_TIMEOUT + 1.5
        assert [a.batch_id for a in answers] == [1, 2]
        assert all(a.error.code == Code.UNAVAILABLE.value[0] for a in answers)
        fault.restore()
        answers = [answer async for answer in stubs.events.IngestEvents(iter(requests), timeout=10)]
        assert [(a.first_seq, a.last_seq) for a in answers] == [(1, 1), (2, 2)]


async def test_a_lost_connection_is_reopened_by_the_health_probe() -> None:
    db = await Database.open("mem://", "aivcs", "ledger")
    probe = DatabaseProbe(db, reconnect=True)
    try:
        await probe()
        await db._connection.close()  # the engine behind the handle is gone
        with pytest.raises(StoreError):
            await probe()
        for _ in range(50):
            if probe.reconnects:
                break
            await asyncio.sleep(0.05)
        assert probe.reconnects == 1
        await probe()  # the same handle answers again, on a new connection
    finally:
        await probe.close()
        await db.close()


async def test_a_session_without_namespace_counts_as_down() -> None:
    """A connection whose session is not the one the handle was set up with is not healthy."""
    connection = AsyncSurreal("mem://")
    await connection.connect()
    await connection.use("aivcs", "ledger")
    db = Database(connection, "mem://", 5.0, Session("other", "ledger"))
    probe = DatabaseProbe(db, reconnect=False)
    try:
        with pytest.raises(StoreError, match="namespace"):
            await probe()
    finally:
        await probe.close()
        await db.close()


# --- metrics ----------------------------------------------------------------------------------------


async def test_metrics_endpoint_counts_the_calls_made() -> None:
    async with running(metrics_listen="127.0.0.1:0") as daemon, channel(daemon) as ch:
        stubs = Stubs(ch)
        run_id = await stubs.create()
        await stubs.append(run_id, "a", "b", "c")
        await stubs.append(run_id, "d")
        with pytest.raises(grpc.aio.AioRpcError):
            await stubs.runs.GetRun(rl.GetRunRequest(run_id=unique("missing")), timeout=5)
        requests = [es.IngestEventsRequest(batch_id=1, run_id=run_id, events=[event_pb2.EventInput(kind="i")] * 5)]
        assert len([a async for a in stubs.events.IngestEvents(iter(requests), timeout=5)]) == 1
        reads = [r async for r in stubs.events.ReadEvents(es.ReadEventsRequest(run_id=run_id), timeout=5)]
        assert sum(len(r.events) for r in reads) == 9
        assert daemon.ops is not None and daemon.ops.metrics_endpoint is not None
        samples = await asyncio.to_thread(scrape, daemon.ops.metrics_endpoint.port)

    runs, events = LEDGER_SERVICES[0], LEDGER_SERVICES[1]
    handled = "grpc_server_handled_total"
    assert sample(samples, handled, grpc_service=runs, grpc_method="CreateRun", grpc_code="OK") == 1
    assert sample(samples, handled, grpc_service=events, grpc_method="AppendEvents", grpc_code="OK") == 2
    assert sample(samples, handled, grpc_method="GetRun", grpc_code="NOT_FOUND") == 1
    assert sample(samples, handled, grpc_method="IngestEvents", grpc_type="bidi_stream", grpc_code="OK") == 1
    assert sample(samples, handled, grpc_method="ReadEvents", grpc_type="server_stream", grpc_code="OK") == 1
    assert sample(samples, "grpc_server_started_total", grpc_method="AppendEvents") == 2
    assert sample(samples, "grpc_server_handling_seconds_count", grpc_method="AppendEvents") == 2
    assert sample(samples, "grpc_server_msg_received_total", grpc_method="IngestEvents") == 1
    batch = "aivcs_ledger_append_batch_events"
    assert sample(samples, batch + "_count", grpc_method="AppendEvents") == 2
    assert sample(samples, batch + "_sum", grpc_method="AppendEvents") == 4
    assert sample(samples, batch + "_sum", grpc_method="IngestEvents") == 5
    assert sample(samples, "aivcs_ledger_db_round_trip_seconds_count") >= 5
    assert sample(samples, "aivcs_ledger_db_round_trips_in_flight") == 0
    assert sample(samples, "aivcs_ledger_active_runs") == 0
    assert sample(samples, "aivcs_ledger_active_streams", grpc_method="ReadEvents") == 0
    assert sample(samples, "aivcs_ledger_serving") == 1


async def test_database_errors_are_counted() -> None:
    metrics = Metrics()
    db = await Database.open("mem://")
    try:
        metrics.instrument(db)
        await db.query("RETURN 1")
        await db._connection.close()
        with pytest.raises(StoreError):
            await db.query("RETURN 1")
    finally:
        await db.close()
    value = metrics.registry.get_sample_value
    assert value("aivcs_ledger_db_errors_total", {"error": "StoreUnavailable"}) == 1
    assert value("aivcs_ledger_db_round_trip_seconds_count") == 2


# --- the command line: flags, JSON logs, metrics port -------------------------------------------------


def test_daemon_flags_json_logs_and_metrics_port(tmp_path: Path) -> None:
    metrics_port = free_port()
    daemon = start_daemon(
        tmp_path,
        extra=["--log-json", "--health-interval", "0.5"],
        env={"AIVCS_LEDGER_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"},
    )
    secret = "do-not-log-this-payload-value"
    try:
        import grpc as sync_grpc
        from aivcs.ledger.v1 import event_stream_pb2_grpc, run_ledger_pb2_grpc

        with sync_grpc.insecure_channel(daemon.target) as ch:
            runs = run_ledger_pb2_grpc.RunLedgerStub(ch)
            events = event_stream_pb2_grpc.EventStreamStub(ch)
            run_id = runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="log-agent")).run.run_id
            event = event_pb2.EventInput(kind="tool_call")
            event.payload.update({"secret": secret})
            events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=[event]))
            runs.CompleteRun(rl.CompleteRunRequest(run_id=run_id))
            with pytest.raises(sync_grpc.RpcError):
                events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=[event]))
        # The interceptor counts a call once its status is sent: the client may see it first.
        deadline = time.monotonic() + 10
        while (
            refusals := sample(
                scrape(metrics_port),
                "grpc_server_handled_total",
                grpc_method="AppendEvents",
                grpc_code="FAILED_PRECONDITION",
            )
        ) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refusals == 1
    finally:
        assert daemon.stop() == 0
    lines = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
    messages = [line["message"] for line in lines]
    assert any(m.startswith("listening on") for m in messages)
    assert any(m.startswith("metrics on") for m in messages)
    assert messages[-1] == "stopped"
    by_message = {line["message"].split(":")[0]: line for line in lines}
    assert by_message["run created"]["run_id"] == run_id
    assert by_message["run completed"]["run_id"] == run_id
    refused = [line for line in lines if line.get("code") == "FAILED_PRECONDITION"]
    assert len(refused) == 1 and refused[0]["run_id"] == run_id and refused[0]["level"] == "INFO"
    assert refused[0]["method"] == "AppendEvents"
    assert secret not in daemon.log()


def test_bad_operations_flags_are_refused_at_start(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("superuser secret-token\n")
    with pytest.raises(RuntimeError, match="unknown role 'superuser'"):
        start_daemon(tmp_path, extra=["--auth-token-file", str(tokens)], timeout=20)
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate")
    with pytest.raises(RuntimeError, match="--tls-cert and --tls-key go together"):
        start_daemon(tmp_path, extra=["--tls-cert", str(cert)], timeout=20)
