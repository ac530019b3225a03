"""`python -m bench.mlflow_compare`: the daemon against MLflow's tracking server, same client shape.

Optional: needs MLflow in the same environment (`.venv/bin/pip install mlflow`;
it is not a dev dependency), and says so and exits 0 when it is absent.

Both servers run on this machine as their own process, with one worker
(MLflow: `mlflow server --workers 1` on a SQLite file; the daemon: default
settings on `surrealkv://`), in temporary folders. One sequential client each,
through each project's own Python client (aivcs.ledger.Client, MlflowClient):

- per event: one call per event, each sent after the previous answer
  (AppendEvents of one event; log_metric of one value);
- batches of 1,000: AppendEvents of 1,000 events; log_batch of 1,000 metrics
  (MLflow's largest batch).

An event is the benchmark's usual `tool_call` event; a metric is one value
at a step. The ratio is the daemon's events per second over MLflow's.

An info row gives the ceiling of the batch ratio on this machine: the
daemon's append transaction of 1,000 rows sent straight to the engine (no
client, wire or server), the same number of batches, on a fresh durable
database.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from aivcs.ledger import Client

from bench import engine, workload
from bench.servers import on_servers_loop, start_ledger_daemon
from bench.stats import Rate
from harness.daemon import free_port

BATCH = 1000
SIZES = {"full": (1000, 20), "quick": (300, 8), "smoke": (30, 2)}  # (per-event calls, batches) per server


def _timed(calls: int, events_per_call: int, call: Callable[[int], object]) -> Rate:
    latencies = []
    started = time.perf_counter()
    for i in range(calls):
        sent = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - sent)
    return Rate(calls * events_per_call, time.perf_counter() - started, latencies)


def _mlflow_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (tmp / "mlflow.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp / 'mlflow.db'}",
            "--default-artifact-root",
            str(tmp / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log_text = (tmp / "mlflow.log").read_text()[-3000:]
                raise RuntimeError(f"mlflow server did not start:\n{log_text}") from None
            time.sleep(0.3)


def measure_mlflow(tmp: Path, calls: int, batches: int) -> tuple[Rate, Rate]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    process, url = _mlflow_server(tmp)
    try:
        client = MlflowClient(tracking_uri=url)
        experiment = client.create_experiment("aivcs-bench")
        run_id = client.create_run(experiment).info.run_id
        for i in range(20):  # warm: connection, server caches
            client.log_metric(run_id, "warm", float(i), step=i)
        now = int(time.time() * 1000)
        per_event = _timed(
            calls, 1, lambda i: client.log_metric(run_id, workload.KIND, float(i), timestamp=now, step=i)
        )

        def batch(i: int) -> None:
            metrics = [Metric(workload.KIND, float(n), now, n) for n in range(i * BATCH, (i + 1) * BATCH)]
            client.log_batch(run_id, metrics=metrics)

        batched = _timed(batches, BATCH, batch)
    finally:
        process.terminate()
        process.wait(30)
    return per_event, batched


def measure_daemon(tmp: Path, calls: int, batches: int) -> tuple[Rate, Rate]:
    daemon = start_ledger_daemon(tmp)
    try:
        with Client(daemon.target) as client:
            run = client.runs.create(workload.SPEC_DIGEST, workload.AGENT)
            for i in range(20):
                client.events.append(run.run_id, [(workload.KIND, workload.payload(-1 - i))])
            per_event = _timed(
                calls, 1, lambda i: client.events.append(run.run_id, [(workload.KIND, workload.payload(i))])
            )
            bodies = [
                [(workload.KIND, workload.payload(n)) for n in range(i * BATCH, (i + 1) * BATCH)]
                for i in range(batches)
            ]
            batched = _timed(batches, BATCH, lambda i: client.events.append(run.run_id, bodies[i]))
    finally:
        daemon.stop(timeout=120)
    return per_event, batched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mlflow_compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("mlflow") is None:
        print("skipped: MLflow is not installed in this environment (.venv/bin/pip install mlflow to compare)")
        return 0
    calls, batches = SIZES["smoke" if args.smoke else "quick" if args.quick else "full"]
    with tempfile.TemporaryDirectory(prefix="aivcs-bench-mlflow-") as folder:
        tmp = Path(folder)
        (tmp / "daemon").mkdir()
        (tmp / "mlflow").mkdir()
        ours = measure_daemon(tmp / "daemon", calls, batches)
        theirs = measure_mlflow(tmp / "mlflow", calls, batches)
        ceiling = on_servers_loop(engine.daemon_layout_bulk(tmp / "engine", batches * BATCH, BATCH))
    print(f"one sequential client each; per event: {calls} calls; batches: {batches} of {BATCH}")
    print(f"{'figure':<28} {'daemon':>12} {'MLflow':>12} {'ratio':>7}  target")
    for name, daemon, mlflow, target in (
        ("per event, events/s", ours[0], theirs[0], 20.0),
        (f"batch of {BATCH}, events/s", ours[1], theirs[1], 3.0),
    ):
        ratio = daemon.per_second / mlflow.per_second
        verdict = "PASS" if ratio >= target else "FAIL"
        print(
            f"{name:<28} {daemon.per_second:>12,.0f} {mlflow.per_second:>12,.0f} {ratio:>7.2f}  >= {target:g} x "
            f"{verdict}   (p50 {daemon.p50_ms:.2f} ms against {mlflow.p50_ms:.2f} ms)"
        )
    print(
        f"{'  info: engine alone, 1000/tx':<28} {ceiling.per_second:>12,.0f} {theirs[1].per_second:>12,.0f} "
        f"{ceiling.per_second / theirs[1].per_second:>7.2f}  the batch ratio's ceiling here "
        f"(p50 {ceiling.p50_ms:.2f} ms a transaction)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
