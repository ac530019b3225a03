"""Sequential latency: one call at a time, what an agent feels between two steps.

AppendEvents with one event and GetRun of a stored run, each call sent only
after the previous one was answered, against the no-storage server
(bench/null_server.py) with the same messages; and the embedded engine
driven directly with one-event transactions, with the seed's indexes, with
no secondary index on run_events (the daemon's layout), and with no
secondary index at all, as the engine's own limits. The same layouts are
also measured in bulk (100 and 1,000 events per transaction).

The daemon's layout is also driven paced: each one-event transaction after
an idle pause as long as the no-storage server's sequential p50, as an
agent's appends reach the engine. An engine woken from idle answers more
slowly than one called back to back, so "no-storage + paced engine" is the
floor no server on this engine can go under, and its ratio to the
no-storage p50 says whether the 3x target can be met on the machine at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.engine import LAYOUTS, LayoutCeilings
from bench.report import Row
from bench.stats import Rate

P50_TARGET = 3.0  # one append at a time: p50 at most this many times the no-storage server's


@dataclass(frozen=True, slots=True)
class Latencies:
    """One server's sequential AppendEvents and GetRun."""

    append: Rate
    get_run: Rate


def _ms_row(
    key: str, figure: str, value: float, reference: float, name: str, target: float | None = None, detail: bool = False
) -> Row:
    ratio = value / reference if reference > 0 else math.nan
    if target is None:
        return Row(key, figure, value, "ms", reference, name, ratio, "(none)", None, detail)
    return Row(key, figure, value, "ms", reference, name, ratio, f"<= {target:g} x", ratio <= target, detail)


def rows(null: Latencies, daemon: Latencies, layouts: dict[str, LayoutCeilings]) -> list[Row]:
    engine = layouts[LAYOUTS[1]].single  # the layout the daemon writes
    paced = layouts[LAYOUTS[1]].paced
    out = [
        _ms_row(
            "sequential_append_p50_ms",
            "AppendEvents one at a time, p50",
            daemon.append.p50_ms,
            null.append.p50_ms,
            "no-storage p50",
            P50_TARGET,
        ),
        _ms_row(
            "sequential_append_p99_ms",
            "AppendEvents one at a time, p99",
            daemon.append.p99_ms,
            null.append.p99_ms,
            "no-storage p99",
            detail=True,
        ),
        _ms_row(
            "sequential_append_engine_ms",
            "AppendEvents one at a time, p50",
            daemon.append.p50_ms,
            null.append.p50_ms + engine.p50_ms,
            "no-storage + engine",
            detail=True,
        ),
    ]
    if paced is not None:
        # What no server on this engine can beat: the wire's round trip plus the engine's transaction
        # when it has been idle for that round trip, as it is between one agent's appends.
        floor = null.append.p50_ms + paced.p50_ms
        out += [
            _ms_row(
                "sequential_append_paced_engine_ms",
                "AppendEvents one at a time, p50",
                daemon.append.p50_ms,
                floor,
                "no-storage + paced engine",
                detail=True,
            ),
            _ms_row(
                "sequential_append_floor_ms",
                "no-storage + paced engine, p50",
                floor,
                null.append.p50_ms,
                "no-storage p50",
                detail=True,
            ),
        ]
    out += [
        _ms_row(
            "sequential_get_run_p50_ms",
            "GetRun one at a time, p50",
            daemon.get_run.p50_ms,
            null.get_run.p50_ms,
            "no-storage p50",
        ),
        _ms_row(
            "sequential_get_run_p99_ms",
            "GetRun one at a time, p99",
            daemon.get_run.p99_ms,
            null.get_run.p99_ms,
            "no-storage p99",
            detail=True,
        ),
    ]
    bare = layouts[LAYOUTS[-1]].single.p50_ms
    for layout, ceiling in layouts.items():
        out.append(
            _ms_row(
                f"engine_single_p50_ms[{layout}]",
                f"engine 1-event transaction p50, {layout}",
                ceiling.single.p50_ms,
                bare,
                "no secondary index",
            )
        )
    if paced is not None:
        out.append(
            _ms_row(
                "engine_single_paced_p50_ms",
                f"engine 1-event transaction p50, {LAYOUTS[1]}, paced",
                paced.p50_ms,
                engine.p50_ms,
                "back to back",
            )
        )
    for size in next(iter(layouts.values())).bulk:
        best = layouts[LAYOUTS[-1]].bulk[size].per_second
        for layout, ceiling in layouts.items():
            rate = ceiling.bulk[size].per_second
            out.append(
                Row(
                    f"engine_bulk_{size}[{layout}]",
                    f"engine insert {size}/tx, {layout}",
                    rate,
                    "events/s",
                    best,
                    "no secondary index",
                    rate / best,
                    "(none)",
                    None,
                )
            )
    return out


def summary(null: Latencies, daemon: Latencies) -> str:
    def line(name: str, rate: Rate) -> str:
        return f"{name} p50 {rate.p50_ms:.2f} ms, p99 {rate.p99_ms:.2f} ms"

    return (
        f"sequential: daemon {line('AppendEvents', daemon.append)}; {line('GetRun', daemon.get_run)}; "
        f"no-storage {line('AppendEvents', null.append)}; {line('GetRun', null.get_run)}"
    )
