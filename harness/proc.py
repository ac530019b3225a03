"""A process's memory, descriptors, threads and CPU time, read from /proc (Linux)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import TracebackType


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` in bytes (VmRSS of /proc/<pid>/status, given in KiB)."""
    return _status(pid, "VmRSS") * 1024


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MB (10^6 bytes)."""
    return rss_bytes(pid) / 1e6


def threads(pid: int) -> int:
    return _status(pid, "Threads")


def open_fds(pid: int, *, count_proc: bool = True) -> int:
    """The open descriptors of `pid`; with `count_proc=False` less those on /proc: the embedded
    engine keeps one open on /proc/<pid>/stat of every process and thread of the host, a number
    that moves with the host's load."""
    if count_proc:
        return len(os.listdir(f"/proc/{pid}/fd"))
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        count += not target.startswith("/proc/")
    return count


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid`, all threads (the engine's too), from /proc/<pid>/stat."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def main_thread_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid`'s main thread alone: for the daemon, its event loop's."""
    return _stat_cpu(Path(f"/proc/{pid}/task/{pid}/stat"))


def _stat_cpu(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread, while in a `with` block.

    `samples` are (seconds since the block began, bytes); there is one on entry and one on exit.
    """

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        self.samples.append((time.monotonic() - self._started, rss_bytes(self.pid)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @property
    def peak_bytes(self) -> int:
        return max(rss for _, rss in self.samples)

    @property
    def peak_mb(self) -> float:
        """The highest sample in MB (10^6 bytes)."""
        return self.peak_bytes / 1e6

    def samples_mb(self) -> list[tuple[float, float]]:
        """(seconds, MB) per sample, rounded to a tenth."""
        return [(round(t, 1), round(rss / 1e6, 1)) for t, rss in self.samples]
