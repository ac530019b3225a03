"""The two server processes a run compares."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc

from aivcs_ledgerd.process import event_loop
from harness.daemon import REPO, DaemonProcess, spawn, start_daemon, wait_listening

T = TypeVar("T")

__all__ = ["REPO", "on_servers_loop", "servers_event_loop", "start_ledger_daemon", "start_null_server"]


def _servers_loop_choice() -> str:
    """What both servers are told to run on: the daemon reads the variable itself, the null server gets a flag."""
    return os.environ.get("AIVCS_LEDGER_EVENT_LOOP", "auto")


def _servers_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    return event_loop.loop_factory(_servers_loop_choice())


def servers_event_loop() -> str:
    """The loop both servers run on: their default, or AIVCS_LEDGER_EVENT_LOOP's."""
    return "asyncio" if _servers_loop_factory() is None else "uvloop"


def on_servers_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` here on the servers' loop, so the engine ceilings pay what the daemon's loop pays."""
    return event_loop.run(main, _servers_loop_factory())


def start_null_server(tmp: Path, timeout: float = 30) -> DaemonProcess:
    """`python -m bench.null_server` on a free loopback port, ready for calls."""
    log_path = tmp / "null-server.log"
    args = [
        sys.executable,
        "-m",
        "bench.null_server",
        "--listen",
        "127.0.0.1:0",
        "--event-loop",
        _servers_loop_choice(),
    ]
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
