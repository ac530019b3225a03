"""`aivcs-ledgerd repair --db surrealkv://PATH`: cut a damaged write-ahead log at the damage, and say what is lost.

The daemon refuses to open an embedded store whose log is damaged in the
middle (store/wal.py), because the engine would drop every record after the
damage without a word. Repairing is the operator's decision: this command
keeps the log up to the first bad record (a consistent state: the store as
it was just before the damaged write), moves everything after it into a
folder beside the store (PATH.lost-TIMESTAMP, for forensics), opens the
store and reports which runs lost which events. Run it with the daemon
stopped.
"""

from __future__ import annotations

import asyncio
import fcntl
import shutil
import sys
import time
from pathlib import Path
from typing import BinaryIO

import click

from aivcs_ledgerd.store import Database, StoreError, check_url, wal
from aivcs_ledgerd.store.database import SURREALKV_SCHEMES, wal_folder
from aivcs_ledgerd.store.events import run_head


def _lock(data: Path) -> BinaryIO:
    """Hold the store's LOCK file, which the engine holds while open; refuse when a daemon has it."""
    lock = (data / "LOCK").open("a+b")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise click.ClickException(f"{data} is open in a running daemon (its LOCK is held): stop it first") from None
    return lock


def cut_log(url: str, lost_folder: Path) -> tuple[list[str], wal.Loss]:
    """Cut the log of `url` at its first damage; move what follows into `lost_folder`. (lines, loss)."""
    folder = wal_folder(url)
    assert folder is not None
    found = wal.scan(folder)
    first_bad = next((index for index, segment in enumerate(found) if segment.problem is not None), None)
    if first_bad is None:
        return [], wal.Loss()
    lines = []
    total = wal.Loss()
    lost_folder.mkdir(parents=True)
    for index, segment in enumerate(found[first_bad:], start=first_bad):
        data = segment.path.read_bytes()
        start = segment.good_end if index == first_bad else 0
        lost = wal.loss(data, start)
        (lost_folder / segment.path.name).write_bytes(data[start:])
        if index == first_bad:
            wal.cut(segment)
            lines.append(
                f"cut {segment.path.name} at offset {start}: {segment.problem} at offset "
                f"{segment.problem_at}; {segment.records} records before it kept"
            )
        else:
            segment.path.unlink()
            lines.append(f"removed {segment.path.name} (written after the damage, {segment.size} bytes)")
        total.bytes += lost.bytes
        total.records += lost.records
        total.unreadable_bytes += lost.unreadable_bytes
        total.events_by_run.update(lost.events_by_run)
        total.runs_written |= lost.runs_written
        total.other_records += lost.other_records
    return lines, total


async def describe_runs(url: str, lost: wal.Loss) -> list[str]:
    """Per run touched by the lost records: how many event records were lost, and where the run ends now."""
    events_by_run, runs_written = lost.events_by_run, lost.runs_written
    at_least = "at least " if lost.unreadable_bytes else ""  # a damaged record cannot be read
    db = await Database.open(url)
    try:
        lines = []
        for run_id in sorted(set(events_by_run) | runs_written):
            head = await run_head(db, run_id)
            now = (
                "gone (it was created in the lost part)"
                if head is None
                else (f"now ends at seq {head.last_seq} ({head.status.name})")
            )
            lines.append(f"  run {run_id!r}: {at_least}{events_by_run.get(run_id, 0)} event records lost; {now}")
        return lines
    finally:
        await db.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    envvar="AIVCS_LEDGER_DB",
    required=True,
    show_envvar=True,
    help="The embedded store to repair: surrealkv://PATH or file://PATH. Stop its daemon first.",
)
def command(db: str) -> None:
    """Cut a damaged write-ahead log at the damage, keep what follows aside, and report what was lost."""
    if check_url(db) not in SURREALKV_SCHEMES:
        raise click.BadParameter("repair is for embedded stores, surrealkv://PATH or file://PATH", param_hint="--db")
    folder = wal_folder(db)
    assert folder is not None
    data = folder.parent
    if not (data / "LOCK").exists() and not folder.exists():
        raise click.BadParameter(f"{data} holds no store", param_hint="--db")
    lock = _lock(data)
    try:
        torn, damaged = wal.check(folder)
        if not damaged and not torn:
            click.echo(f"the write-ahead log of {db} is sound: nothing to repair")
            return
        lost_folder = data.with_name(f"{data.name}.lost-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        free = shutil.disk_usage(data).free
        needed = sum(segment.size - segment.good_end for segment in torn + damaged)
        if free < needed + (1 << 20):
            raise click.ClickException(
                f"{free} bytes free, {needed} needed to keep the dropped part in {lost_folder}: free space first"
            )
        lines, lost = cut_log(db, lost_folder)
    finally:
        lock.close()
    click.echo(f"repaired {db}:")
    for line in lines:
        click.echo(f"  {line}")
    click.echo(
        f"lost: {lost.bytes} bytes of write-ahead log, {lost.records} transactions readable "
        f"({lost.unreadable_bytes} bytes unreadable); kept in {lost_folder}"
    )
    try:
        for line in asyncio.run(describe_runs(db, lost)):
            click.echo(line)
    except StoreError as error:
        click.echo(f"the repaired store does not open: {error}", err=True)
        sys.exit(1)
    if lost.other_records:
        click.echo(f"  and {lost.other_records} other keys (index entries, releases, idempotency keys)")
    click.echo("the daemon can be started again")
