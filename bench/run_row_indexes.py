"""What the run row's indexes cost an append: the daemon's transaction with and without them, interleaved.

Every append updates its run's row, and the row carries the seed's and
ListRuns' indexes. Measured one layout after the other, the difference
drowned in the machine's drift (docs/performance-notes.md), so here two
fresh `surrealkv://` databases are open at once, one with the run row's
indexes (the daemon's layout) and one with none, and their transactions
alternate, the order flipped every round. CPU is the process's, so it
includes the engine's threads.

    python -m bench.run_row_indexes      # 1, 6 (a unary group at 32 in flight) and 100 events a transaction
    python -m bench.run_row_indexes --transactions 300 --sizes 1 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.engine import LAYOUTS, RUN_ID, SINGLE, _batches, _check, _database  # noqa: E402

INDEXED, BARE = LAYOUTS[1], LAYOUTS[2]  # the daemon's layout; the same without any run-row index


async def interleaved(folder: Path, size: int, transactions: int) -> dict[str, dict[str, float]]:
    """p50 latency and CPU per transaction (ms) of each layout, `transactions` of `size` events each."""
    latencies: dict[str, list[float]] = {INDEXED: [], BARE: []}
    cpu = dict.fromkeys(latencies, 0.0)
    async with (
        _database(folder / "indexed", INDEXED, [RUN_ID]) as indexed,
        _database(folder / "bare", BARE, [RUN_ID]) as bare,
    ):
        batches = {layout: _batches("rows", size * transactions, size, RUN_ID) for layout in latencies}
        for index in range(transactions):
            order = [(INDEXED, indexed), (BARE, bare)]
            for layout, db in order if index % 2 == 0 else reversed(order):
                sent, used = time.perf_counter(), time.process_time()
                _check(await db.send(SINGLE, batches[layout][index]))
                latencies[layout].append(time.perf_counter() - sent)
                cpu[layout] += time.process_time() - used
    return {
        layout: {"p50_ms": statistics.median(values) * 1e3, "cpu_ms": cpu[layout] / transactions * 1e3}
        for layout, values in latencies.items()
    }


async def main(sizes: list[int], transactions: int) -> None:
    results = {}
    print("events/tx  with run-row indexes: p50, CPU   without: p50, CPU   ratio (CPU)")
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="run-row-indexes-") as folder:
            figures = await interleaved(Path(folder), size, transactions)
        results[size] = figures
        on, off = figures[INDEXED], figures[BARE]
        print(
            f"{size:9d}  {on['p50_ms']:8.2f} ms {on['cpu_ms']:6.2f} ms     "
            f"{off['p50_ms']:6.2f} ms {off['cpu_ms']:6.2f} ms   {on['cpu_ms'] / off['cpu_ms']:.3f}"
        )
    print(json.dumps({"transactions": transactions, "by_events_per_transaction": results}))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run_row_indexes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--transactions", type=int, default=1000, help="per layout and size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 6, 100], help="events per transaction")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    asyncio.run(main(args.sizes, args.transactions))
