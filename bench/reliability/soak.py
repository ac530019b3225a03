"""The soak at length: mixed traffic while the daemon's memory and descriptors are sampled (harness/soak.py)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.reliability import say
from harness.soak import SoakFigures, soak
from harness.supervisor import Supervisor


def run(folder: Path, seconds: float, seed: int) -> tuple[dict[str, Any], bool]:
    """The soak's figures (without the samples) and whether every bound held; printed at the end."""
    say(f"soak: {seconds:g} s of mixed traffic")
    supervisor = Supervisor(folder, f"surrealkv://{folder / 'ledger-data'}")
    target = supervisor.start()
    assert supervisor.process is not None
    try:
        figures = soak(target, supervisor.process.pid, seconds, seed)
    finally:
        exit_code = supervisor.stop()
    show(figures, exit_code)
    data = {k: v for k, v in asdict(figures).items() if k != "samples"} | {"exit_code": exit_code}
    return data, figures.ok and exit_code == 0


def show(figures: SoakFigures, exit_code: int) -> None:
    say(f"  operations             {figures.operations} {figures.by_operation}")
    say(f"  failures               {figures.failures}")
    say(f"  RSS MB after warm-up   {figures.rss_after_warmup_mb}, peak {figures.rss_peak_mb}")
    say(
        f"  with writes            +{figures.rss_growth_with_writes_mb} MB for {figures.events_stored_while_measured} "
        f"events stored ({figures.rss_bytes_per_event} B/event; bound {figures.rss_bound_with_writes_mb} MB)"
    )
    say(f"  read-only              +{figures.rss_growth_read_only_mb} MB (bound {figures.rss_bound_read_only_mb} MB)")
    say(
        f"  fds after warm-up      {figures.fds_after_warmup} -> peak {figures.fds_peak} "
        f"(growth {figures.fds_growth}, bound {figures.fd_bound})"
    )
    say(f"  daemon alive           {figures.daemon_alive}; SIGTERM exit code {exit_code}")
    say(
        f"  runs whose chain broke {len(figures.broken_runs)} of {figures.verify_checks} checked "
        f"{list(figures.broken_runs.items())[:3]}"
    )
