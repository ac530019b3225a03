"""Rates and percentiles of measured work."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted `values`."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclass(slots=True)
class Rate:
    """`events` done in `seconds` of wall time; per-call latencies when measured."""

    events: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds
    processes: int = 1
    server_cpu: float = math.nan  # cores the server process kept busy, on average
    server_loop_cpu: float = math.nan  # of those, its main thread (the event loop's): at 1.0 it bounds the rate
    client_cpu: float = math.nan  # cores the client processes kept busy, on average

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "events": self.events,
            "seconds": round(self.seconds, 4),
            "per_second": round(self.per_second, 1),
            "client_processes": self.processes,
        }
        if not math.isnan(self.server_cpu):
            out["server_cpu_cores"] = round(self.server_cpu, 2)
        if not math.isnan(self.server_loop_cpu):
            out["server_loop_thread_cpu_cores"] = round(self.server_loop_cpu, 2)
        if not math.isnan(self.client_cpu):
            out["client_cpu_cores"] = round(self.client_cpu, 2)
        if self.latencies:
            out |= {"p50_ms": round(self.p50_ms, 3), "p99_ms": round(self.p99_ms, 3)}
        return out
