"""A bounded soak: mixed traffic against the real daemon while its memory and open files are sampled.

Creates, appends, IngestEvents streams, reads, ListRuns pages, VerifyRun,
subscriptions opened and abandoned, completions, promotions and rollbacks,
and a fresh connection per call from one client, all at once for
AIVCS_SOAK_SECONDS (default 20), the last 30% of it without writes. The
daemon's open file descriptors, read from /proc, must stay within a bound of
what they were after the warm-up. So must its RSS, with one allowance: the
embedded SurrealKV engine keeps about 1.3 KB of memory per stored event, so
while events are written the bound grows by 4 KB per event stored; in the
read-only phase it does not grow at all. A leak per call, per stream or per
connection shows in the read-only phase and in the file descriptors. The
long version: `python -m bench.reliability --soak-seconds 600`.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.codes import FORBIDDEN
from harness.soak import SoakFigures, soak
from harness.supervisor import Supervisor

SECONDS = float(os.environ.get("AIVCS_SOAK_SECONDS", "20"))


@dataclass
class Soaked:
    figures: SoakFigures
    exit_code: int

    def shown(self) -> dict[str, object]:
        return {k: v for k, v in vars(self.figures).items() if k != "samples"} | {"exit_code": self.exit_code}


@pytest.fixture(scope="module")
def soaked(tmp_path_factory: pytest.TempPathFactory) -> Soaked:
    if not Path("/proc/self/status").exists():
        pytest.skip("samples /proc")
    tmp_path = tmp_path_factory.mktemp("soak")
    supervisor = Supervisor(tmp_path, f"surrealkv://{tmp_path / 'ledger-data'}")
    target = supervisor.start()
    assert supervisor.process is not None
    try:
        figures = soak(target, supervisor.process.pid, SECONDS, seed=7)
    finally:
        exit_code = supervisor.stop(signal.SIGTERM)
    return Soaked(figures, exit_code)


@pytest.mark.timeout(int(SECONDS) + 300)
def test_memory_and_file_descriptors_stay_flat_under_mixed_traffic(soaked: Soaked) -> None:
    figures, shown = soaked.figures, soaked.shown()
    assert figures.daemon_alive, shown
    assert soaked.exit_code == 0, shown
    assert not figures.forbidden, shown
    assert not any("crashed" in key for key in figures.failures), shown
    for operation in (
        "CreateRun",
        "AppendEvents",
        "IngestEvents",
        "ReadEvents",
        "SubscribeEvents",
        "CompleteRun",
        "Promote",
        "ListRuns",
    ):
        assert figures.by_operation.get(operation, 0) > 0, f"no {operation} succeeded: {shown}"
    assert len(figures.samples) >= 10, shown
    assert figures.events_stored_while_measured > 0, shown
    assert figures.rss_growth_with_writes_mb <= figures.rss_bound_with_writes_mb, shown
    assert figures.rss_growth_read_only_mb <= figures.rss_bound_read_only_mb, shown
    assert figures.fds_growth <= figures.fd_bound, shown
    assert {code.name for code in FORBIDDEN}.isdisjoint(k.split()[-1] for k in figures.failures), shown


@pytest.mark.timeout(int(SECONDS) + 300)
def test_every_run_the_soak_wrote_still_verifies(soaked: Soaked) -> None:
    """The soak's payloads carry computed scores (full-precision doubles); every run must verify."""
    assert soaked.figures.verify_checks > 0
    assert not soaked.figures.broken_runs, soaked.figures.broken_runs
