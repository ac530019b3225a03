"""How the CLI shows things: rich tables for people, JSON for scripts, one line per event."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from aivcs.ledger._models import Event, Release, Run, RunStatus, Verification, ns_to_rfc3339

STATUS_STYLE = {
    RunStatus.RUNNING: "cyan",
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "yellow",
}


# Keys are sorted so that two reads of the same data print the same bytes:
# exports can be diffed and hashed whatever order the daemon's maps come in.


def dumps(value: Any) -> str:
    """Compact JSON, one document per line (JSON Lines), keys sorted."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def pretty(value: Any) -> str:
    """Indented JSON, keys sorted."""
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)


def short(digest: str | None, width: int = 12) -> str:
    return "" if not digest else digest[:width]


def when(moment: datetime | None) -> str:
    """Local time with its UTC offset, e.g. 2026-01-31 13:00:00+01:00: never a time without its zone."""
    if moment is None:
        return ""
    return moment.astimezone().isoformat(sep=" ", timespec="seconds")


def duration(ms: int) -> str:
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def status_text(status: RunStatus) -> Text:
    return Text(status.value, style=STATUS_STYLE[status])


def runs_table(runs: Iterable[Run]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("RUN ID", "AGENT", "STATUS", "EVENTS", "CREATED", "DURATION", "SPEC"):
        table.add_column(
            name, justify="right" if name in {"EVENTS", "DURATION"} else "left", no_wrap=name in {"RUN ID", "SPEC"}
        )
    for run in runs:
        table.add_row(
            run.run_id,
            run.agent_name,
            status_text(run.status),
            str(run.total_events),
            when(run.created_at),
            duration(run.duration_ms) if run.status.terminal else "",
            short(run.spec_digest),
        )
    return table


def run_table(run: Run, verification: Verification | None = None) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("run_id", run.run_id),
        ("agent", run.agent_name),
        ("status", status_text(run.status)),
        ("events", str(run.total_events)),
        ("spec_digest", run.spec_digest),
        ("git_sha", run.git_sha or ""),
        ("created", when(run.created_at)),
        ("completed", when(run.completed_at)),
        ("duration", duration(run.duration_ms) if run.status.terminal else ""),
        ("final_state", run.final_state_digest or ""),
        ("events_digest", run.events_digest),
    ]
    if run.status_reason:
        rows.append(("reason", run.status_reason))
    if run.inactivity_timeout_ms:
        rows.append(("inactivity_timeout", duration(run.inactivity_timeout_ms)))
    if run.last_activity_at is not None:
        rows.append(("last_activity", when(run.last_activity_at)))
    if run.tags:
        rows.append(("tags", dumps(run.tags)))
    evaluation = run.evaluation
    if evaluation.rubric_path or evaluation.is_promotion_gate or evaluation.agent_phase:
        rows.append(("evaluation", dumps(evaluation.to_dict())))
    if verification is not None:
        verdict = (
            Text("ok", style="green")
            if verification.ok
            else Text(f"BROKEN at seq {verification.first_broken_seq}: {verification.reason}", style="bold red")
        )
        rows.append(("chain", verdict))
    for name, value in rows:
        table.add_row(name, value)
    return table


def releases_table(releases: Iterable[Release]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("#", "AGENT", "SPEC", "LABEL", "BY", "CREATED", "NOTES"):
        table.add_column(name, justify="right" if name == "#" else "left")
    for release in releases:
        notes = release.notes or ""
        if release.rollback_of is not None:
            notes = f"rollback to #{release.rollback_of}" + (f"; {notes}" if notes else "")
        table.add_row(
            str(release.sequence),
            release.agent_name,
            short(release.spec_digest),
            release.version_label or "",
            release.promoted_by,
            when(release.created_at),
            notes,
        )
    return table


def event_line(event: Event) -> str:
    """`seq  time  kind  payload`, one line, for reading and following runs in a terminal."""
    return f"{event.seq:>6}  {ns_to_rfc3339(event.timestamp_ns)}  {event.kind}  {dumps(event.payload)}"


def make_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """A console for tables; piped into a file or another program, it does not squeeze them to 80 columns."""
    console = Console(file=file, stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console.width = 240
    return console
