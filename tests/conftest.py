"""Shared fixtures: a real daemon on a loopback port, and stubs bound to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from aivcs.ledger.v1 import event_stream_pb2_grpc, release_registry_pb2_grpc, run_ledger_pb2_grpc

from tests.daemon import DaemonProcess, start_daemon


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
