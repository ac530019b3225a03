"""The crash campaign at length: `kills` SIGKILLs under load, then every run checked (harness/crash.py)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.reliability import say
from harness.crash import CrashFigures, crash_campaign


def run(
    folder: Path,
    kills: int,
    unary_clients: int,
    stream_clients: int,
    runs: int,
    seed: int,
    uptime: tuple[float, float],
) -> tuple[dict[str, Any], bool]:
    """The campaign's figures (crash logs cut short) and whether every invariant held; printed as it goes."""
    say(f"crash campaign: {kills} kills, {unary_clients} unary + {stream_clients} stream clients, {runs} runs")
    figures = crash_campaign(folder, kills, unary_clients, stream_clients, runs, seed, uptime, log=say)
    show(figures)
    data = asdict(figures)
    data["crash_logs"] = [log[-2000:] for log in figures.crash_logs]
    return data, figures.ok


def show(figures: CrashFigures) -> None:
    verdict = figures.before_restart
    say(f"  kills survived         {figures.kills} ({figures.early_kills} while starting or recovering)")
    say(f"  events acknowledged    {verdict.events_acknowledged}")
    say(f"  events stored          {verdict.events_stored}")
    say(f"  duplicates             {verdict.duplicates}")
    say(f"  gaps                   {verdict.gaps}")
    say(f"  lost / misplaced       {verdict.lost} / {verdict.misplaced}")
    say(f"  partial / invented     {verdict.partial} / {verdict.invented}")
    say(f"  retried batches        {verdict.retried_batches} (landed exactly once: {verdict.retried_landed_once})")
    say(f"  VerifyRun failures     {verdict.verify_failed}; replay mismatches {verdict.replay_mismatches}")
    say(f"  transient failures     {figures.transient_failures}")
    if verdict.lost_by_generation:
        early = set(figures.early_kill_generations)
        shown = {
            g: f"{n}{' (next start killed early)' if g + 1 in early else ''}"
            for g, n in sorted(verdict.lost_by_generation.items())
        }
        say(f"  misplaced batches by daemon generation that acknowledged them: {shown}")
    say(f"  daemon crashes         {figures.daemon_crashes}")
    say(
        f"  SIGTERM exit code      {figures.final_exit_code}; after a clean restart: "
        f"{'ok' if figures.after_restart.ok else figures.after_restart}"
    )
    say(
        f"  seconds                {figures.seconds} (restart to SERVING: median {figures.restart_seconds_median}, "
        f"max {figures.restart_seconds_max}; final check {figures.check_seconds})"
    )
    for problem in verdict.problems[:20]:
        say("   problem:", problem)
    for log in figures.crash_logs[:3]:
        say("   crash:", log[-1500:])
