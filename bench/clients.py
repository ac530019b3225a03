"""The client processes that drive a server, started once and reused.

One Python client process can be the bottleneck of a measurement, so load
can be spread over several (spawned, never forked: gRPC does not survive a
fork). A manager-held barrier starts the processes of one measurement
together; its rate is all their events over the span from the first start
to the last finish. The same pool, with the same number of processes, runs
the ceiling and the daemon figure it is compared with.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType

from bench.loads import CreateRuns, GetRuns, Ingest, Job, ListPages, Outcome, Read, Unary, run_job
from bench.sizes import IN_FLIGHT
from bench.stats import Rate
from harness.proc import cpu_seconds, main_thread_cpu_seconds


def _idle(seconds: float) -> None:
    time.sleep(seconds)


def split(total: int, parts: int) -> list[int]:
    """`total` in `parts` near-equal shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class ClientPool:
    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.processes = processes
        self.server_pid: int | None = None  # the server whose CPU time each measurement reports
        self._manager = context.Manager()
        self._executor = ProcessPoolExecutor(max_workers=processes, mp_context=context)
        # Spawn every process now, not in the middle of a measurement.
        list(self._executor.map(_idle, [0.2] * processes))

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._executor.shutdown(cancel_futures=True)
        self._manager.shutdown()

    def run(self, jobs: list[Job]) -> list[Outcome]:
        """Run `jobs` at once, one per process."""
        if len(jobs) > self.processes:
            raise ValueError(f"{len(jobs)} jobs for {self.processes} client processes")
        barrier = self._manager.Barrier(len(jobs)) if len(jobs) > 1 else None
        pid = self.server_pid
        before = (cpu_seconds(pid), main_thread_cpu_seconds(pid)) if pid is not None else None
        futures = [self._executor.submit(run_job, job, barrier) for job in jobs]
        outcomes = [future.result() for future in futures]
        if before is not None and pid is not None:
            # Includes the few warm-up calls before the clock starts; close enough.
            outcomes[0].extra["server_cpu"] = cpu_seconds(pid) - before[0]
            outcomes[0].extra["server_loop_cpu"] = main_thread_cpu_seconds(pid) - before[1]
        return outcomes

    # The measurements, as jobs for the pool.

    def unary(self, target: str, run_id: str, calls: int, processes: int, first: int = 0) -> Rate:
        """AppendEvents, one event per call, IN_FLIGHT calls in flight over `processes` processes."""
        jobs: list[Job] = []
        offset = first
        for share, in_flight in zip(split(calls, processes), split(IN_FLIGHT, processes), strict=True):
            jobs.append(Unary(target, run_id, share, in_flight, offset))
            offset += share
        return combine(self.run(jobs), processes)

    def sequential_appends(self, target: str, run_id: str, calls: int) -> Rate:
        """AppendEvents, one event per call, one call at a time: what an agent between two steps waits."""
        return combine(self.run([Unary(target, run_id, calls, 1)]), 1)

    def get_runs(self, target: str, run_id: str, calls: int) -> Rate:
        """GetRun of `run_id`, one call at a time."""
        return combine(self.run([GetRuns(target, run_id, calls)]), 1)

    def ingest(
        self, target: str, run_id: str, messages: int, per_message: int, first: int = 0, prebuild: bool = True
    ) -> Rate:
        """One pipelined IngestEvents stream (one process: one stream)."""
        return combine(self.run([Ingest(target, run_id, messages, per_message, first, prebuild)]), 1)

    def read(self, target: str, run_id: str, from_seq: int, to_seq: int) -> Rate:
        return combine(self.run([Read(target, run_id, from_seq, to_seq)]), 1)

    def create_runs(self, target: str, run_ids: list[str]) -> Rate:
        """CreateRun for every id, IN_FLIGHT at a time over all processes."""
        jobs: list[Job] = []
        start = 0
        for share, in_flight in zip(split(len(run_ids), self.processes), split(IN_FLIGHT, self.processes), strict=True):
            if share:
                jobs.append(CreateRuns(target, tuple(run_ids[start : start + share]), in_flight))
            start += share
        outcomes = self.run(jobs)
        rate = combine(outcomes, len(jobs))
        rate.events = sum(outcome.messages for outcome in outcomes)
        return rate

    def list_pages(self, target: str, page_size: int, deep_page: int, repeats: int) -> dict[str, list[float]]:
        [outcome] = self.run([ListPages(target, page_size, deep_page, repeats)])
        return {"first": outcome.extra["first"], "deep": outcome.extra["deep"]}


def combine(outcomes: list[Outcome], processes: int) -> Rate:
    started = min(outcome.started for outcome in outcomes)
    finished = max(outcome.finished for outcome in outcomes)
    latencies = [latency for outcome in outcomes for latency in outcome.latencies]
    seconds = finished - started
    rate = Rate(sum(outcome.events for outcome in outcomes), seconds, latencies, processes)
    if seconds > 0:
        rate.client_cpu = sum(outcome.cpu for outcome in outcomes) / seconds
        if "server_cpu" in outcomes[0].extra:
            rate.server_cpu = outcomes[0].extra["server_cpu"] / seconds
            rate.server_loop_cpu = outcomes[0].extra["server_loop_cpu"] / seconds
    return rate
