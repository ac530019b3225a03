"""The daemon as a process: health, reflection, schema on restart, signals, flags and environment."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import grpc
import pytest
from aivcs.ledger.v1 import event_pb2, event_stream_pb2, event_stream_pb2_grpc, run_ledger_pb2, run_ledger_pb2_grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from aivcs_ledgerd.process import event_loop
from aivcs_ledgerd.process.cli import command
from aivcs_ledgerd.store import Database
from harness.daemon import free_port, run_to_exit, start_daemon

LEDGER_SERVICES = ["aivcs.ledger.v1.RunLedger", "aivcs.ledger.v1.EventStream", "aivcs.ledger.v1.ReleaseRegistry"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SEED_TABLES = {"runs", "run_events", "releases", "commits", "branches"}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any AIVCS_LEDGER_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIVCS_LEDGER_")}
    return env | extra


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `aivcs-ledgerd ARGS` to completion (for invocations that must not start)."""
    return run_to_exit(args, cwd, env or clean_env())


def health_check(target: str, service: str = "") -> Any:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)


# --- health and discovery ---------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", *LEDGER_SERVICES])
def test_health_check_is_serving(channel: grpc.Channel, service: str) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert reply.status == SERVING


def test_health_check_of_an_unknown_service_is_not_found(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("service", ["", *LEDGER_SERVICES])
def test_health_watch_streams_serving(channel: grpc.Channel, service: str) -> None:
    replies = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service), timeout=10)
    try:
        assert next(replies).status == SERVING
    finally:
        replies.cancel()


def test_reflection_lists_the_ledger_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {service.name for service in reply.list_services_response.service}
    assert {*LEDGER_SERVICES, "grpc.health.v1.Health"} <= names


def test_reflection_describes_every_rpc(channel: grpc.Channel) -> None:
    """What grpcurl does: fetch the file descriptors behind a service name and read its methods."""
    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    methods = {name: set(pool.FindServiceByName(name).methods_by_name) for name in LEDGER_SERVICES}
    assert {"CreateRun", "GetRun", "ListRuns", "CompleteRun", "FailRun", "CancelRun"} <= methods[LEDGER_SERVICES[0]]
    assert {"AppendEvents", "IngestEvents", "ReadEvents", "SubscribeEvents"} <= methods[LEDGER_SERVICES[1]]
    assert {"Promote", "Rollback", "GetCurrent", "GetHistory"} <= methods[LEDGER_SERVICES[2]]


# --- schema ---------------------------------------------------------------------------------------------


async def schema_of(url: str) -> dict[str, Any]:
    """Every table's definition and its fields, indexes and events, as the database reports them."""
    db = await Database.open(url)
    try:
        (info,) = await db.query("INFO FOR DB")
        schema = {"db": info}
        for table in sorted(info["tables"]):
            (schema[table],) = await db.query(f"INFO FOR TABLE {table}")
        return schema
    finally:
        await db.close()


async def test_schema_init_is_idempotent_across_restarts(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'ledger'}"
    first = start_daemon(tmp_path, db=url)
    assert first.stop() == 0, first.log()
    db = await Database.open(url)
    try:
        await db.query("CREATE probe:marker SET note = 'kept'")
    finally:
        await db.close()
    before = await schema_of(url)
    assert set(before["db"]["tables"]) >= SEED_TABLES
    assert "idx_run_id" in before["runs"]["indexes"]
    assert "idx_run_id_seq" not in before["run_events"]["indexes"], "the record id serves what it did"

    second = start_daemon(tmp_path, db=url)
    assert health_check(second.target, LEDGER_SERVICES[0]).status == SERVING
    intruder = run_cli(["--listen", "127.0.0.1:0", "--db", url], tmp_path)
    assert intruder.returncode != 0, "one daemon per data folder"
    assert "lock" in intruder.stderr
    assert second.stop() == 0, second.log()
    after = await schema_of(url)
    assert after == before

    db = await Database.open(url)
    try:
        (rows,) = await db.query("SELECT VALUE note FROM probe:marker")
    finally:
        await db.close()
    assert rows == ["kept"], "a restart on the same folder keeps what was stored"


# --- signals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_reports_not_serving_and_exits_zero(tmp_path: Path, sig: signal.Signals) -> None:
    daemon = start_daemon(tmp_path, extra=["--grace-period", "2"])
    with daemon.channel() as channel:
        replies = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(replies).status == SERVING
        daemon.process.send_signal(sig)
        statuses: list[int] = []
        with contextlib.suppress(grpc.RpcError):  # the server ends the Watch when it stops
            statuses.extend(reply.status for reply in replies)
    assert daemon.process.wait(timeout=30) == 0, daemon.log()
    assert statuses[:1] == [NOT_SERVING], "a Watch open at the signal sees NOT_SERVING while the daemon drains"
    assert "stopped" in daemon.log()


# --- flags and environment ----------------------------------------------------------------------------------


def test_unusable_db_scheme_is_refused_naming_it(tmp_path: Path) -> None:
    result = run_cli(["--listen", "127.0.0.1:0", "--db", "redis://x"], tmp_path)
    assert result.returncode != 0
    assert "'redis'" in result.stderr
    assert "--db" in result.stderr


def test_listen_on_a_taken_port_is_refused_naming_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(["--listen", f"127.0.0.1:{port}", "--db", "mem://"], tmp_path)
    assert result.returncode != 0
    assert "--listen" in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize("listen", ["127.0.0.1:99999", "127.0.0.1", "127.0.0.1:grpc", "127.0.0.1:-1"])
