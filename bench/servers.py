"""The two server processes a run compares, and the daemon's memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import grpc

from tests.daemon import PORT_LINE, DaemonProcess, start_daemon

REPO = Path(__file__).resolve().parent.parent


def start_null_server(tmp: Path, timeout: float = 30) -> DaemonProcess:
    """`python -m bench.null_server` on a free loopback port, ready for calls."""
    log_path = tmp / "null-server.log"
    args = [sys.executable, "-m", "bench.null_server", "--listen", "127.0.0.1:0"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=env)
    deadline = time.monotonic() + timeout
    while not (match := PORT_LINE.search(log_path.read_bytes())):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the null server did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    target = f"127.0.0.1:{int(match.group(1))}"
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=max(1.0, deadline - time.monotonic()))
    return DaemonProcess(process, target, log_path, args)


def start_ledger_daemon(tmp: Path) -> DaemonProcess:
    """The real daemon, default settings, on durable SurrealKV storage under `tmp`."""
    return start_daemon(tmp, db=f"surrealkv://{tmp / 'ledger-data'}", timeout=60)


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MB (10^6 bytes), from /proc/<pid>/status (VmRSS, in KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid`, all threads (the engine's too), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread, while in a `with` block."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        self.samples.append((round(time.monotonic() - self._started, 1), round(rss_mb(self.pid), 1)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @property
    def peak_mb(self) -> float:
        return max((mb for _, mb in self.samples), default=float("nan"))
