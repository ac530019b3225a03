"""`python -m bench.replicas_campaign`: replicas and the database server killed again and again under load.

Three replicas on the stand-in SurrealDB server over SurrealKV
(harness/surrealdb_stand_in.py); writers append single events with
idempotency keys to shared runs through all three, retrying and failing
over as a client does. Every `--interval` seconds one event happens at
random: a replica is killed (SIGKILL) and started again, a replica is
drained (SIGTERM) and started again, or the database server is killed and
started again on the same data. At the end: every acknowledged append is
stored exactly once where its acknowledgement said, seqs are contiguous,
VerifyRun is ok, and the longest time without any acknowledgement.

    python -m bench.replicas_campaign [--events 30] [--interval 4] [--writers 12] [--seed N]
"""

from __future__ import annotations

import argparse
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

from harness.daemon import start_daemon
from harness.replicas import Tally, check_stored, create_runs, longest_pause, start_replicas, stop_replicas, write
from harness.surrealdb_stand_in import stand_in_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replicas_campaign",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=30, help="kills and restarts in all")
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between them")
    parser.add_argument("--writers", type=int, default=12)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=random.randrange(1_000_000))
    options = parser.parse_args(argv)
    chance = random.Random(options.seed)
    counts = {"sigkill": 0, "sigterm": 0, "database": 0}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        with stand_in_server(tmp, f"surrealkv://{tmp / 'kv'}") as server:
            replicas = start_replicas(tmp, server.url, 3, extra=["--health-interval", "0.5"])
            targets = [r.target for r in replicas]
            run_ids = create_runs(targets[0], options.runs)
            stop, tally = threading.Event(), Tally()
            writers = threading.Thread(
                target=write, args=(targets, run_ids, options.writers), kwargs={"until": stop, "tally": tally}
            )
            started = time.monotonic()
            writers.start()
            try:
                for number in range(options.events):
                    time.sleep(options.interval)
                    what = chance.choice(["sigkill", "sigkill", "sigterm", "database"])
                    counts[what] += 1
                    if what == "database":
                        server.restart()
                    else:
                        index = chance.randrange(len(replicas))
                        replicas[index].stop(signal.SIGKILL if what == "sigkill" else signal.SIGTERM)
                        # Back on the same port (the later --listen wins), as a restarted pod keeps its Service.
                        replicas[index] = start_daemon(
                            tmp, server.url, ["--health-interval", "0.5", "--listen", targets[index]], timeout=60
                        )
                    print(
                        f"{number + 1}/{options.events}: {what}; {len(tally.acknowledged)} acknowledged, "
                        f"{tally.refused} retried",
                        flush=True,
                    )
                time.sleep(options.interval)
            finally:
                stop.set()
                writers.join()
            problems = check_stored(replicas[0].target, run_ids, tally)
            stop_replicas(replicas)
    pause = longest_pause(tally, started)
    print(
        f"seed {options.seed}: {counts}; {len(tally.acknowledged)} appends acknowledged, "
        f"{tally.refused} retried of {tally.attempts} attempts, {len(tally.failures)} given up; "
        f"longest pause {pause:.2f}s; problems: {problems[:10] or 'none'}"
    )
    for failure in tally.failures[:10]:
        print(f"given up: {failure}")
    return 1 if problems or tally.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
