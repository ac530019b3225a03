"""Shared fixtures: a real daemon on a loopback port, stubs bound to it, one with its HTTP side on, certificates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from aivcs.ledger.v1 import event_stream_pb2_grpc, release_registry_pb2_grpc, run_ledger_pb2_grpc

from harness.daemon import DaemonProcess, start_daemon
from harness.httpd import HttpDaemon, Stubs, start_http_daemon
from harness.pki import Pki, make_pki


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon on mem:// per test module; tests use distinct run ids and agents."""
    proc = start_daemon(tmp_path_factory.mktemp("daemon"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def channel(daemon: DaemonProcess) -> Iterator[grpc.Channel]:
    with daemon.channel() as ch:
        yield ch


@pytest.fixture(scope="module")
def runs(channel: grpc.Channel) -> run_ledger_pb2_grpc.RunLedgerStub:
    return run_ledger_pb2_grpc.RunLedgerStub(channel)


@pytest.fixture(scope="module")
def events(channel: grpc.Channel) -> event_stream_pb2_grpc.EventStreamStub:
    return event_stream_pb2_grpc.EventStreamStub(channel)


@pytest.fixture(scope="module")
def releases(channel: grpc.Channel) -> release_registry_pb2_grpc.ReleaseRegistryStub:
    return release_registry_pb2_grpc.ReleaseRegistryStub(channel)


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for localhost and 127.0.0.1, a client certificate, and one from another CA."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    """One daemon on mem:// with --http-listen per test module; it must stop with exit code 0."""
    served = start_http_daemon(tmp_path_factory.mktemp("http"))
    yield served
    assert served.daemon.stop() == 0, served.daemon.log()


@pytest.fixture(scope="module")
def stubs(served: HttpDaemon) -> Iterator[Stubs]:
    with served.daemon.channel() as channel:
        yield Stubs(channel)
