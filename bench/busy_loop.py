"""`python -m bench.busy_loop`: serial append transactions beside a busy event loop, on it or on a loop of their own.

A question for the daemon's design, measured without the daemon: a run's
writer sends one append transaction at a time, and on a loop that is busy
with other work (gRPC's calls, in the daemon) the engine's answer waits for
that work before the next transaction can leave. Would the writer gain from
an event loop of its own, on a second thread, when both threads share the
GIL?

Here one loop (the daemon's default loop) runs "noise": bursts of pure
Python work, `--busy-us` long, each followed by `--idle-ms` of sleep. Beside
it, the daemon's append transaction of `--events` rows is sent to a fresh
`surrealkv://` database `--transactions` times, each after the previous
answer: first on the noisy loop itself ("same"), then from a second
thread running its own loop ("own"), alternated `--rounds` times. Printed:
transactions per second and their p50, and how many bursts the noise got
done (what the writer's thread took from the main loop).

    python -m bench.busy_loop                        # 0.7 ms and 2 ms bursts, 1 ms apart
    python -m bench.busy_loop --busy-us 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.engine import daemon_layout_bulk  # noqa: E402
from bench.servers import on_servers_loop  # noqa: E402
from bench.stats import Rate  # noqa: E402


@dataclass(frozen=True)
class Outcome:
    per_second: float  # transactions
    p50_ms: float
    noise_share: float  # of one core, kept by the noise while the transactions ran


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _beside_noise(transactions: Awaitable[Rate], events: int, busy: float, idle: float) -> Outcome:
    """Await `transactions` (of `events` rows each) while the noise runs on this loop."""
    stop = asyncio.Event()
    bursts = 0

    async def noise() -> None:
        nonlocal bursts
        while not stop.is_set():
            _burn(busy)
            bursts += 1
            await asyncio.sleep(idle)

    task = asyncio.create_task(noise())
    started = time.perf_counter()
    rate = await transactions
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    return Outcome(rate.per_second / events, statistics.median(rate.latencies) * 1e3, bursts * busy / elapsed)


def measure(mode: str, busy_us: float, idle_ms: float, events: int, count: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="busy-loop-") as folder:
        transactions = daemon_layout_bulk(Path(folder), events * count, events)
        if mode == "own":  # on a thread of its own, running its own loop
            transactions = asyncio.to_thread(on_servers_loop, transactions)
        return on_servers_loop(_beside_noise(transactions, events, busy_us / 1e6, idle_ms / 1e3))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.busy_loop", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--busy-us", type=float, nargs="+", default=[700.0, 2000.0], help="burst lengths")
    parser.add_argument("--idle-ms", type=float, default=1.0, help="sleep after each burst")
    parser.add_argument("--events", type=int, default=10, help="rows per transaction (a unary group is about 10)")
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="same/own pairs per burst length")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    print("burst   writer's loop   transactions/s   p50       noise kept")
    for busy_us in args.busy_us:
        for _ in range(args.rounds):
            for mode in ("same", "own"):
                outcome = measure(mode, busy_us, args.idle_ms, args.events, args.transactions)
                print(
                    f"{busy_us / 1000:4.1f} ms  {mode:14s}  {outcome.per_second:14,.0f}   {outcome.p50_ms:5.2f} ms  "
                    f"{outcome.noise_share:5.0%} of a core"
                )


if __name__ == "__main__":
    main()
