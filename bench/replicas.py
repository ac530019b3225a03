"""`python -m bench.replicas`: several daemon replicas on one SurrealDB server, against one.

The same writers (threads of this process, one event per append, with
idempotency keys and retries, on a few shared runs) write for the same time
through one daemon, then through three replicas on a fresh server, on the
stand-in SurrealDB server (harness/surrealdb_stand_in.py) over the memory
engine and over SurrealKV. Reported per engine: appends per second each way
and their ratio (target: three replicas at least 0.8x one), retryable
refusals (target: at most 1 %), and whether every acknowledged append is
stored where its acknowledgement said; then the lag of subscribers on every
replica behind a steady trickle appended through one (targets: median
100 ms, worst 500 ms).

    python -m bench.replicas [--seconds 15] [--rounds 2] [--writers 12] [--runs 2] [--engines mem,surrealkv]

All processes share this machine's cores, so the figures are relative; the
ratio is what is measured in one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness.replicas import Tally, check_stored, create_runs, start_replicas, stop_replicas, subscription_lag, write
from harness.surrealdb_stand_in import stand_in_server


def through(tmp: Path, engine: str, replicas: int, writers: int, runs: int, seconds: float) -> dict[str, Any]:
    """Appends per second of `writers` through `replicas` daemons on a fresh stand-in server."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    engine_url = f"surrealkv://{folder / 'kv'}" if engine == "surrealkv" else "mem://"
    with stand_in_server(folder, engine_url) as server:
        daemons = start_replicas(folder, server.url, replicas)
        try:
            targets = [d.target for d in daemons]
            run_ids = create_runs(targets[0], runs)
            stop, tally = threading.Event(), Tally()
            timer = threading.Timer(seconds, stop.set)
            started = time.monotonic()
            timer.start()
            write(targets, run_ids, writers, until=stop, tally=tally)
            elapsed = time.monotonic() - started
            problems = check_stored(targets[-1], run_ids, tally)
        finally:
            stop_replicas(daemons)
    return {
        "replicas": replicas,
        "appends": len(tally.acknowledged),
        "appends_per_second": len(tally.acknowledged) / elapsed,
        "attempts": tally.attempts,
        "refused": tally.refused,
        "refused_share": tally.refused / max(tally.attempts, 1),
        "failures": len(tally.failures),
        "problems": problems[:10],
    }


def _combined(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = sum(r["appends"] / r["appends_per_second"] for r in rounds)
    attempts, refused = sum(r["attempts"] for r in rounds), sum(r["refused"] for r in rounds)
    return {
        "appends_per_second": sum(r["appends"] for r in rounds) / seconds,
        "refused_share": refused / max(attempts, 1),
        "problems": [p for r in rounds for p in r["problems"]],
        "failures": sum(r["failures"] for r in rounds),
    }


def lag(tmp: Path, events: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(dir=tmp))
    with stand_in_server(folder) as server:
        daemons = start_replicas(folder, server.url, 3)
        try:
            targets = [d.target for d in daemons]
            measured = subscription_lag(targets[0], targets, events=events)
        finally:
            stop_replicas(daemons)
    return {"median_ms": measured.median * 1000, "worst_ms": measured.worst * 1000, "samples": len(measured.seconds)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replicas", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="writing time per configuration")
    parser.add_argument("--writers", type=int, default=12)
    parser.add_argument("--runs", type=int, default=2, help="shared runs the writers append to")
    parser.add_argument("--engines", default="mem,surrealkv")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of one replica and three")
    parser.add_argument("--lag-events", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("bench-results") / "replicas.json")
    options = parser.parse_args(argv)
    results: dict[str, Any] = {"writers": options.writers, "runs": options.runs, "seconds": options.seconds}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        for engine in options.engines.split(","):
            # Alternated, so that the load of a shared machine drifting weighs on both sides alike.
            rounds = [
                through(tmp, engine, replicas, options.writers, options.runs, options.seconds)
                for _ in range(options.rounds)
                for replicas in (1, 3)
            ]
            one, three = (
                _combined([r for r in rounds if r["replicas"] == 1]),
                _combined([r for r in rounds if r["replicas"] == 3]),
            )
            ratio = three["appends_per_second"] / one["appends_per_second"]
            results[engine] = {"one": one, "three": three, "ratio": ratio, "rounds": rounds}
            print(
                f"{engine}: one replica {one['appends_per_second']:.0f} appends/s, three "
                f"{three['appends_per_second']:.0f} appends/s: ratio {ratio:.2f} (target >= 0.8); refused "
                f"{three['refused_share']:.2%} (target <= 1 %); stored as acknowledged: "
                f"{'yes' if not one['problems'] and not three['problems'] else 'NO'}",
                flush=True,
            )
        results["lag"] = lag(tmp, options.lag_events)
        print(
            f"subscription lag, subscribers on three replicas: median {results['lag']['median_ms']:.1f} ms "
            f"(target <= 100), worst {results['lag']['worst_ms']:.1f} ms (target <= 500)",
            flush=True,
        )
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
