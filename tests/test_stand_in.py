"""The daemon on `--db ws://...`, against the stand-in SurrealDB server (harness/surrealdb_stand_in.py)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2, run_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1.event_stream_pb2_grpc import EventStreamStub
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub

from harness.daemon import start_daemon
from harness.surrealdb_stand_in import stand_in_server

SPEC = "c" * 64


def write_and_read(target: str, events_per_batch: int = 3, batches: int = 4) -> tuple[str, list[event_pb2.Event]]:
    with grpc.insecure_channel(target) as channel:
        runs, events = RunLedgerStub(channel), EventStreamStub(channel)
        run_id = f"run-{uuid.uuid4()}"
        runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="stand-in", run_id=run_id), timeout=10)
        for b in range(batches):
            batch = [event_pb2.EventInput(kind=f"b{b}e{e}") for e in range(events_per_batch)]
            reply = events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=batch), timeout=10)
            assert (reply.first_seq, reply.last_seq) == (b * events_per_batch + 1, (b + 1) * events_per_batch)
        stored = [e for m in events.ReadEvents(es.ReadEventsRequest(run_id=run_id), timeout=10) for e in m.events]
        return run_id, stored


@pytest.mark.parametrize("engine", ["mem://", "surrealkv"])
def test_daemon_on_ws_serves_runs_appends_and_reads(tmp_path: Path, engine: str) -> None:
    engine_url = f"surrealkv://{tmp_path / 'kv'}" if engine == "surrealkv" else engine
    with stand_in_server(tmp_path, engine_url) as server:
        assert server.url.startswith("ws://127.0.0.1:")
        daemon = start_daemon(tmp_path, db=server.url)
        try:
            run_id, stored = write_and_read(daemon.target)
            assert [e.seq for e in stored] == list(range(1, 13))
            assert [e.kind for e in stored] == [f"b{b}e{e}" for b in range(4) for e in range(3)]
            with daemon.channel() as channel:
                run = RunLedgerStub(channel).GetRun(rl.GetRunRequest(run_id=run_id), timeout=10).run
                assert run.total_events == 12
                assert run.status == run_pb2.RUN_STATUS_RUNNING
        finally:
            assert daemon.stop() == 0, daemon.log()


def test_daemon_survives_a_restart_of_the_server_and_keeps_durable_data(tmp_path: Path) -> None:
    with stand_in_server(tmp_path, f"surrealkv://{tmp_path / 'kv'}") as server:
        daemon = start_daemon(tmp_path, db=server.url)
        try:
            run_id, _ = write_and_read(daemon.target)
            server.restart()
            with daemon.channel() as channel:
                events = EventStreamStub(channel)
                answer = None
                for _ in range(100):
                    try:
                        answer = events.AppendEvents(
                            es.AppendEventsRequest(
                                run_id=run_id, events=[event_pb2.EventInput(kind="after")], idempotency_key="k1"
                            ),
                            timeout=10,
                        )
                        break
                    except grpc.RpcError as error:
                        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                        time.sleep(0.1)
                assert answer is not None and answer.first_seq == 13
                stored = [e for m in events.ReadEvents(es.ReadEventsRequest(run_id=run_id)) for e in m.events]
                assert [e.seq for e in stored] == list(range(1, 14))
        finally:
            daemon.stop()
