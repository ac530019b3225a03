"""The real daemon's figures and scale checks, in one daemon process, in this order:

0. one AppendEvents at a time, then GetRun one at a time (sequential latency);
1. ten runs; unary AppendEvents (32 in flight, one run, so group commit
   can work), IngestEvents with 1 and with 100 events per message, and
   ReadEvents of the whole run the latter wrote (`batch_events` events);
2. a probe (IngestEvents, 100 per message, into a fresh run) with `few_runs`
   runs in the database, then again after creating runs up to `many_runs`;
3. enough runs for ListRuns page `deep_page`; page 1 against that page;
4. the scale run: RSS, a probe at its start, a fill to `scale_events`
   (FILL_BATCH per message), a probe at that length, RSS again; then
   ReadEvents of its seqs 1..read_events, which the engine reads from table
   files merged by compactions rather than from a fresh memtable.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench.clients import ClientPool
from bench.profile import Profiler
from bench.sizes import BATCH, FILL_BATCH, Sizes
from bench.stats import Rate
from harness.daemon import DaemonProcess
from harness.proc import RssSampler, rss_mb

SEQUENTIAL_RUN = "bench-sequential"
UNARY_RUN, INGEST_ONE_RUN, INGEST_BATCH_RUN = "bench-unary", "bench-ingest-1", "bench-ingest-100"
PROBE_FEW_RUN, PROBE_MANY_RUN, SCALE_RUN = "bench-probe-few", "bench-probe-many", "bench-scale"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class DaemonFigures:
    unary: Rate
    ingest_one: Rate
    ingest_batch: Rate
    probe_few_runs: Rate
    probe_many_runs: Rate
    runs_few: int
    runs_many: int
    page_first_s: list[float]
    page_deep_s: list[float]
    runs_listed: int
    probe_start: Rate
    probe_at_scale: Rate
    fill: Rate
    scale_length: int  # events in the scale run when the second probe started
    rss_before_mb: float
    rss_after_mb: float
    ingested_between_rss: int
    read: Rate
    read_at_scale: Rate
    sequential_append: Rate
    sequential_get_run: Rate
    extra: dict[str, Any] = field(default_factory=dict)


def measure(pool: ClientPool, daemon: DaemonProcess, sizes: Sizes, processes: int, profiler: Profiler) -> DaemonFigures:
    target, pid = daemon.target, daemon.process.pid
    rss_start = rss_mb(pid)

    first_runs = [SEQUENTIAL_RUN, UNARY_RUN, INGEST_ONE_RUN, INGEST_BATCH_RUN, PROBE_FEW_RUN, SCALE_RUN]
    first_runs += [f"bench-spare-{i}" for i in range(sizes.few_runs - len(first_runs))]
    pool.create_runs(target, first_runs)
    runs = len(first_runs)

    say(f"daemon: AppendEvents one at a time, then GetRun one at a time, {sizes.sequential_calls} calls each")
    with profiler.phase("sequential-append"):
        sequential_append = pool.sequential_appends(target, SEQUENTIAL_RUN, sizes.sequential_calls)
    with profiler.phase("sequential-get-run"):
        sequential_get_run = pool.get_runs(target, SEQUENTIAL_RUN, sizes.sequential_calls)
    say(
        f"  AppendEvents p50 {sequential_append.p50_ms:.2f} ms, p99 {sequential_append.p99_ms:.2f} ms; "
        f"GetRun p50 {sequential_get_run.p50_ms:.2f} ms, p99 {sequential_get_run.p99_ms:.2f} ms"
    )

    say(f"daemon: unary AppendEvents, {sizes.unary_calls} calls over {processes} client process(es)")
    with profiler.phase("unary"):
        unary = pool.unary(target, UNARY_RUN, sizes.unary_calls, processes)
    say(f"  {unary.per_second:,.0f} events/s, p50 {unary.p50_ms:.2f} ms, p99 {unary.p99_ms:.2f} ms")

    say(f"daemon: IngestEvents, 1 event per message, {sizes.stream_messages} messages")
    with profiler.phase("ingest-1"):
        ingest_one = pool.ingest(target, INGEST_ONE_RUN, sizes.stream_messages, 1)
    say(f"  {ingest_one.per_second:,.0f} events/s")

    say(f"daemon: IngestEvents, {BATCH} events per message, {sizes.batch_events} events")
    with profiler.phase("ingest-100"):
        ingest_batch = pool.ingest(target, INGEST_BATCH_RUN, sizes.batch_events // BATCH, BATCH)
    say(f"  {ingest_batch.per_second:,.0f} events/s")

    say(f"daemon: ReadEvents of the {sizes.batch_events:,}-event run just written")
    with profiler.phase("read"):
        read = pool.read(target, INGEST_BATCH_RUN, 1, sizes.batch_events)
    say(f"  {read.per_second:,.0f} events/s")

    probe_messages = sizes.probe_events // BATCH
    say(f"daemon: probe ({sizes.probe_events} events, {BATCH} per message) with {runs} runs in the database")
    probe_few = pool.ingest(target, PROBE_FEW_RUN, probe_messages, BATCH)
    say(f"  {probe_few.per_second:,.0f} events/s")

    more = [f"bench-run-{i}" for i in range(sizes.many_runs - runs - 1)] + [PROBE_MANY_RUN]
    say(f"daemon: creating {len(more)} runs")
    created = pool.create_runs(target, more)
    runs += len(more)
    say(f"  {created.per_second:,.0f} runs/s")
    say(f"daemon: probe with {runs} runs in the database")
    probe_many = pool.ingest(target, PROBE_MANY_RUN, probe_messages, BATCH)
    say(f"  {probe_many.per_second:,.0f} events/s")

    if runs < sizes.runs_for_listing:
        extra_runs = [f"bench-list-{i}" for i in range(sizes.runs_for_listing - runs)]
        say(f"daemon: creating {len(extra_runs)} more runs for ListRuns")
        pool.create_runs(target, extra_runs)
        runs += len(extra_runs)
    say(f"daemon: ListRuns page 1 against page {sizes.deep_page} (page_size {sizes.page_size}, {runs} runs)")
    with profiler.phase("list-runs"):
        pages = pool.list_pages(target, sizes.page_size, sizes.deep_page, sizes.page_repeats)

    rss_before = rss_mb(pid)
    say(f"daemon: scale run: probe at its start (RSS {rss_before:.1f} MB)")
    probe_start = pool.ingest(target, SCALE_RUN, probe_messages, BATCH)
    say(f"  {probe_start.per_second:,.0f} events/s")
    length = sizes.probe_events
    fill_messages = (sizes.scale_events - length) // FILL_BATCH
    say(f"daemon: filling the scale run to {length + fill_messages * FILL_BATCH:,} events, {FILL_BATCH} per message")
    with profiler.phase("fill"), RssSampler(pid, interval=max(1.0, sizes.scale_events / 200_000)) as sampler:
        fill = pool.ingest(target, SCALE_RUN, fill_messages, FILL_BATCH, first=length, prebuild=False)
    length += fill.events
    say(f"  {fill.per_second:,.0f} events/s, daemon RSS peak {sampler.peak_mb:.1f} MB")
    say(f"daemon: scale run: probe at {length:,} events")
    probe_end = pool.ingest(target, SCALE_RUN, probe_messages, BATCH, first=length)
    say(f"  {probe_end.per_second:,.0f} events/s")
    rss_after = rss_mb(pid)
    say(f"  RSS {rss_before:.1f} MB -> {rss_after:.1f} MB")

    say(f"daemon: ReadEvents of seq 1..{sizes.read_events} of the scale run")
    with profiler.phase("read-at-scale"):
        read_at_scale = pool.read(target, SCALE_RUN, 1, sizes.read_events)
    say(f"  {read_at_scale.per_second:,.0f} events/s")

    return DaemonFigures(
        unary=unary,
        ingest_one=ingest_one,
        ingest_batch=ingest_batch,
        probe_few_runs=probe_few,
        probe_many_runs=probe_many,
        runs_few=len(first_runs),
        runs_many=len(first_runs) + len(more),
        page_first_s=pages["first"],
        page_deep_s=pages["deep"],
        runs_listed=runs,
        probe_start=probe_start,
        probe_at_scale=probe_end,
        fill=fill,
        scale_length=length,
        rss_before_mb=rss_before,
        rss_after_mb=rss_after,
        ingested_between_rss=probe_start.events + fill.events + probe_end.events,
        read=read,
        read_at_scale=read_at_scale,
        sequential_append=sequential_append,
        sequential_get_run=sequential_get_run,
        extra={
            "rss_at_start_mb": round(rss_start, 1),
            "rss_at_end_mb": round(rss_mb(pid), 1),
            "rss_during_fill": sampler.samples_mb(),
        },
    )
