"""Fixtures for the Python client's tests: a client bound to the module's daemon."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from aivcs.ledger import Client, Event
from aivcs.ledger.cli import cli as command
from aivcs.ledger.v1 import run_ledger_pb2, run_ledger_pb2_grpc, run_pb2
from click.testing import CliRunner

from harness.daemon import DaemonProcess, start_daemon


def events_of(client: Client, run_id: str) -> list[Event]:
    """Every stored event of the run, in seq order."""
    return list(client.events.read(run_id))


@pytest.fixture(scope="package")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon on mem:// for all the client tests (each test uses its own runs and agents)."""
    process = start_daemon(tmp_path_factory.mktemp("client-daemon"))
    yield process
    process.stop()


@pytest.fixture(scope="package")
def client(daemon: DaemonProcess) -> Iterator[Client]:
    with Client(daemon.target) as c:
        yield c


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, target: str | None = None, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    """Run `aivcs-ledger ARGS` in this process (fast); `cli_command` gives the real command line."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("AIVCS_LEDGER_")}
    prefix = ["--target", target] if target else []
    result = CliRunner().invoke(command, [*prefix, *args], env={**unset, "NO_COLOR": "1", **(env or {})}, input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def cli_command(args: Sequence[str], target: str | None = None) -> list[str]:
    prefix = ["--target", target] if target else []
    return [sys.executable, "-m", "aivcs.ledger", *prefix, *args]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIVCS_LEDGER_")}
    env.update({"NO_COLOR": "1", "COLUMNS": "200"})
    env.update(extra or {})
    return env


class _Echo(run_ledger_pb2_grpc.RunLedgerServicer):
    """Answers GetRun with the authorization header it received, as the run_id."""

    def GetRun(self, request: run_ledger_pb2.GetRunRequest, context: Any) -> run_ledger_pb2.GetRunResponse:
        headers = dict(context.invocation_metadata())
        return run_ledger_pb2.GetRunResponse(
            run=run_pb2.Run(run_id=headers.get("authorization", "<none>"), status=run_pb2.RUN_STATUS_RUNNING)
        )


@pytest.fixture(scope="package")
def echo_server() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    run_ledger_pb2_grpc.add_RunLedgerServicer_to_server(_Echo(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)
