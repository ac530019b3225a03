"""`python -m bench.dump [--events N]`: restore and dump N events through `aivcs-ledger`, events/s and peak RSS.

1. Writes a dump file of N events (default 1,000,000) in runs of
   --events-per-run, with valid hash chains, as `aivcs-ledger dump` would.
2. `aivcs-ledger restore FILE` into a daemon on durable SurrealKV storage:
   every chain recomputed, staged in batches, each run created whole.
3. `aivcs-ledger dump -o FILE` of that daemon, and a check that the new
   dump holds the same records (header aside).

Both commands run as subprocesses: their peak RSS is the kernel's figure
for the process (wait4's ru_maxrss); the daemon's is its VmHWM, reset
between the phases. Prints a table and one JSON document (also written to
--json-out).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aivcs_ledgerd.ledger.backup import format as fmt
from aivcs_ledgerd.ledger.canonical import canonical_json
from aivcs_ledgerd.ledger.chain import event_digest
from bench.servers import start_ledger_daemon

SPEC = hashlib.sha256(b"bench.dump").hexdigest()
CLI = [sys.executable, "-m", "aivcs.ledger"]


@dataclass
class Phase:
    name: str
    events: int
    seconds: float
    events_per_second: float
    client_peak_rss_mb: float
    daemon_peak_rss_mb: float
    file_bytes: int


def write_dump(path: Path, events: int, per_run: int) -> int:
    """A dump of `events` events in runs of `per_run`, completed runs with valid chains; returns the run count."""
    runs = (events + per_run - 1) // per_run
    base_ns = time.time_ns() - 86_400 * 10**9
    with path.open("w", encoding="utf-8") as out:
        out.write(fmt.encode(fmt.header(time.time_ns(), "bench", {})) + "\n")
        kind_json = canonical_json("kind", "step")
        written = 0
        for number in range(runs):
            count = min(per_run, events - written)
            run_id = f"bench-{number:07d}"
            created = base_ns + number * 1_000_000
            lines, head = [], ""
            for seq in range(1, count + 1):
                payload = {"i": seq, "ratio": seq / 7, "text": "résumé ✓", "tool": "search", "ok": True}
                timestamp = created + seq * 1000
                head = event_digest(head, seq, kind_json, canonical_json("payload", payload), timestamp)
                lines.append(fmt.encode(fmt.event_record(run_id, [seq, "step", payload, timestamp, head])))
            row = {
                "run_id": run_id,
                "spec_digest": SPEC,
                "agent_name": f"agent-{number % 10}",
                "status": "completed",
                "total_events": count,
                "success": True,
                "duration_ms": count,
                "created_ns": created,
                "completed_at_ns": created + (count + 1) * 1000,
                "events_digest": head,
                "last_activity_at_ns": created + count * 1000,
            }
            out.write(fmt.encode(fmt.run_record(row)) + "\n")
            out.write("\n".join(lines) + "\n")
            written += count
        out.write(fmt.encode(fmt.end(runs, events, 0, 0)) + "\n")
    return runs


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def _reset_hwm(pid: int) -> None:
    with contextlib.suppress(OSError):  # resets VmHWM to the current RSS (Linux 4.0+)
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def run_cli(args: list[str], target: str, cwd: Path) -> tuple[float, float, str]:
    """Run `aivcs-ledger ARGS`; (seconds, peak RSS MB, stderr). Fails loudly on a non-zero exit."""
    began = time.monotonic()
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [*CLI, "--target", target, *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "NO_COLOR": "1"},
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - began
        err.seek(0)
        text = err.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"aivcs-ledger {' '.join(args)} exited {process.returncode}:\n{text}")
    return seconds, usage.ru_maxrss * 1024 / 1e6, text


def table(phases: list[Phase]) -> str:
    head = (
        f"{'phase':<8} {'events':>10} {'seconds':>9} {'events/s':>10} {'client RSS MB':>14} "
        f"{'daemon RSS MB':>14} {'file MB':>9}"
    )
    rows = [
        f"{p.name:<8} {p.events:>10,} {p.seconds:>9.1f} {p.events_per_second:>10,.0f} "
        f"{p.client_peak_rss_mb:>14.1f} {p.daemon_peak_rss_mb:>14.1f} {p.file_bytes / 1e6:>9.1f}"
        for p in phases
    ]
    return "\n".join([head, *rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dump", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the ledger (default 1,000,000)")
    parser.add_argument("--events-per-run", type=int, default=1000, help="events per run (default 1,000)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON figures here")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-dump-") as folder:
        tmp = Path(folder)
        source = tmp / "generated.jsonl"
        began = time.monotonic()
        runs = write_dump(source, options.events, options.events_per_run)
        print(
            f"wrote {options.events:,} events in {runs:,} runs ({source.stat().st_size / 1e6:.0f} MB) "
            f"in {time.monotonic() - began:.1f} s",
            file=sys.stderr,
        )
        daemon = start_ledger_daemon(tmp)
        pid = daemon.process.pid
        try:
            _reset_hwm(pid)
            seconds, client_mb, text = run_cli(["restore", str(source), "--no-progress"], daemon.target, tmp)
            print(text.strip(), file=sys.stderr)
            restore = Phase(
                "restore",
                options.events,
                seconds,
                options.events / seconds,
                client_mb,
                _hwm_mb(pid),
                source.stat().st_size,
            )
            _reset_hwm(pid)
            dumped = tmp / "dumped.jsonl"
            seconds, client_mb, text = run_cli(["dump", "-o", str(dumped), "--no-progress"], daemon.target, tmp)
            print(text.strip(), file=sys.stderr)
            dump = Phase(
                "dump",
                options.events,
                seconds,
                options.events / seconds,
                client_mb,
                _hwm_mb(pid),
                dumped.stat().st_size,
            )
        finally:
            daemon.stop()
        same = _same_records(source, dumped)
    phases = [restore, dump]
    print(table(phases))
    figures: dict[str, Any] = {
        "events": options.events,
        "runs": runs,
        "events_per_run": options.events_per_run,
        "dump_matches_restored_file": same,
        "phases": [asdict(p) for p in phases],
    }
    print(json.dumps(figures, indent=2))
    if options.json_out is not None:
        options.json_out.write_text(json.dumps(figures, indent=2) + "\n")
    if not same:
        raise SystemExit("the dump does not hold the records that were restored")


def _same_records(first: Path, second: Path) -> bool:
    """Whether two dumps hold the same records after their headers (compared line by line, as parsed JSON)."""
    with first.open(encoding="utf-8") as a, second.open(encoding="utf-8") as b:
        next(a), next(b)
        try:
            return all(json.loads(x) == json.loads(y) for x, y in zip(a, b, strict=True))
        except ValueError:  # one holds more lines
            return False


if __name__ == "__main__":
    main()
