"""`python -m bench [--quick] [--smoke]`: the daemon against measured ceilings, in one run.

Full mode takes about a quarter of an hour on two cores; --quick (CI-sized
scale checks) a couple of minutes; --smoke, tiny sizes, well under a
minute, only to prove the benchmark itself works. Exit status 0 when
every measurement ran, whatever the ratios (absolute numbers are noisy on
shared machines); --strict also fails on a missed target.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bystander, daemon_figures, engine, otlp_figures, report, sequential
from bench.clients import ClientPool
from bench.daemon_figures import say
from bench.profile import Profiler
from bench.servers import REPO, on_servers_loop, servers_event_loop, start_ledger_daemon, start_null_server
from bench.sizes import BATCH, LAYOUT_BATCHES, Sizes, choose
from bench.stats import Rate


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="CI-sized: 100,000-event scale run, 1,000 runs (about 2 minutes)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the benchmark runs")
    parser.add_argument(
        "--clients",
        default="auto",
        help="client processes for the unary load: a number, or auto (measure 1 and 2 "
        "against the no-storage server and keep the faster)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench.json", help="JSON report")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the daemon with py-spy during each figure (bench-results/profile-*.txt)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


def measure_ceilings(
    pool: ClientPool, tmp: Path, sizes: Sizes, candidates: list[int]
) -> tuple[report.Ceilings, int, sequential.Latencies, dict[str, engine.LayoutCeilings]]:
    null = start_null_server(tmp)
    pool.server_pid = null.process.pid
    try:
        calibration: dict[int, Rate] = {}
        for processes in candidates:
            say(f"ceiling: no-storage unary, {sizes.unary_calls} calls over {processes} client process(es)")
            calibration[processes] = pool.unary(null.target, "null-unary", sizes.unary_calls, processes)
            say(f"  {calibration[processes].per_second:,.0f} events/s")
        # More processes only when clearly faster: they share the two cores with the server.
        best = candidates[0]
        for processes in candidates[1:]:
            if calibration[processes].per_second > 1.1 * calibration[best].per_second:
                best = processes
        say(f"ceiling: no-storage stream, 1 event per message, {sizes.stream_messages} messages")
        stream = pool.ingest(null.target, "null-stream", sizes.stream_messages, 1)
        say(f"  {stream.per_second:,.0f} events/s")
        say(f"ceiling: no-storage AppendEvents and GetRun one at a time, {sizes.sequential_calls} calls each")
        null_latencies = sequential.Latencies(
            pool.sequential_appends(null.target, "null-sequential", sizes.sequential_calls),
            pool.get_runs(null.target, "null-sequential", sizes.sequential_calls),
        )
        say(
            f"  AppendEvents p50 {null_latencies.append.p50_ms:.2f} ms, "
            f"GetRun p50 {null_latencies.get_run.p50_ms:.2f} ms"
        )
    finally:
        null.stop()
        pool.server_pid = None
    say(f"ceiling: engine inserts, {sizes.batch_events} events, {BATCH} per transaction; reads, 1000 per query")
    direct = on_servers_loop(engine.ceilings(tmp, sizes.batch_events, BATCH, sizes.engine_read_passes))
    for encoding, (inserts, reads) in direct.variants.items():
        say(f"  {encoding}: inserts {inserts.per_second:,.0f} events/s, reads {reads.per_second:,.0f} events/s")
    say(
        f"ceiling: engine index layouts: {sizes.layout_single} one-event transactions, then "
        f"{sizes.layout_events} events at " + " and ".join(f"{n}" for n in LAYOUT_BATCHES) + " per transaction"
    )
    # Paced by the wire: each transaction after the no-storage server's sequential p50 of idle.
    pace = null_latencies.append.p50_ms / 1000
    layouts = on_servers_loop(engine.layouts(tmp, sizes.layout_single, sizes.layout_events, LAYOUT_BATCHES, pace))
    for layout, figures in layouts.items():
        bulk = ", ".join(f"{n}/tx {rate.per_second:,.0f} events/s" for n, rate in figures.bulk.items())
        paced = "" if figures.paced is None else f" ({figures.paced.p50_ms:.2f} ms paced {pace * 1000:.2f} ms apart)"
        say(f"  {layout}: one-event p50 {figures.single.p50_ms:.2f} ms{paced}; {bulk}")
    return report.Ceilings(calibration[best], stream, direct, calibration), best, null_latencies, layouts


def meta() -> dict[str, Any]:
    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "grpcio": version("grpcio"),
        "surrealdb": version("surrealdb"),
        "event_loop": servers_event_loop(),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = choose(args.quick, args.smoke)
    candidates = _client_counts(args.clients, args.smoke)
    info = meta()
    say(f"event loop of both servers: {servers_event_loop()} (AIVCS_LEDGER_EVENT_LOOP chooses it)")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aivcs-bench-") as folder, ClientPool(max(candidates)) as pool:
        tmp = Path(folder)
        ceilings, processes, null_latencies, layouts = measure_ceilings(pool, tmp, sizes, candidates)
        say("daemon: starting on surrealkv:// in a temporary folder")
        daemon = start_ledger_daemon(tmp)
        pool.server_pid = daemon.process.pid
        try:
            profiler = Profiler(daemon.process.pid, args.out.parent if args.profile else None)
            if args.profile:
                args.out.parent.mkdir(parents=True, exist_ok=True)
            figures = daemon_figures.measure(pool, daemon, sizes, processes, profiler)
            say("daemon: bystander append p99, unloaded, with filtered readers, with idle subscribers")
            others = bystander.measure(daemon, *bystander.SIZES[sizes.mode])
            say(
                f"  {others.unloaded_p99_ms:.1f} / {others.filtered_readers_p99_ms:.1f} / "
                f"{others.idle_subscribers_p99_ms:.1f} ms"
            )
            spans = otlp_figures.span_count(sizes)
            say(
                f"daemon: OTLP Export against IngestEvents, the same {spans:,} spans, "
                f"{otlp_figures.SPANS_PER_EXPORT} per request"
            )
            with profiler.phase("otlp"):
                otlp = otlp_figures.measure(daemon.target, daemon.process.pid, sizes)
            for name, rate in zip(("IngestEvents", "Export"), otlp, strict=True):
                say(
                    f"  {name}: {rate.per_second:,.0f} spans/s, server {rate.server_cpu:.2f} cores, "
                    f"client {rate.client_cpu:.2f}"
                )
        except BaseException:
            # The log lives in the temporary folder, which goes with the exception: keep its end.
            print(f"daemon log, last lines:\n{daemon.log()[-4000:]}", file=sys.stderr)
            raise
        finally:
            try:
                code = daemon.stop(timeout=120)
            except subprocess.TimeoutExpired:
                daemon.process.kill()  # never leave a hung daemon behind
                raise
        if code != 0:
            raise RuntimeError(f"the daemon exited with {code} on SIGTERM:\n{daemon.log()[-2000:]}")
    info |= {
        "db": "surrealkv:// (temporary folder)",
        "seconds": round(time.monotonic() - began, 1),
        "load_average_at_end": os.getloadavg(),
    }
    daemon_latencies = sequential.Latencies(figures.sequential_append, figures.sequential_get_run)
    result_rows = (
        sequential.rows(null_latencies, daemon_latencies, layouts)
        + report.rows(sizes, ceilings, figures)
        + bystander.rows(others)
        + otlp_figures.rows(*otlp)
    )
    print(report.table(sizes, ceilings, figures, result_rows, processes))
    if profiler.hot:
        print(_hot_text(profiler.hot))
    document = report.document(sizes, ceilings, figures, result_rows, processes, info, profiler.hot)
    report.write(
        args.out,
        document
        | {
            "bystander": others.as_dict(),
            "sequential": {
                "no_storage": {"append": null_latencies.append.as_dict(), "get_run": null_latencies.get_run.as_dict()},
                "daemon": {"append": daemon_latencies.append.as_dict(), "get_run": daemon_latencies.get_run.as_dict()},
                "engine_layouts": {
                    layout: {"single": c.single.as_dict(), **{f"bulk_{n}": r.as_dict() for n, r in c.bulk.items()}}
                    for layout, c in layouts.items()
                },
            },
        },
    )
    print(
        f"\n{info['seconds']:.0f} s; load average {info['load_average_at_start'][0]:.2f} at start, "
        f"{info['load_average_at_end'][0]:.2f} at end; JSON: {args.out}"
    )
    missed = [row.figure for row in result_rows if row.passed is False]
    return 1 if args.strict and missed else 0


def _client_counts(option: str, smoke: bool) -> list[int]:
    if option != "auto":
        return [int(option)]
    return [1] if smoke else [1, 2]


def _hot_text(hot: dict[str, Any]) -> str:
    lines = ["", "daemon profile (py-spy): top self time per figure, % of busy samples; then inclusive"]
    for phase, data in hot.items():
        spots = ", ".join(f"{name} {pct}%" for name, pct in data.get("self_pct", [])[:6])
        within = ", ".join(f"{name} {pct}%" for name, pct in data.get("inclusive_pct", [])[:6])
        busy, waiting = data.get("samples", 0), data.get("waiting_samples", 0)
        lines.append(f"  {phase} ({busy} busy, {waiting} waiting samples): {spots or data.get('error', '')}")
        if within:
            lines.append(f"    inclusive: {within}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
