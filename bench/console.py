"""`python -m bench.console [--events N]`: how fast the web console opens a large run.

Starts the real daemon (durable SurrealKV storage, --http-listen), writes one
run of N events (100,000 by default) through IngestEvents, then opens its run
page in Debian's chromium, fresh tab each time, and times from navigation to
the first page of events on screen; the same for the last page (a jump to
the run's tail), and the JSON API's page reads alone. The target: a
100,000-event run opens in under a second. Exit status 0 when every
measurement ran; --strict also fails on a missed target.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from aivcs.ledger.v1 import event_pb2, event_stream_pb2, event_stream_pb2_grpc, run_ledger_pb2, run_ledger_pb2_grpc
from google.protobuf import struct_pb2
from playwright.sync_api import sync_playwright

from harness.browser import CHROMIUM_ARGS
from harness.httpd import HttpDaemon, call, start_http_daemon

TARGET_SECONDS = 1.0
PAGE = 200  # the console's page of events (app.js EVENTS_PAGE)
BATCH = 1000


def write_run(served: HttpDaemon, events: int) -> str:
    with served.daemon.channel() as channel:
        runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
        run_id = runs.CreateRun(
            run_ledger_pb2.CreateRunRequest(spec_digest="d" * 64, agent_name="bench-console")
        ).run.run_id

        def batches() -> Iterator[event_stream_pb2.IngestEventsRequest]:
            for batch_id, first in enumerate(range(1, events + 1, BATCH)):
                inputs = []
                for seq in range(first, min(first + BATCH, events + 1)):
                    payload = struct_pb2.Struct()
                    payload.update({"step": seq, "tool": "search", "args": {"query": f"q{seq}", "top_k": 5}})
                    inputs.append(event_pb2.EventInput(kind="tool_call" if seq % 2 else "tool_result", payload=payload))
                yield event_stream_pb2.IngestEventsRequest(batch_id=batch_id, run_id=run_id, events=inputs)

        stream = event_stream_pb2_grpc.EventStreamStub(channel).IngestEvents(batches(), timeout=3600)
        for answer in stream:
            if answer.HasField("error"):
                raise RuntimeError(f"ingest refused: {answer.error.message}")
    return run_id


def open_page(browser: object, url: str, last_seq: int, selector: str = "") -> float:
    """Seconds from navigating a new tab to `url` until `selector` (default: event `last_seq`) is on screen."""
    page = browser.new_page()  # type: ignore[attr-defined]
    try:
        began = time.perf_counter()
        page.goto(url)
        page.locator(selector or f'#events li[data-seq="{last_seq}"]').wait_for(timeout=60_000)
        return time.perf_counter() - began
    finally:
        page.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.console", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium is not on PATH: run make install", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        served = start_http_daemon(Path(tmp), db=f"surrealkv://{Path(tmp) / 'data'}")
        try:
            began = time.perf_counter()
            run_id = write_run(served, args.events)
            print(f"wrote {args.events:,} events in {time.perf_counter() - began:.1f}s")
            tail_from = max(1, args.events - PAGE + 1)
            api = {
                "first page": f"/v1/runs/{run_id}/events?limit={PAGE}",
                "last page": f"/v1/runs/{run_id}/events?from_seq={tail_from}&limit={PAGE}",
            }
            figures: dict[str, list[float]] = {}
            for name, path in api.items():
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    answer = call(served.base, path)
                    times.append(time.perf_counter() - start)
                    assert answer.status == 200 and len(answer.body["events"]) == min(PAGE, args.events)
                figures[f"API GET events, {name}"] = times
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                # Baseline: a new tab loading the console's list of one run, the cost every page pays.
                listed = f'tr[data-run-id="{run_id}"]'
                open_page(browser, served.base + "/", 0, listed)
                figures["baseline: console opens the runs list"] = [
                    open_page(browser, served.base + "/", 0, listed) for _ in range(args.repeats)
                ]
                pages = {
                    "first page": (f"/#/runs/{run_id}", min(PAGE, args.events)),
                    "last page": (f"/#/runs/{run_id}?from={tail_from}", args.events),
                }
                for name, (fragment, last_seq) in pages.items():
                    open_page(browser, served.base + fragment, last_seq)  # warm the browser's cache of app.js
                    figures[f"console opens the run, {name}"] = [
                        open_page(browser, served.base + fragment, last_seq) for _ in range(args.repeats)
                    ]
                browser.close()
        finally:
            served.daemon.stop()
    missed = False
    print(f"{'measurement':<42} {'median':>8} {'max':>8}  target (the worst of the repeats)")
    for name, times in figures.items():
        target = name.startswith("console opens the run")
        median, worst = statistics.median(times), max(times)
        verdict = ("met" if worst < TARGET_SECONDS else "MISSED") if target else ""
        missed = missed or (target and worst >= TARGET_SECONDS)
        print(f"{name:<42} {median * 1000:>6.0f}ms {worst * 1000:>6.0f}ms  {'< 1 s ' + verdict if target else ''}")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
