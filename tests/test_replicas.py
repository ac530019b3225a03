"""Several daemon replicas on one SurrealDB server (the stand-in, harness/surrealdb_stand_in.py) act as one ledger."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
import yaml
from aivcs.ledger.v1 import event_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import release_registry_pb2 as rr
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1.event_stream_pb2_grpc import EventStreamStub
from aivcs.ledger.v1.release_registry_pb2_grpc import ReleaseRegistryStub
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from harness.daemon import assert_serving, free_port, start_daemon
from harness.metrics import sample, scrape
from harness.replicas import (
    Tally,
    check_stored,
    create_runs,
    longest_pause,
    owner_of,
    start_replicas,
    stop_replicas,
    subscription_lag,
    write,
)
from harness.surrealdb_stand_in import stand_in_server


@pytest.mark.parametrize("engine", ["mem://", "surrealkv"])
def test_replicas_started_together_on_an_empty_database_all_serve(tmp_path: Path, engine: str) -> None:
    for attempt in range(3):
        folder = tmp_path / f"attempt-{attempt}"
        folder.mkdir()
        engine_url = f"surrealkv://{folder / 'kv'}" if engine == "surrealkv" else engine
        with stand_in_server(folder, engine_url) as server:
            replicas = start_replicas(folder, server.url, 3)
            try:
                for replica in replicas:
                    assert_serving(replica)
            finally:
                stop_replicas(replicas)


@pytest.mark.parametrize("engine", ["mem://", "surrealkv"])
def test_writers_on_shared_runs_through_three_replicas_lose_and_misplace_nothing(tmp_path: Path, engine: str) -> None:
    engine_url = f"surrealkv://{tmp_path / 'kv'}" if engine == "surrealkv" else engine
    with stand_in_server(tmp_path, engine_url) as server:
        replicas = start_replicas(tmp_path, server.url, 3)
        try:
            targets = [r.target for r in replicas]
            run_ids = create_runs(targets[0], 2)
            tally = write(targets, run_ids, writers=12, appends_each=40)
            assert not tally.failures, tally.failures[:5]
            assert len(tally.acknowledged) == 12 * 40
            assert check_stored(targets[1], run_ids, tally) == []
            assert tally.refused <= 0.01 * tally.attempts, (tally.refused, tally.attempts)
        finally:
            stop_replicas(replicas)


def _background_writers(
    targets: list[str], run_ids: list[str], writers: int = 6
) -> tuple[threading.Thread, threading.Event, Tally]:
    stop, tally = threading.Event(), Tally()
    # Writers retry for up to 90 s, as a patient client: on a loaded machine a restart of the
    # database server alone (a new process opening SurrealKV twice) can take tens of seconds.
    thread = threading.Thread(
        target=write, args=(targets, run_ids, writers), kwargs={"until": stop, "tally": tally, "retry_for": 90.0}
    )
    thread.start()
    return thread, stop, tally


def _wait_for_acks(tally: Tally, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    start = len(tally.ack_times)
    while len(tally.ack_times) < start + count:
        assert time.monotonic() < deadline, f"writers made no progress: {tally.failures[:3]}"
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["sigkill", "sigterm", "sigstop"])
def test_owner_lost_to_a_signal_hands_its_runs_over_without_losing_or_doubling(tmp_path: Path, how: str) -> None:
    """SIGKILL: another replica takes over once the lease expires. SIGTERM: at once, the leases are released.

    SIGSTOP past the lease, then SIGCONT: the paused owner is fenced and writes nothing for the run it lost.
    """
    lease = 10.0 if how == "sigterm" else 3.0  # a long lease shows that SIGTERM does not wait for it
    with stand_in_server(tmp_path) as server:
        replicas = start_replicas(tmp_path, server.url, 3, extra=["--lease-seconds", str(lease)])
        try:
            targets = [r.target for r in replicas]
            run_ids = create_runs(targets[0], 1)
            thread, stop, tally = _background_writers(targets, run_ids)
            try:
                _wait_for_acks(tally, 60)
                owner = owner_of(replicas, run_ids[0])
                hit = time.monotonic()
                if how == "sigkill":
                    owner.process.send_signal(signal.SIGKILL)
                elif how == "sigterm":
                    owner.process.send_signal(signal.SIGTERM)
                else:
                    owner.process.send_signal(signal.SIGSTOP)
                    time.sleep(lease + 2)
                    _wait_for_acks(tally, 30)  # the others took over while it was stopped
                    owner.process.send_signal(signal.SIGCONT)
                    _wait_for_acks(tally, 60)  # it resumed and forwards to the new owner
                _wait_for_acks(tally, 60)
            finally:
                stop.set()
                thread.join()
            assert not tally.failures, tally.failures[:5]
            pause = longest_pause(tally, hit)
            print(f"{how}: longest pause without an acknowledgement {pause:.2f}s (lease {lease}s)")
            if how == "sigterm":
                assert pause < lease / 2, f"handoff took {pause:.2f}s"
            elif how == "sigkill":
                assert pause < lease + 3, f"takeover took {pause:.2f}s (lease {lease}s)"
            survivor = next(r for r in replicas if r is not owner)
            assert check_stored(survivor.target, run_ids, tally) == []
            if how == "sigstop":
                assert "lost ownership of run:" in owner.log() or "is owned by another replica" in owner.log()
        finally:
            stop_replicas([r for r in replicas if r.process.poll() is None])


def test_restart_of_the_database_server_loses_and_doubles_nothing(tmp_path: Path) -> None:
    with stand_in_server(tmp_path, f"surrealkv://{tmp_path / 'kv'}") as server:
        replicas = start_replicas(tmp_path, server.url, 3, extra=["--health-interval", "0.5"])
        try:
            targets = [r.target for r in replicas]
            run_ids = create_runs(targets[0], 2)
            thread, stop, tally = _background_writers(targets, run_ids)
            try:
                _wait_for_acks(tally, 60)
                restarted = time.monotonic()
                server.restart()
                _wait_for_acks(tally, 60, timeout=90)
            finally:
                stop.set()
                thread.join()
            assert not tally.failures, tally.failures[:5]
            assert check_stored(targets[0], run_ids, tally) == []
            print(f"longest pause after the restart: {longest_pause(tally, restarted):.2f}s")
        finally:
            stop_replicas(replicas)


def test_promotions_and_rollbacks_of_one_agent_through_three_replicas_form_one_history(tmp_path: Path) -> None:
    """Concurrent promotes and rollbacks through every replica: sequences 1..n, each at the place it was told."""
    with stand_in_server(tmp_path) as server:
        replicas = start_replicas(tmp_path, server.url, 3)
        try:
            agent = f"agent-{uuid.uuid4().hex[:8]}"
            told: dict[int, tuple[str, int | None]] = {}
            lock = threading.Lock()
            errors: list[str] = []

            def release_writer(w: int) -> None:
                with grpc.insecure_channel(replicas[w % 3].target) as channel:
                    stub = ReleaseRegistryStub(channel)
                    for i in range(8):
                        label = f"w{w}-{i}"
                        try:
                            if i % 4 == 3:
                                answer = stub.Rollback(
                                    rr.RollbackRequest(agent_name=agent, promoted_by="ci", notes=label), timeout=30
                                ).release
                            else:
                                answer = stub.Promote(
                                    rr.PromoteRequest(
                                        agent_name=agent,
                                        spec_digest=f"{w:032x}{i:032x}",
                                        promoted_by="ci",
                                        version_label=label,
                                        notes=label,
                                    ),
                                    timeout=30,
                                ).release
                        except grpc.RpcError as error:
                            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:  # rollback with nothing before
                                continue
                            with lock:
                                errors.append(f"{label}: {error.code()} {error.details()}")
                            continue
                        with lock:
                            assert answer.sequence not in told, f"sequence {answer.sequence} acknowledged twice"
                            told[answer.sequence] = (
                                label,
                                answer.rollback_of if answer.HasField("rollback_of") else None,
                            )

            threads = [threading.Thread(target=release_writer, args=(w,)) for w in range(9)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not errors, errors[:5]
            with grpc.insecure_channel(replicas[1].target) as channel:
                history = list(
                    ReleaseRegistryStub(channel)
                    .GetHistory(rr.GetHistoryRequest(agent_name=agent, page_size=1000), timeout=30)
                    .releases
                )
            stored = {r.sequence: (r.notes, r.rollback_of if r.HasField("rollback_of") else None) for r in history}
            assert sorted(stored) == list(range(1, len(stored) + 1))
            assert stored == told
        finally:
            stop_replicas(replicas)


def test_subscribers_on_every_replica_get_events_appended_through_another_promptly(tmp_path: Path) -> None:
    """A steady trickle through one replica; a subscriber on each replica (the owner's and two others)."""
    with stand_in_server(tmp_path) as server:
        replicas = start_replicas(tmp_path, server.url, 3)
        try:
            targets = [r.target for r in replicas]
            lag = subscription_lag(targets[0], targets, events=100)
            print(
                f"subscription lag after the acknowledgement: median {lag.median * 1000:.1f} ms, "
                f"worst {lag.worst * 1000:.1f} ms"
            )
            # The contract's figures are median 100 ms and worst 500 ms; this loaded CI machine gets twice
            # the margin. Polling storage (what a replica not writing the run did before) gives ~0.5 s median.
            assert lag.median <= 0.2
            assert lag.worst <= 1.0
        finally:
            stop_replicas(replicas)


def test_remote_deployment_manifest_advertises_the_pod_ip_to_the_other_replicas() -> None:
    """Replicas forward to each other's advertised address: in Kubernetes, the pod IP from the downward API."""
    root = Path(__file__).resolve().parent.parent
    documents = [
        doc
        for path in sorted((root / "deploy" / "kubernetes").rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    remote = [
        doc
        for doc in documents
        if doc["kind"] == "Deployment"
        and any(
            arg.startswith(("ws://", "wss://"))
            for c in doc["spec"]["template"]["spec"]["containers"]
            for arg in c["args"]
        )
    ]
    assert remote, "no remote-database Deployment found"
    for deployment in remote:
        [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "ledgerd"]
        env = {e["name"]: e for e in container["env"]}
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        names = [e["name"] for e in container["env"]]
        assert names.index("POD_IP") < names.index("AIVCS_LEDGER_ADVERTISE_ADDRESS")  # $(POD_IP) expands
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        assert env["AIVCS_LEDGER_ADVERTISE_ADDRESS"]["value"] == f"$(POD_IP):{port}"


def test_metrics_count_ownership_changes_and_forwarded_calls(tmp_path: Path) -> None:
    with stand_in_server(tmp_path) as server:
        ports = [free_port(), free_port()]
        first, second = (
            start_daemon(tmp_path, server.url, env={"AIVCS_LEDGER_METRICS_LISTEN": f"127.0.0.1:{port}"})
            for port in ports
        )
        try:
            [run_id] = create_runs(first.target, 1)
            for target, count in ((first.target, 1), (second.target, 5)):
                with grpc.insecure_channel(target) as channel:
                    stub = EventStreamStub(channel)
                    for _ in range(count):
                        request = es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="m")])
                        stub.AppendEvents(request, timeout=10)
            assert sample(scrape(ports[0]), "aivcs_ledger_ownership_changes_total", change="acquired") == 1
            forwarded = scrape(ports[1])
            assert sample(forwarded, "aivcs_ledger_forwarded_calls_total", method="AppendEvents", outcome="ok") == 5
            assert sample(forwarded, "aivcs_ledger_ownership_changes_total", change="acquired") == 0
            assert first.stop() == 0  # drains: releases the lease, so the second takes it over at once
            with grpc.insecure_channel(second.target) as channel:
                request = es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="m")])
                assert EventStreamStub(channel).AppendEvents(request, timeout=10).first_seq == 7
            taken = scrape(ports[1])
            assert sample(taken, "aivcs_ledger_ownership_changes_total", change="taken_over") == 1
        finally:
            first.stop()
            second.stop()


