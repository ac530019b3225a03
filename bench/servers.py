"""The two server processes a run compares."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import grpc

from harness.daemon import REPO, DaemonProcess, spawn, start_daemon, wait_listening

__all__ = ["REPO", "start_ledger_daemon", "start_null_server"]


def start_null_server(tmp: Path, timeout: float = 30) -> DaemonProcess:
    """`python -m bench.null_server` on a free loopback port, ready for calls."""
    log_path = tmp / "null-server.log"
    args = [sys.executable, "-m", "bench.null_server", "--listen", "127.0.0.1:0"]
    process = spawn(args, tmp, log_path, from_clone=True)
    deadline = time.monotonic() + timeout
    port = wait_listening(process, log_path, deadline, "the null server")
    target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=max(1.0, deadline - time.monotonic()))
    return DaemonProcess(process, target, log_path, args)


def start_ledger_daemon(tmp: Path) -> DaemonProcess:
    """The real daemon, default settings, on durable SurrealKV storage under `tmp`."""
    return start_daemon(tmp, db=f"surrealkv://{tmp / 'ledger-data'}", timeout=60)
