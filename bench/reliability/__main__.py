"""The command: each campaign asked for, in turn, in one temporary folder; exit 0 only if every invariant held."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import reliability
from bench.reliability import crash, hostile, say, soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reliability",
        description=reliability.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs of the daemon under load (0: skip)")
    parser.add_argument("--unary-clients", type=int, default=3)
    parser.add_argument("--stream-clients", type=int, default=3)
    parser.add_argument("--runs", type=int, default=4, help="runs the clients share")
    parser.add_argument("--min-uptime", type=float, default=0.2, help="seconds a daemon serves at least")
    parser.add_argument("--max-uptime", type=float, default=2.0, help="seconds a daemon serves at most")
    parser.add_argument("--soak-seconds", type=float, default=120, help="mixed-traffic soak (0: skip)")
    parser.add_argument("--hostile-examples", type=int, default=300, help="examples per hostile property (0: skip)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", action="store_true", help="keep the storage folders and daemon logs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="aivcs-reliability-"))
    say(f"seed {args.seed}; working in {workdir}")
    result: dict[str, Any] = {"seed": args.seed}
    ok = True
    if args.kills:
        folder = workdir / "crash"
        folder.mkdir()
        result["crash"], passed = crash.run(
            folder,
            args.kills,
            args.unary_clients,
            args.stream_clients,
            args.runs,
            args.seed,
            (args.min_uptime, args.max_uptime),
        )
        ok &= passed
    if args.soak_seconds:
        folder = workdir / "soak"
        folder.mkdir()
        result["soak"], passed = soak.run(folder, args.soak_seconds, args.seed)
        ok &= passed
    if args.hostile_examples:
        folder = workdir / "hostile"
        folder.mkdir()
        result["hostile"], passed = hostile.run(folder, args.hostile_examples)
        ok &= passed
    crashes = (
        result.get("crash", {}).get("daemon_crashes", 0)
        + (0 if result.get("soak", {}).get("daemon_alive", True) else 1)
        + result.get("hostile", {}).get("daemon_crashes", 0)
    )
    say(f"daemon crashes (all parts): {crashes}")
    say("RESULT:", "every invariant held" if ok else "INVARIANTS BROKEN")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
