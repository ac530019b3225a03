"""Start the real daemon as a subprocess on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

PORT_LINE = re.compile(rb"listening on .* \(port (\d+)\)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class DaemonProcess:
    """A running `aivcs-ledgerd`; `target` is its HOST:PORT."""

    process: subprocess.Popen[bytes]
    target: str
    log_path: Path
    args: list[str] = field(default_factory=list)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` and return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def start_daemon(
    tmp: Path,
    db: str = "mem://",
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 30,
    launcher: Sequence[str] = (),
    health_port: int | None = None,
) -> DaemonProcess:
    """Start the daemon and wait until its health check says SERVING.

    `launcher` is a command line the daemon's is appended to, and which must
    exec it in the same process (e.g. `unshare` around a mount).
    `health_port`: ask the plaintext health port given with `--health-listen`
    instead of the gRPC port (for a daemon with `--tls-cert`).
    """
    log_path = tmp / f"daemon-{time.monotonic_ns()}.log"
    args = [*launcher, sys.executable, "-m", "aivcs_ledgerd", "--listen", "127.0.0.1:0", "--db", db, *extra]
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=full_env)
    deadline = time.monotonic() + timeout
    port = None
    while port is None:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"daemon did not start:\n{log_path.read_text()}")
        match = PORT_LINE.search(log_path.read_bytes())
        if match:
            port = int(match.group(1))
        else:
            time.sleep(0.05)
    daemon = DaemonProcess(process, f"127.0.0.1:{port}", log_path, args)
    probe = daemon.target if health_port is None else f"127.0.0.1:{health_port}"
    wait_serving(probe, deadline - time.monotonic())
    return daemon


def assert_serving(daemon: DaemonProcess) -> None:
    """The daemon is still running and its health check says SERVING."""
    assert daemon.process.poll() is None, daemon.log()
    with daemon.channel() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def wait_serving(target: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target} never became SERVING")
            time.sleep(0.05)
