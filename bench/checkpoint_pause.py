"""What a checkpoint of the embedded engine pauses: the database calls, and for part of it the whole process.

Fills a `surrealkv://` store in a temporary folder, then checkpoints it
(Database.checkpoint: close, reopen) several times while a ticker on the
event loop records the longest gap between its ticks. A gap as long as the
checkpoint means nothing else in the daemon ran meanwhile: no call could be
answered, from the engine or from anything else. The engine is also opened
once from a worker thread, to show whether opening releases the
interpreter lock (if it did, the loop would keep ticking while it
compacts).

    python -m bench.checkpoint_pause                   # 40 fills of 2,000 records, 4 checkpoints
    python -m bench.checkpoint_pause --fills 10 --checkpoints 2
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from surrealdb import AsyncSurreal  # noqa: E402

from aivcs_ledgerd.store import Database  # noqa: E402

FILL = "FOR $i IN 0..2000 { CREATE filler CONTENT { pad: string::repeat('p', 200), i: $i } };"
TICK_SECONDS = 0.005


async def longest_gap(work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(seconds `work` took, longest gap between ticks of the event loop meanwhile)."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(TICK_SECONDS)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    began = time.perf_counter()
    await work()
    took = time.perf_counter() - began
    done.set()
    await ticker
    return took, max(gaps, default=took)


async def main(fills: int, checkpoints: int) -> None:
    with tempfile.TemporaryDirectory(prefix="checkpoint-pause-") as folder:
        url = f"surrealkv://{folder}/data"
        db = await Database.open(url)
        try:
            print("checkpoint  seconds  longest loop gap")
            for n in range(1, checkpoints + 1):
                for _ in range(fills):
                    await db.query(FILL)
                took, gap = await longest_gap(db.checkpoint)
                print(f"{n:10d}  {took:7.2f}  {gap:7.2f}")
        finally:
            await db.close()

    with tempfile.TemporaryDirectory(prefix="checkpoint-pause-") as folder:
        url = f"surrealkv://{folder}/data"
        connection = AsyncSurreal(url)
        await connection.connect()
        print("the same, the engine opened in a worker thread")
        print("checkpoint  seconds  longest loop gap")
        for n in range(1, checkpoints + 1):
            await connection.use("bench", "bench")
            for _ in range(fills):
                await connection.query(FILL)

            async def reopen_in_a_thread() -> None:
                nonlocal connection
                await connection.close()
                connection = await asyncio.to_thread(AsyncSurreal, url)
                await connection.connect()

            took, gap = await longest_gap(reopen_in_a_thread)
            print(f"{n:10d}  {took:7.2f}  {gap:7.2f}")
        await connection.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.checkpoint_pause",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--fills", type=int, default=40, help="statements of 2,000 records before each checkpoint")
    parser.add_argument("--checkpoints", type=int, default=4)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    asyncio.run(main(args.fills, args.checkpoints))
