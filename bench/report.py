"""The table and the JSON: each figure, what it is compared with, the ratio, the target."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.daemon_figures import DaemonFigures
from bench.engine import EngineCeilings
from bench.sizes import BATCH, FILL_BATCH, IN_FLIGHT, Sizes
from bench.stats import Rate, median

RSS_LIMIT_MB = 100.0
SLOWDOWN_LIMIT = 1.25


@dataclass(frozen=True, slots=True)
class Ceilings:
    null_unary: Rate
    null_stream: Rate
    engine: EngineCeilings
    calibration: dict[int, Rate]  # client processes -> no-storage unary rate


@dataclass(frozen=True, slots=True)
class Row:
    key: str  # stable name for tools reading the JSON
    figure: str
    value: float
    unit: str
    reference: float
    reference_name: str
    ratio: float
    target: str
    passed: bool | None  # None: reported, no target
    detail: bool = False  # a detail of the row above it

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "figure": self.figure,
            "value": _round(self.value),
            "unit": self.unit,
            "reference": _round(self.reference),
            "reference_name": self.reference_name,
            "ratio": _round(self.ratio, 3),
            "target": self.target,
            "passed": self.passed,
        }


def _round(value: float, digits: int = 2) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def _at_least(key: str, figure: str, rate: Rate, ceiling: Rate, name: str, share: float) -> Row:
    ratio = rate.per_second / ceiling.per_second
    return Row(
        key, figure, rate.per_second, "events/s", ceiling.per_second, name, ratio, f">= {share:g} x", ratio >= share
    )


def _latency(which: str, value: float, ceiling: float) -> Row:
    return Row(
        f"unary_{which}_ms",
        f"AppendEvents unary latency {which}",
        value,
        "ms",
        ceiling,
        f"no-storage {which}, ms",
        value / ceiling,
        "(none)",
        None,
        detail=True,
    )


def rows(sizes: Sizes, ceilings: Ceilings, figures: DaemonFigures) -> list[Row]:
    first_ms, deep_ms = median(figures.page_first_s) * 1000, median(figures.page_deep_s) * 1000
    start, at_scale = figures.probe_start.per_second, figures.probe_at_scale.per_second
    few, many = figures.probe_few_runs.per_second, figures.probe_many_runs.per_second
    growth = figures.rss_after_mb - figures.rss_before_mb
    engine_growth = ceilings.engine.insert_rss_per_event_kb * figures.ingested_between_rss / 1000
    return [
        _at_least(
            "unary",
            f"AppendEvents unary, 1 event, {IN_FLIGHT} in flight",
            figures.unary,
            ceilings.null_unary,
            "no-storage unary",
            0.8,
        ),
        _latency("p50", figures.unary.p50_ms, ceilings.null_unary.p50_ms),
        _latency("p99", figures.unary.p99_ms, ceilings.null_unary.p99_ms),
        _at_least(
            "ingest_1",
            "IngestEvents, 1 event per message",
            figures.ingest_one,
            ceilings.null_stream,
            "no-storage stream",
            0.7,
        ),
        _at_least(
            "ingest_100",
            f"IngestEvents, {BATCH} events per message",
            figures.ingest_batch,
            ceilings.engine.insert,
            f"engine insert {BATCH}/tx",
            0.7,
        ),
        Row(
            "ingest_100_checkpointed",
            f"IngestEvents, {BATCH} events per message (as above)",
            figures.ingest_batch.per_second,
            "events/s",
            ceilings.engine.insert_checkpointed.per_second,
            "engine + checkpoints",
            figures.ingest_batch.per_second / ceilings.engine.insert_checkpointed.per_second,
            "(none)",
            None,
            detail=True,
        ),
        _at_least(
            "read",
            f"ReadEvents, a {sizes.batch_events:,}-event run",
            figures.read,
            ceilings.engine.read,
            "engine range read",
            0.7,
        ),
        Row(
            "read_at_scale",
            f"ReadEvents, seq 1..{sizes.read_events:,} of the scale run",
            figures.read_at_scale.per_second,
            "events/s",
            ceilings.engine.read.per_second,
            "engine range read",
            figures.read_at_scale.per_second / ceilings.engine.read.per_second,
            "(none)",
            None,
        ),
        Row(
            "list_runs",
            f"ListRuns page {sizes.deep_page} (size {sizes.page_size}, {figures.runs_listed:,} runs), ms",
            deep_ms,
            "ms",
            first_ms,
            "page 1, ms",
            deep_ms / first_ms,
            f"<= {SLOWDOWN_LIMIT:g} x",
            deep_ms / first_ms <= SLOWDOWN_LIMIT,
        ),
        Row(
            "append_at_scale",
            f"append probe at event {figures.scale_length:,} (slowdown)",
            at_scale,
            "events/s",
            start,
            "same probe at event 0",
            start / at_scale,
            f"<= {SLOWDOWN_LIMIT:g} x",
            start / at_scale <= SLOWDOWN_LIMIT,
        ),
        Row(
            "many_runs",
            f"append probe with {figures.runs_many:,} runs in db (slowdown)",
            many,
            "events/s",
            few,
            f"with {figures.runs_few} runs",
            few / many,
            "(none)",
            None,
        ),
        Row(
            "rss_growth",
            f"daemon RSS growth over {figures.ingested_between_rss:,} events ingested",
            growth,
            "MB",
            engine_growth,
            "engine alone, same n",
            growth / engine_growth if engine_growth > 0 else math.nan,
            f"<= {RSS_LIMIT_MB:g} MB",
            growth <= RSS_LIMIT_MB,
        ),
    ]


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def table(sizes: Sizes, ceilings: Ceilings, figures: DaemonFigures, result_rows: list[Row], processes: int) -> str:
    lines = [
        f"aivcs-ledgerd benchmark ({sizes.mode} mode); unary load from {processes} client process(es), "
        f"{IN_FLIGHT} calls in flight in all; streams from 1 process",
        "",
    ]
    head = f"{'figure':<58} {'value':>10} {'unit':<8} {'compared with':<22} {'ref':>10} {'ratio':>6}  target     "
    lines += [head, "-" * len(head)]
    for row in result_rows:
        verdict = "info" if row.passed is None else ("PASS" if row.passed else "FAIL")
        ratio = "-" if math.isnan(row.ratio) else f"{row.ratio:.2f}"
        figure = f"  {row.figure}" if row.detail else row.figure
        lines.append(
            f"{figure:<58} {_number(row.value):>10} {row.unit:<8} {row.reference_name:<22} "
            f"{_number(row.reference):>10} {ratio:>6}  {row.target:<9} {verdict}"
        )
    lines += [
        "",
        "CPU while measuring, in cores busy on average (of "
        f"{os.cpu_count()}): server process, engine threads included (its main thread, the event loop's) / "
        "client processes",
    ]
    for label, rate in _cpu_rows(ceilings, figures):
        client = "-" if math.isnan(rate.client_cpu) else f"{rate.client_cpu:.2f}"
        loop = "" if math.isnan(rate.server_loop_cpu) else f" ({rate.server_loop_cpu:.2f})"
        lines.append(f"  {label:<40} {rate.server_cpu:5.2f}{loop:<7} / {client}")
    lines += [
        "",
        "client processes for the no-storage unary ceiling: "
        + ", ".join(f"{n}: {rate.per_second:,.0f}/s" for n, rate in sorted(ceilings.calibration.items()))
        + f" -> {processes} used",
        "engine ceilings by encoding: "
        + "; ".join(
            f"{encoding}: insert {insert.per_second:,.0f}/s, read {read.per_second:,.0f}/s, "
            f"RSS +{ceilings.engine.rss_per_event_kb[encoding]:.2f} KB per event inserted"
            for encoding, (insert, read) in ceilings.engine.variants.items()
        ),
        f"fill of the scale run ({figures.fill.events:,} events, {FILL_BATCH} per message): "
        f"{figures.fill.per_second:,.0f} events/s; daemon RSS {figures.rss_before_mb:.1f} -> "
        f"{figures.rss_after_mb:.1f} MB",
    ]
    return "\n".join(lines)


def _cpu_rows(ceilings: Ceilings, figures: DaemonFigures) -> list[tuple[str, Rate]]:
    return [
        ("no-storage unary", ceilings.null_unary),
        ("daemon unary", figures.unary),
        ("no-storage stream, 1/message", ceilings.null_stream),
        ("daemon IngestEvents, 1/message", figures.ingest_one),
        (f"engine insert ({ceilings.engine.insert_via}), in-process", ceilings.engine.insert),
        ("engine insert (rows) + checkpoints", ceilings.engine.insert_checkpointed),
        (f"daemon IngestEvents, {BATCH}/message", figures.ingest_batch),
        (f"engine read ({ceilings.engine.read_via}), in-process", ceilings.engine.read),
        ("daemon ReadEvents", figures.read),
        ("daemon ReadEvents of the scale run", figures.read_at_scale),
        ("daemon fill of the scale run", figures.fill),
    ]


def document(
    sizes: Sizes,
    ceilings: Ceilings,
    figures: DaemonFigures,
    result_rows: list[Row],
    processes: int,
    meta: dict[str, Any],
    hot: dict[str, Any],
) -> dict[str, Any]:
    return {
        "meta": meta,
        "sizes": sizes.as_dict(),
        "client_processes": {"unary": processes, "streams": 1},
        "figures": [row.as_dict() for row in result_rows],
        "ceilings": {
            "no_storage_unary": ceilings.null_unary.as_dict(),
            "no_storage_stream": ceilings.null_stream.as_dict(),
            "engine_insert": {"via": ceilings.engine.insert_via, **ceilings.engine.insert.as_dict()},
            "engine_read": {"via": ceilings.engine.read_via, **ceilings.engine.read.as_dict()},
            "engine_insert_checkpointed": ceilings.engine.insert_checkpointed.as_dict(),
            "engine_by_encoding": {
                encoding: {
                    "insert": insert.as_dict(),
                    "read": read.as_dict(),
                    "rss_growth_kb_per_event": round(ceilings.engine.rss_per_event_kb[encoding], 3),
                }
                for encoding, (insert, read) in ceilings.engine.variants.items()
            },
            "calibration_unary_by_processes": {str(n): r.as_dict() for n, r in ceilings.calibration.items()},
        },
        "daemon": {
            "unary": figures.unary.as_dict(),
            "ingest_1_per_message": figures.ingest_one.as_dict(),
            "ingest_100_per_message": figures.ingest_batch.as_dict(),
            "read": figures.read.as_dict(),
            "read_at_scale": figures.read_at_scale.as_dict(),
            "list_runs_ms": {
                "page_1": [round(s * 1000, 3) for s in figures.page_first_s],
                f"page_{sizes.deep_page}": [round(s * 1000, 3) for s in figures.page_deep_s],
            },
            "probe_few_runs": {"runs": figures.runs_few, **figures.probe_few_runs.as_dict()},
            "probe_many_runs": {"runs": figures.runs_many, **figures.probe_many_runs.as_dict()},
            "probe_run_start": figures.probe_start.as_dict(),
            "probe_at_scale": {"run_length": figures.scale_length, **figures.probe_at_scale.as_dict()},
            "fill": figures.fill.as_dict(),
            "rss_mb": {
                "before": round(figures.rss_before_mb, 1),
                "after": round(figures.rss_after_mb, 1),
                "events_between": figures.ingested_between_rss,
                **figures.extra,
            },
        },
        "profile": hot,
    }


def write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
