"""`python -m bench.append_timeline`: where one sequential AppendEvents spends its time, in the daemon.

The daemon runs in this process (its own thread and event loop, default
settings, `surrealkv://` in a temporary folder unless `--db`); one client
process sends AppendEvents of one event, each after the previous answer,
as `python -m bench` does. While it runs, every callback the daemon's loop
runs is timed. Printed: the client's p50; CPU per append of the loop
thread and of the engine's threads (from /proc); the loop's callbacks per
append with their median duration; and the timeline of the median-length
call, from the request's arrival to the next one's, where the gaps are the
loop waiting (for the engine, or for the client and the wire).

A diagnostic, not a benchmark with a target: timing each callback adds a
little to each. docs/performance-notes.md reads its output.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from queue import Queue
from typing import Any

from bench.clients import ClientPool

ARRIVAL = "AioServer._server_main_loop"  # gRPC's loop task wakes for each new call
_Trace = list[tuple[float, float, str]]  # (start, duration, callback) in seconds


def _name(handle: asyncio.Handle) -> str:
    callback: Any = handle._callback  # type: ignore[attr-defined]
    name = getattr(callback, "__qualname__", None) or type(callback).__name__
    owner = getattr(callback, "__self__", None)
    if owner is None:
        return str(name)
    name = f"{type(owner).__name__}.{name}".replace("Task.Task.", "").replace("Task.TaskStepMethWrapper", "step")
    coroutine = getattr(owner, "get_coro", None)
    if coroutine is not None:
        name += f"[{getattr(coroutine(), '__qualname__', '?')}]"
    return name


def _record(loop_thread: list[int], on: threading.Event, trace: _Trace) -> Callable[[], None]:
    # Handle._run is where asyncio runs every callback, a task's steps included.
    """Time every callback of the daemon's loop thread while `on` is set; returns the undo."""
    original = asyncio.Handle._run

    def timed(self: asyncio.Handle) -> None:  # named as the method it replaces
        if not on.is_set() or threading.get_ident() != loop_thread[0]:
            original(self)
            return
        started = time.perf_counter()
        original(self)
        trace.append((started, time.perf_counter() - started, _name(self)))

    asyncio.Handle._run = timed  # type: ignore[method-assign]

    def undo() -> None:
        asyncio.Handle._run = original  # type: ignore[method-assign]

    return undo


def _thread_cpu() -> dict[tuple[int, str], float]:
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
            name = Path(f"/proc/self/task/{task}/comm").read_text().strip()
        except OSError:
            continue
        out[(int(task), name)] = (int(stat[11]) + int(stat[12])) / ticks
    return out


def _serve(url: str, ready: Queue[int], stop: threading.Event, loop_thread: list[int]) -> None:
    from aivcs_ledgerd.config import Settings
    from aivcs_ledgerd.process.app import start

    async def main() -> None:
        loop_thread.extend((threading.get_ident(), threading.get_native_id()))
        daemon = await start(Settings(listen="127.0.0.1:0", db=url))
        ready.put(daemon.port)
        await asyncio.to_thread(stop.wait)  # the stop comes from the main thread
        await daemon.stop()

    asyncio.run(main())


def _cycles(trace: _Trace) -> list[_Trace]:
    starts = [i for i, (_, _, name) in enumerate(trace) if ARRIVAL in name]
    return [trace[a:b] for a, b in itertools.pairwise(starts)]


def report(trace: _Trace, appends: int, p50_ms: float, cpu: dict[str, float]) -> str:
    lines = [f"client: AppendEvents p50 {p50_ms:.2f} ms over {appends} calls"]
    lines += [f"CPU per append, {name}: {seconds / appends * 1000:.3f} ms" for name, seconds in cpu.items()]
    counts: Counter[str] = Counter(name for _, _, name in trace)
    durations: defaultdict[str, list[float]] = defaultdict(list)
    for _, duration, name in trace:
        durations[name].append(duration)
    lines.append(f"loop callbacks per append: {len(trace) / appends:.1f}")
    for name, count in counts.most_common(25):
        median_us = statistics.median(durations[name]) * 1e6
        lines.append(f"  {count / appends:5.2f} x {median_us:7.1f} us  {name}")
    cycles = _cycles(trace)
    if cycles:
        lengths = sorted(range(len(cycles)), key=lambda i: cycles[i][-1][0] - cycles[i][0][0])
        cycle = cycles[lengths[len(lengths) // 2]]
        base = cycle[0][0]
        lines.append("the median call, from its arrival (start ms, busy us, callback; '...' is the loop waiting):")
        previous_end = base
        for started, duration, name in cycle:
            if started - previous_end > 100e-6:
                lines.append(f"  {'...':>8}  {(started - previous_end) * 1e6:7.0f} us  (waiting)")
            lines.append(f"  {(started - base) * 1000:8.3f}  {duration * 1e6:7.1f} us  {name}")
            previous_end = started + duration
        busy = sum(duration for _, duration, _ in cycle)
        lines.append(f"  busy {busy * 1000:.2f} ms of {(cycle[-1][0] - base) * 1000:.2f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.append_timeline", description=__doc__)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--db", help="the daemon's --db (default: surrealkv:// in a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aivcs-timeline-") as folder, ClientPool(1) as pool:
        url = args.db or f"surrealkv://{Path(folder) / 'ledger-data'}"
        ready: Queue[int] = Queue()
        stop, recording = threading.Event(), threading.Event()
        loop_thread: list[int] = []  # the daemon loop's thread: Python's ident, then the OS thread id
        trace: _Trace = []
        undo = _record(loop_thread, recording, trace)
        server = threading.Thread(target=_serve, args=(url, ready, stop, loop_thread), name="daemon")
        server.start()
        try:
            target = f"127.0.0.1:{ready.get(timeout=120)}"
            pool.create_runs(target, ["timeline"])
            pool.sequential_appends(target, "timeline", 100)  # warm: connection, caches
            before = _thread_cpu()
            recording.set()
            rate = pool.sequential_appends(target, "timeline", args.appends)
            recording.clear()
            after = _thread_cpu()
        finally:
            stop.set()
            server.join()
            undo()
    daemon_loop = next(key for key in after if key[0] == loop_thread[1])
    cpu: defaultdict[str, float] = defaultdict(float)
    for key, seconds in after.items():
        spent = seconds - before.get(key, seconds)
        if key == daemon_loop:
            cpu["daemon loop thread"] += spent
        elif key[1].startswith(("tokio", "surrealkv")):
            cpu["engine threads"] += spent
    print(report(trace, args.appends, rate.p50_ms, dict(cpu)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
