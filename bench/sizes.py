"""How much work each mode does: the full run, --quick for CI, --smoke for a test."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Sizes:
    mode: str
    unary_calls: int  # AppendEvents calls, one event each, for the unary figures
    stream_messages: int  # IngestEvents messages with one event each
    batch_events: int  # events sent 100 per message (daemon) or per transaction (engine)
    read_events: int  # ReadEvents at scale: seq 1..read_events of the scale run (info row)
    engine_read_passes: int  # passes over the engine's run for the read ceiling
    scale_events: int  # the scale run's length before the second probe; RSS is taken around it
    probe_events: int  # events per throughput probe (100 per message)
    few_runs: int  # runs in the database for the first probe
    many_runs: int  # runs in the database for the second probe
    page_size: int  # ListRuns page size
    deep_page: int  # the page compared with page 1
    page_repeats: int  # timings of each page; the median is reported
    sequential_calls: int  # AppendEvents and GetRun calls one at a time, for the latency figures
    layout_single: int  # one-event engine transactions per index layout
    layout_events: int  # events inserted in bulk per index layout and transaction size

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def runs_for_listing(self) -> int:
        """Enough runs that `deep_page` is full."""
        return self.page_size * self.deep_page + self.page_size


BATCH = 100  # events per message / transaction for the batched figures
# Events per message when filling a run. Not larger: the engine's cost per event
# grows with the transaction beyond a few hundred events (see commit 2f8f375).
FILL_BATCH = 100
IN_FLIGHT = 32  # unary calls in flight, over all client processes
LAYOUT_BATCHES = (100, 1000)  # events per transaction of the engine's bulk inserts per index layout

FULL = Sizes(
    mode="full",
    unary_calls=20_000,
    stream_messages=30_000,
    batch_events=100_000,
    read_events=100_000,
    engine_read_passes=3,
    scale_events=1_000_000,
    probe_events=50_000,
    few_runs=10,
    many_runs=10_000,
    page_size=50,
    deep_page=100,
    page_repeats=9,
    sequential_calls=2_000,
    layout_single=1_000,
    layout_events=50_000,
)

QUICK = Sizes(
    mode="quick",
    unary_calls=5_000,
    stream_messages=10_000,
    batch_events=20_000,
    read_events=100_000,
    engine_read_passes=2,
    scale_events=100_000,
    probe_events=20_000,
    few_runs=10,
    many_runs=1_000,
    page_size=50,
    deep_page=100,
    page_repeats=7,
    sequential_calls=500,
    layout_single=300,
    layout_events=5_000,
)

SMOKE = Sizes(
    mode="smoke",
    unary_calls=300,
    stream_messages=500,
    batch_events=2_000,
    read_events=2_000,
    engine_read_passes=1,
    scale_events=3_000,
    probe_events=1_000,
    few_runs=10,
    many_runs=40,
    page_size=5,
    deep_page=10,
    page_repeats=3,
    sequential_calls=50,
    layout_single=30,
    layout_events=1_000,
)


def choose(quick: bool, smoke: bool) -> Sizes:
    if smoke:
        return SMOKE
    return QUICK if quick else FULL
