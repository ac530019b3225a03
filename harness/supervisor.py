"""The daemon under a supervisor that kills it with SIGKILL and restarts it on the same storage folder.

Clients ask the supervisor where the serving daemon is (`current`) and wait
for the next one after a failure (`wait_change`); each start and each kill
is a new generation, so an acknowledgement can name the daemon that gave it.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from aivcs.ledger.v1 import event_stream_pb2_grpc, release_registry_pb2_grpc, run_ledger_pb2_grpc

from harness.daemon import daemon_command, spawn, wait_listening, wait_serving


@dataclass
class Connection:
    generation: int
    channel: grpc.Channel
    runs: run_ledger_pb2_grpc.RunLedgerStub
    events: event_stream_pb2_grpc.EventStreamStub
    releases: release_registry_pb2_grpc.ReleaseRegistryStub

    @classmethod
    def open(cls, target: str, generation: int = 0) -> Connection:
        channel = grpc.insecure_channel(target)
        return cls(
            generation,
            channel,
            run_ledger_pb2_grpc.RunLedgerStub(channel),
            event_stream_pb2_grpc.EventStreamStub(channel),
            release_registry_pb2_grpc.ReleaseRegistryStub(channel),
        )

    def close(self) -> None:
        self.channel.close()


class Supervisor:
    """Runs `aivcs-ledgerd` on one storage folder; kills and restarts it; tells clients where it is.

    `target` is None while the daemon is down. A daemon that exits without
    being killed, or does not become SERVING, counts as a crash.
    """

    def __init__(self, workdir: Path, db: str, extra: Sequence[str] = (), start_timeout: float = 60) -> None:
        self.workdir = workdir
        self.db = db
        self.extra = list(extra)
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.target: str | None = None
        self.generation = 0
        self.kills = 0
        self.early_kills = 0  # killed before it was serving: while opening and recovering storage
        self.crashes: list[str] = []
        self.start_seconds: list[float] = []  # how long each start took until SERVING
        self.early_kill_generations: set[int] = set()  # generations (after a kill) followed by an early kill
        self._changed = threading.Condition()

    def _launch(self) -> subprocess.Popen[bytes]:
        self.log_path = self.workdir / f"daemon-{self.generation:04d}-{time.monotonic_ns()}.log"
        self.process = spawn(daemon_command(self.db, self.extra), self.workdir, self.log_path)
        return self.process

    def start(self) -> str:
        """Start the daemon and publish its target once it is SERVING."""
        began = time.monotonic()
        process = self._launch()
        assert self.log_path is not None
        deadline = time.monotonic() + self.start_timeout
        try:
            port = wait_listening(process, self.log_path, deadline)
        except RuntimeError:
            self._crashed("did not start")
            raise RuntimeError(f"the daemon did not start:\n{self._tail()}") from None
        target = f"127.0.0.1:{port}"
        try:
            wait_serving(target, max(1.0, deadline - time.monotonic()))
        except RuntimeError:
            self._crashed("never SERVING")
            raise
        self.start_seconds.append(time.monotonic() - began)
        with self._changed:
            self.generation += 1
            self.target = target
            self._changed.notify_all()
        return target

    def kill(self) -> None:
        """SIGKILL the daemon (after taking its target away from clients)."""
        with self._changed:
            self.target = None
            self.generation += 1
            self._changed.notify_all()
        process = self.process
        if process is None:
            return
        if process.poll() is not None:
            self._crashed(f"exited by itself with {process.returncode}")
        else:
            process.kill()
            process.wait()
            self.kills += 1

    def early_kill(self, delay: float) -> None:
        """Start the daemon and SIGKILL it after `delay` seconds, serving or not, without telling clients."""
        process = self._launch()
        time.sleep(delay)
        if process.poll() is not None:
            self._crashed(f"exited by itself with {process.returncode} while starting")
            return
        process.kill()
        process.wait()
        self.kills += 1
        self.early_kills += 1
        self.early_kill_generations.add(self.generation)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        with self._changed:
            self.target = None
            self.generation += 1
            self._changed.notify_all()
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        """Record a crash if the daemon that should be serving has exited."""
        if self.target is not None and self.process is not None and self.process.poll() is not None:
            self._crashed(f"exited by itself with {self.process.returncode}")
            with self._changed:
                self.target = None
                self.generation += 1
                self._changed.notify_all()

    def current(self, timeout: float) -> tuple[int, str] | None:
        """The serving daemon's (generation, target), waiting up to `timeout` seconds for one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.target is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)
            return self.generation, self.target

    def wait_change(self, generation: int, timeout: float) -> None:
        """Wait until the daemon was restarted (or `timeout` passed)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.generation == generation:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)

    def _crashed(self, how: str) -> None:
        self.crashes.append(f"{how}; log {self.log_path}:\n{self._tail()}")

    def _tail(self, size: int = 3000) -> str:
        return "" if self.log_path is None else self.log_path.read_text(errors="replace")[-size:]


@contextlib.contextmanager
def connect(target: str | None) -> Iterator[Connection]:
    """A connection to `target` for the block (`target` is a serving daemon's: not None)."""
    assert target is not None
    connection = Connection.open(target)
    try:
        yield connection
    finally:
        connection.close()