def test_forwarded_writes_carry_the_callers_token_to_the_owner(tmp_path: Path) -> None:
    """The owner checks the caller's token: one only the forwarding replica knows is refused by the owner."""
    owner_tokens, other_tokens = tmp_path / "owner-tokens", tmp_path / "other-tokens"
    owner_tokens.write_text("read-write shared-token\n")
    other_tokens.write_text("read-write shared-token\nread-write only-other-knows\n")
    with stand_in_server(tmp_path) as server:
        owner = start_daemon(tmp_path, server.url, extra=["--auth-token-file", str(owner_tokens)])
        other = start_daemon(tmp_path, server.url, extra=["--auth-token-file", str(other_tokens)])
        try:

            def append(target: str, token: str, run_id: str) -> int:
                with grpc.insecure_channel(target) as channel:
                    request = es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="t")])
                    reply = EventStreamStub(channel).AppendEvents(
                        request, metadata=[("authorization", f"Bearer {token}")], timeout=10
                    )
                    return reply.first_seq

            with grpc.insecure_channel(owner.target) as channel:
                run_id = (
                    RunLedgerStub(channel)
                    .CreateRun(
                        rl.CreateRunRequest(spec_digest="e" * 64, agent_name="tokens"),
                        metadata=[("authorization", "Bearer shared-token")],
                        timeout=10,
                    )
                    .run.run_id
                )
            assert append(owner.target, "shared-token", run_id) == 1  # the owner takes the lease
            assert append(other.target, "shared-token", run_id) == 2  # forwarded with the caller's token
            with pytest.raises(grpc.RpcError) as refused:
                append(other.target, "only-other-knows", run_id)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert append(owner.target, "shared-token", run_id) == 3  # nothing was written for the refused call
        finally:
            owner.stop()
            other.stop()


