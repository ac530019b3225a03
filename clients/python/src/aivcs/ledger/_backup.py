"""Dump a ledger to a JSON Lines file and restore one, through LedgerAdmin (the `dump` and `restore` commands).

The daemon makes and checks the records (docs/dump-format.md); this side
writes them one per line (gzip when the file name ends in `.gz`) and sends
them back unchanged, so a dump restores on any daemon that reads its
version. Both directions stream: memory holds one chunk of records.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf import timestamp_pb2

from aivcs.ledger._connection import Connection
from aivcs.ledger._errors import LedgerError, error_from_rpc
from aivcs.ledger.v1 import ledger_admin_pb2 as pb
from aivcs.ledger.v1 import ledger_admin_pb2_grpc

# Records per RestoreLedger request: large enough to amortise a message, far below its size limit.
RESTORE_CHUNK_RECORDS = 500
RESTORE_CHUNK_BYTES = 1 << 20


class DumpIncomplete(LedgerError):
    """The stream ended before the dump's end record: the file must not be used."""


@dataclass(slots=True)
class DumpFigures:
    runs: int = 0
    events: int = 0
    releases: int = 0
    bytes: int = 0  # uncompressed
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one run (run_id) or one agent's release history (agent_name)."""

    verdict: str  # "restored", "unchanged" or "refused"
    items: int
    run_id: str = ""
    agent_name: str = ""
    first_bad_seq: int | None = None
    reason: str = ""

    def describe(self) -> str:
        what = f"run {self.run_id}" if self.run_id else f"release history of {self.agent_name}"
        at = f" (first bad seq {self.first_bad_seq})" if self.first_bad_seq is not None and self.run_id else ""
        return f"{what}: {self.reason}{at}"


@dataclass(slots=True)
class RestoreFigures:
    records: int = 0
    events: int = 0
    complete: bool = False
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)  # "runs restored", "histories unchanged", ...
    refused: list[Outcome] = field(default_factory=list)

    def count(self, outcome: Outcome) -> None:
        key = f"{'runs' if outcome.run_id else 'histories'} {outcome.verdict}"
        self.counts[key] = self.counts.get(key, 0) + 1
        if outcome.verdict == "refused":
            self.refused.append(outcome)


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def open_dump_for_reading(path: Path) -> IO[str]:
    """The dump file's text, gunzipped when its name ends in .gz; '-' is standard input."""
    if str(path) == "-":
        import sys

        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def dump(
    connection: Connection,
    out: IO[str],
    *,
    agent_name: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    releases: bool = True,
    progress: Callable[[DumpFigures], None] | None = None,
) -> DumpFigures:
    """Write the daemon's dump to `out`, one record per line; DumpIncomplete when it ends without its end record."""
    request = pb.DumpLedgerRequest(skip_releases=not releases)
    if agent_name is not None:
        request.agent_name = agent_name
    if created_after is not None:
        request.created_after.CopyFrom(_timestamp(created_after))
    if created_before is not None:
        request.created_before.CopyFrom(_timestamp(created_before))
    figures = DumpFigures()
    began = time.monotonic()
    last = ""
    with connection.channel() as channel:
        stub = ledger_admin_pb2_grpc.LedgerAdminStub(channel)
        try:
            for response in stub.DumpLedger(request, metadata=connection.metadata):
                for record in response.records:
                    out.write(record)
                    out.write("\n")
                    figures.bytes += len(record) + 1
                if response.records:
                    last = response.records[-1]
                figures.runs, figures.events, figures.releases = response.runs, response.events, response.releases
                figures.seconds = time.monotonic() - began
                if progress is not None:
                    progress(figures)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None
    figures.seconds = time.monotonic() - began
    if not last.startswith('{"record":"end"'):
        raise DumpIncomplete("the daemon's dump ended before its end record; the file is incomplete")
    return figures


def dump_to_file(connection: Connection, path: Path, **options: Any) -> DumpFigures:
    """`dump` into `path` (gzip for .gz; '-' is standard output), replacing it only once the dump is whole."""
    if str(path) == "-":
        import sys

        return dump(connection, sys.stdout, **options)
    folder = path.resolve().parent
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    os.close(handle)
    try:
        opened: IO[str]
        if path.suffix == ".gz":
            opened = gzip.open(temporary, "wt", encoding="utf-8", compresslevel=6)  # noqa: SIM115 - closed below
        else:
            opened = open(temporary, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        with opened as out:
            figures = dump(connection, out, **options)
        os.replace(temporary, path)
        return figures
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


_VERDICTS = {
    pb.RestoreOutcome.VERDICT_RESTORED: "restored",
    pb.RestoreOutcome.VERDICT_UNCHANGED: "unchanged",
    pb.RestoreOutcome.VERDICT_REFUSED: "refused",
}


def restore(
    connection: Connection,
    lines: Iterator[str],
    *,
    progress: Callable[[RestoreFigures], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    figures: RestoreFigures | None = None,
) -> RestoreFigures:
    """Send a dump's lines to the daemon and collect the outcomes.

    Raises the daemon's refusal of the stream (e.g. INVALID_ARGUMENT naming a
    record, which is the dump's line of that number), or the error met
    reading `lines`; `figures`, when given, holds what was done up to then.
    """
    figures = figures if figures is not None else RestoreFigures()
    began = time.monotonic()
    failure: list[BaseException] = []

    def requests() -> Iterator[pb.RestoreLedgerRequest]:
        chunk: list[str] = []
        size = 0
        try:
            for line in lines:
                record = line.rstrip("\n")
                chunk.append(record)
                size += len(record)
                if len(chunk) >= RESTORE_CHUNK_RECORDS or size >= RESTORE_CHUNK_BYTES:
                    yield pb.RestoreLedgerRequest(records=chunk)
                    chunk, size = [], 0
        except (OSError, EOFError, UnicodeDecodeError) as error:  # a damaged file or gzip stream
            failure.append(error)
            return
        if chunk:
            yield pb.RestoreLedgerRequest(records=chunk)

    with connection.channel() as channel:
        stub = ledger_admin_pb2_grpc.LedgerAdminStub(channel)
        try:
            for response in stub.RestoreLedger(requests(), metadata=connection.metadata):
                figures.records, figures.events = response.records, response.events
                figures.complete = figures.complete or response.complete
                for message in response.outcomes:
                    outcome = Outcome(
                        verdict=_VERDICTS.get(message.verdict, "refused"),
                        items=message.items,
                        run_id=message.run_id,
                        agent_name=message.agent_name,
                        first_bad_seq=message.first_bad_seq if message.HasField("first_bad_seq") else None,
                        reason=message.reason,
                    )
                    figures.count(outcome)
                    if on_outcome is not None:
                        on_outcome(outcome)
                figures.seconds = time.monotonic() - began
                if progress is not None:
                    progress(figures)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None
    figures.seconds = time.monotonic() - began
    if failure:
        raise failure[0]
    return figures
