"""Flow control under a flood: the daemon's memory must stay bounded.

Starts the real daemon (on `surrealkv://` in a temporary folder unless
`--db` says otherwise), floods one run through one IngestEvents stream as
fast as this client can send, in small batches, and samples the daemon's
RSS from /proc/<pid>/status every 0.5 s. Prints a table and writes JSON
(bench-results/flood_memory.json by default).

The daemon reads at most a fixed number of batches of one stream ahead of
their commits; past that, gRPC flow control makes the client wait. So RSS
should rise by the engine's own caches and settle, whatever the number of
events. A daemon that buffered everything the client sent would instead
grow with the flood: the client sends requests several times faster than
storage commits them.

    python -m bench.flood_memory                    # 200,000 events, batches of 10
    python -m bench.flood_memory --events 20000 --db mem://

tests/test_ingest.py runs a scaled-down flood through `run_flood` (harness/flood.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script: make `harness` importable
    sys.path.insert(0, str(ROOT))

from harness.daemon import start_daemon  # noqa: E402
from harness.flood import SAMPLE_SECONDS, FloodResult, run_flood  # noqa: E402


def table(result: FloodResult) -> str:
    rows = [
        ("database", result.db),
        ("events", f"{result.events:,}"),
        ("batch size (events)", str(result.batch_events)),
        ("payload pad (bytes)", str(result.payload_bytes)),
        ("seconds", f"{result.seconds:.2f}"),
        ("events/s", f"{result.events_per_second:,.0f}"),
        ("RSS before (MB)", f"{result.rss_before_mb:.1f}"),
        ("RSS peak (MB)", f"{result.rss_peak_mb:.1f}"),
        ("RSS after (MB)", f"{result.rss_after_mb:.1f}"),
        ("RSS growth, peak - before (MB)", f"{result.rss_growth_mb:.1f}"),
        ("events stored", f"{result.stored_events:,}"),
        ("most batches sent, not yet answered", f"{result.most_batches_ahead:,} ({result.most_mb_ahead:.1f} MB)"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events to send (default %(default)s)")
    parser.add_argument("--batch", type=int, default=10, help="events per batch (default %(default)s)")
    parser.add_argument("--payload-bytes", type=int, default=200, help="padding per event (default %(default)s)")
    parser.add_argument("--db", default=None, help="daemon --db URL (default: surrealkv:// in a temp folder)")
    parser.add_argument("--interval", type=float, default=SAMPLE_SECONDS, help="RSS sampling period in seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "flood_memory.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="aivcs-flood-") as folder:
        tmp = Path(folder)
        db = args.db or f"surrealkv://{tmp / 'data'}"
        daemon = start_daemon(tmp, db=db)
        try:
            result = run_flood(daemon, db, args.events, args.batch, args.payload_bytes, args.interval)
        finally:
            code = daemon.stop()
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**asdict(result), "daemon_exit_code": code}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0 if result.stored_events == result.events and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
