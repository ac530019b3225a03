"""Optional sampling of the daemon with py-spy while each figure is measured.

`--profile` writes bench-results/profile-<figure>.txt (py-spy's collapsed
stacks: open them in speedscope or flamegraph.pl) and puts the hottest
functions of each figure in the report: "self" is where the daemon's
Python code was when sampled, over the samples that were not waiting (the
event loop in select, and gRPC's poller thread, which shows as a bare
Thread.run because its work is in C, are left out: the daemon starts no
other thread), "inclusive" counts a function of the daemon,
the SurrealDB SDK or rfc8785 whenever it was on the stack (event-loop
plumbing, on every stack, is left out). py-spy samples without pausing the daemon (--nonblocking).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RATE = 250  # samples per second
OWN_CODE = ("aivcs_ledgerd/", "surrealdb/", "rfc8785/", "google/protobuf/")
ENTRY = ("aivcs_ledgerd/__main__.py", "aivcs_ledgerd/process/cli.py")  # on every stack: says nothing
WAITING = ("EpollSelector.select (selectors.py)", "Thread.run (threading.py)")


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    return found


class Profiler:
    def __init__(self, pid: int, folder: Path | None) -> None:
        self.pid = pid
        self.folder = folder
        self.hot: dict[str, dict[str, Any]] = {}
        self._binary = _py_spy() if folder is not None else ""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.folder is None:
            yield
            return
        out = self.folder / f"profile-{name}.txt"
        recorder = subprocess.Popen(
            [
                self._binary,
                "record",
                "--pid",
                str(self.pid),
                "--format",
                "raw",
                "--rate",
                str(RATE),
                "--nonblocking",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            yield
        finally:
            recorder.send_signal(signal.SIGINT)
            _, errors = recorder.communicate(timeout=60)
        if out.exists():
            self.hot[name] = {"file": str(out), **hot_spots(out)}
        else:
            self.hot[name] = {"error": errors.decode(errors="replace")[-500:]}


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`: one entry per function."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    return f"{name} ({Path(file).name})" if file else name


def hot_spots(collapsed: Path, top: int = 12) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = waiting = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = _frame_name(frames[-1])
        if leaf in WAITING:
            waiting += count
            continue
        total += count
        self_time[leaf] += count
        own = {
            _frame_name(frame)
            for frame in frames
            if any(part in frame for part in OWN_CODE) and not any(part in frame for part in ENTRY)
        }
        for name in own:
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * count / total, 1)] for name, count in counter.most_common(top)]

    if not total:
        return {"samples": 0, "waiting_samples": waiting}
    return {
        "samples": total,
        "waiting_samples": waiting,
        "self_pct": share(self_time),
        "inclusive_pct": share(inclusive),
    }
