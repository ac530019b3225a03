"""Start the real daemon as a subprocess on a free loopback port, for tests and benchmarks.

Every subprocess server here (the daemon, bench/null_server.py) prints the
same "listening on ... (port N)" line; `spawn` starts one with its output in
a log file and `wait_listening` reads the port from that line.
"""

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
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def daemon_command(db: str = "mem://", extra: Sequence[str] = (), launcher: Sequence[str] = ()) -> list[str]:
    """The daemon's command line on an OS-chosen loopback port."""
    return [*launcher, sys.executable, "-m", "aivcs_ledgerd", "--listen", "127.0.0.1:0", "--db", db, *extra]


def spawn(
    args: Sequence[str], cwd: Path, log_path: Path, env: dict[str, str] | None = None, *, from_clone: bool = False
) -> subprocess.Popen[bytes]:
    """Start `args` in `cwd` with stdout and stderr in `log_path`; `env` adds to this process's environment.

    `from_clone` puts the clone's root on PYTHONPATH, for `-m bench...` from any folder (the daemon
    itself is installed and needs nothing of the clone).
    """
    full_env = {**os.environ, **(env or {})}
    if from_clone:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    with log_path.open("wb") as log:
        return subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=full_env)


def wait_listening(process: subprocess.Popen[bytes], log_path: Path, deadline: float, what: str = "daemon") -> int:
    """The port from the process's "listening on" line, once it is there.

    Raises RuntimeError (with the log) when the process exits first or `deadline` (monotonic) passes;
    a process still running then is killed.
    """
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        match = PORT_LINE.search(log_path.read_bytes())
        if match:
            return int(match.group(1))
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"{what} did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.02)


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
    args = daemon_command(db, extra, launcher)
    process = spawn(args, tmp, log_path, env)
    deadline = time.monotonic() + timeout
    port = wait_listening(process, log_path, deadline)
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


def run_to_exit(
    args: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `aivcs-ledgerd ARGS` to completion, its output captured: for invocations that must not serve
    (a refused flag, a port taken) and for subcommands. `env` replaces this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "aivcs_ledgerd", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
