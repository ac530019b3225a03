"""A port belongs to one daemon: a second daemon on a taken gRPC, health or metrics port does not start."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1 import run_ledger_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aivcs_ledgerd.util.ports import PortUnavailable, check_exclusive
from harness.daemon import DaemonProcess, free_port, start_daemon
from harness.data import SPEC

SERVING = health_pb2.HealthCheckResponse.SERVING
CALLS = 20  # each on its own connection: with a shared port the kernel would hand some to the second daemon


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, int, int, str]]:
    """A durable daemon with all three ports, holding one run; yields it, its health and metrics ports, the run."""
    tmp = tmp_path_factory.mktemp("first")
    health_port, metrics_port = free_port(), free_port()
    daemon = start_daemon(
        tmp,
        db="surrealkv://data",
        extra=[
            "--health-listen",
            f"127.0.0.1:{health_port}",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
        ],
    )
    with daemon.channel() as channel:
        run_id = (
            run_ledger_pb2_grpc.RunLedgerStub(channel)
            .CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="port-owner"), timeout=10)
            .run.run_id
        )
    yield daemon, health_port, metrics_port, run_id
    assert daemon.stop() == 0, daemon.log()


def second_daemon(tmp: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a second, in-memory daemon to its end; one that keeps running fails the test."""
    command = [sys.executable, "-m", "aivcs_ledgerd", "--db", "mem://", "--listen", "127.0.0.1:0", *args]
    process = subprocess.Popen(
        command, cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        pytest.fail(f"the second daemon started beside the first:\n{out}")
    return subprocess.CompletedProcess(command, process.returncode, out, "")


def assert_first_answers_everything(daemon: DaemonProcess, health_port: int, metrics_port: int, run_id: str) -> None:
    """Every call on a fresh connection, to each port, reaches the first daemon."""
    assert daemon.process.poll() is None, daemon.log()
    for _ in range(CALLS):
        with grpc.insecure_channel(daemon.target) as channel:
            run = run_ledger_pb2_grpc.RunLedgerStub(channel).GetRun(rl.GetRunRequest(run_id=run_id), timeout=10).run
        assert run.agent_name == "port-owner"
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == SERVING
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            assert b'grpc_method="GetRun"' in response.read()


@pytest.mark.parametrize("flag", ["--listen", "--health-listen", "--metrics-listen"])
def test_a_second_daemon_on_a_taken_port_exits_and_the_first_keeps_every_call(
    tmp_path: Path, first: tuple[DaemonProcess, int, int, str], flag: str
) -> None:
    daemon, health_port, metrics_port, run_id = first
    port = {
        "--listen": int(daemon.target.rpartition(":")[2]),
        "--health-listen": health_port,
        "--metrics-listen": metrics_port,
    }[flag]
    address = f"127.0.0.1:{port}"
    result = second_daemon(tmp_path, [flag, address])
    assert result.returncode != 0, result.stdout
    assert f"cannot listen on {flag} {address}: the address is in use" in result.stdout
    assert "listening on" not in result.stdout
    assert_first_answers_everything(daemon, health_port, metrics_port, run_id)


def test_a_second_daemon_on_localhost_of_a_taken_loopback_port_exits(
    tmp_path: Path, first: tuple[DaemonProcess, int, int, str]
) -> None:
    """gRPC binds localhost as [::1] and 127.0.0.1 and is content with one: [::1] alone is not enough."""
    daemon, health_port, metrics_port, run_id = first
    address = f"localhost:{daemon.target.rpartition(':')[2]}"
    result = second_daemon(tmp_path, ["--listen", address])
    assert result.returncode != 0, result.stdout
    assert f"cannot listen on --listen {address}: the address is in use" in result.stdout
    assert_first_answers_everything(daemon, health_port, metrics_port, run_id)


def test_a_socket_that_shares_its_port_is_refused() -> None:
    with socket.socket() as shared:
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        shared.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{shared.getsockname()[1]}"
        with pytest.raises(PortUnavailable, match=f"--http-listen {address}: .*SO_REUSEPORT"):
            check_exclusive(shared, "--http-listen", address)
    with socket.socket() as alone:
        alone.bind(("127.0.0.1", 0))
        check_exclusive(alone, "--http-listen", "127.0.0.1:0")