def test_ingest_batches_and_finishing_a_run_through_a_replica_that_does_not_own_it(tmp_path: Path) -> None:
    with stand_in_server(tmp_path) as server:
        owner, other = start_replicas(tmp_path, server.url, 2)
        try:
            [run_id] = create_runs(owner.target, 1)
            with grpc.insecure_channel(owner.target) as channel:
                request = es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="first")])
                assert EventStreamStub(channel).AppendEvents(request, timeout=10).first_seq == 1
            with grpc.insecure_channel(other.target) as channel:
                events, runs = EventStreamStub(channel), RunLedgerStub(channel)
                batches = [
                    es.IngestEventsRequest(
                        batch_id=b,
                        run_id=run_id,
                        events=[event_pb2.EventInput(kind=f"b{b}")] * 3,
                        idempotency_key=f"ingest-{b}",
                    )
                    for b in range(20)
                ]
                answers = list(events.IngestEvents(iter(batches), timeout=30))
                assert [(a.batch_id, a.first_seq, a.last_seq) for a in answers] == [
                    (b, 2 + 3 * b, 4 + 3 * b) for b in range(20)
                ]
                assert not any(a.HasField("error") for a in answers)
                # The owner's refusal comes back with its own code: a wrong expected count.
                with pytest.raises(grpc.RpcError) as refused:
                    runs.CompleteRun(rl.CompleteRunRequest(run_id=run_id, expected_total_events=5), timeout=10)
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "61" in (refused.value.details() or "")
                # ... and with its error details, passed on unchanged by the replica that forwarded the call.
                assert reason_and_metadata(refused.value) == (
                    "ERROR_REASON_EVENT_COUNT_MISMATCH",
                    {"run_id": run_id, "total_events": "61", "expected_total_events": "5"},
                )
                done = runs.CompleteRun(rl.CompleteRunRequest(run_id=run_id, expected_total_events=61), timeout=10)
                assert done.run.total_events == 61
                with pytest.raises(grpc.RpcError) as terminal:
                    events.AppendEvents(
                        es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="late")]), timeout=10
                    )
                assert terminal.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert reason_and_metadata(terminal.value)[0] == "ERROR_REASON_RUN_TERMINAL"
                assert runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id), timeout=30).ok
            assert "took ownership of run:" not in other.log()  # every write was the owner's
        finally:
            stop_replicas([owner, other])


def reason_and_metadata(error: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """The google.rpc.ErrorInfo of a refusal, from its grpc-status-details-bin trailer."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the refusal carries no google.rpc.Status"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info.reason, dict(info.metadata)