def test_malformed_listen_is_refused_naming_the_flag(tmp_path: Path, listen: str) -> None:
    result = run_cli(["--listen", listen, "--db", "mem://"], tmp_path)
    assert result.returncode != 0
    assert "--listen" in result.stderr
    assert listen in result.stderr


def test_help_names_every_flag_and_its_environment_variable(tmp_path: Path) -> None:
    result = run_cli(["--help"], tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    options = [p for p in command.params if isinstance(p, click.Option) and p.expose_value]
    assert {"--listen", "--db", "--db-namespace", "--db-database", "--db-user", "--db-password"} <= {
        opt for p in options for opt in p.opts
    }
    for option in options:
        assert isinstance(option.envvar, str), f"{option.opts[0]} has no environment variable"
        assert option.envvar == "AIVCS_LEDGER_" + option.opts[0].removeprefix("--").replace("-", "_").upper()
        for flag in [*option.opts, *option.secondary_opts]:
            assert flag in text
        assert f"env var: {option.envvar}" in text


def test_environment_stands_in_for_flags_and_the_default_db_is_under_the_working_directory(tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "aivcs_ledgerd"],
            cwd=tmp_path,
            env=clean_env(AIVCS_LEDGER_LISTEN=target, AIVCS_LEDGER_GRACE_PERIOD="1"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if health_check(target).status == SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert (tmp_path / "aivcs-ledger-data").is_dir(), "with no --db the data lives under the working directory"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()


def test_db_environment_variable_is_read(tmp_path: Path) -> None:
    result = run_cli(["--listen", "127.0.0.1:0"], tmp_path, clean_env(AIVCS_LEDGER_DB="redis://from-env"))
    assert result.returncode != 0
    assert "redis://from-env" in result.stderr


def test_a_flag_wins_over_its_environment_variable(tmp_path: Path) -> None:
    result = run_cli(["--listen", "127.0.0.1:99999"], tmp_path, clean_env(AIVCS_LEDGER_LISTEN="127.0.0.1:0"))
    assert result.returncode != 0
    assert "127.0.0.1:99999" in result.stderr


def test_readme_configuration_table_lists_exactly_the_flags() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    documented = {(tuple(re.findall(r"`(--[\w-]+)`", flags)), env.strip().strip("`")) for flags, env in rows}
    options = [p for p in command.params if isinstance(p, click.Option) and p.expose_value]
    actual = {(tuple([*p.opts, *p.secondary_opts]), p.envvar) for p in options}
    assert documented == actual, "README's Configuration table differs from `aivcs-ledgerd --help`"


# --- the event loop ------------------------------------------------------------------------------------------


def _append_concurrently_and_read(target: str, run_id: str, calls: int) -> list[int]:
    """`calls` one-event AppendEvents on one run, all in flight at once; the seqs a ReadEvents returns."""
    with grpc.insecure_channel(target) as channel:
        run_ledger_pb2_grpc.RunLedgerStub(channel).CreateRun(
            run_ledger_pb2.CreateRunRequest(run_id=run_id, spec_digest="a" * 64, agent_name="agent"), timeout=10
        )
        events = event_stream_pb2_grpc.EventStreamStub(channel)
        futures = []
        for i in range(calls):
            event = event_pb2.EventInput(kind="step")
            event.payload.update({"i": i})
            request = event_stream_pb2.AppendEventsRequest(run_id=run_id, events=[event])
            futures.append(events.AppendEvents.future(request, timeout=30))
        answered = sorted(future.result().first_seq for future in futures)
        assert answered == list(range(1, calls + 1)), "every append got its own seq, with no gap"
        read = events.ReadEvents(event_stream_pb2.ReadEventsRequest(run_id=run_id), timeout=30)
        return [event.seq for response in read for event in response.events]


@pytest.mark.parametrize(
    ("setting", "loop"),
    [({}, "uvloop"), ({"AIVCS_LEDGER_EVENT_LOOP": "asyncio"}, "asyncio")],
    ids=["default-is-uvloop", "standard-loop-by-environment"],
)
def test_the_daemon_serves_the_same_ledger_on_either_loop_and_names_it(
    tmp_path: Path, setting: dict[str, str], loop: str
) -> None:
    daemon = start_daemon(tmp_path, env=clean_env(**setting))
    try:
        assert _append_concurrently_and_read(daemon.target, f"on-{loop}", 64) == list(range(1, 65))
        assert re.search(rf"listening on .*, event loop {loop}\b", daemon.log()), daemon.log()
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_an_unknown_event_loop_is_refused_naming_the_flag(tmp_path: Path) -> None:
    result = run_cli(["--listen", "127.0.0.1:0", "--db", "mem://", "--event-loop", "tokio"], tmp_path)
    assert result.returncode == 2
    assert "--event-loop" in result.stderr
    assert "'tokio'" in result.stderr


def test_without_uvloop_auto_falls_back_and_asking_for_it_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_loop, "have_uvloop", lambda: False)
    assert event_loop.loop_factory("auto") is None
    assert event_loop.loop_factory("asyncio") is None
    with pytest.raises(event_loop.EventLoopUnavailable, match="uvloop is not installed"):
        event_loop.loop_factory("uvloop")
    monkeypatch.undo()
    factory = event_loop.loop_factory("auto")
    assert factory is not None
    assert event_loop.run(_loop_name(), factory) == "uvloop"
    assert event_loop.run(_loop_name(), event_loop.loop_factory("asyncio")) == "asyncio"


async def _loop_name() -> str:
    return event_loop.running_loop_name()
