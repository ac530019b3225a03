"""LedgerAdmin servicer: a dump streamed out in chunks, a restore streamed in with outcomes streamed back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from aivcs.ledger.v1 import ledger_admin_pb2 as pb
from aivcs.ledger.v1 import ledger_admin_pb2_grpc

from aivcs_ledgerd.ledger import Ledger, validation
from aivcs_ledgerd.ledger.backup.dump import DumpCounts, DumpFilter, dump
from aivcs_ledgerd.ledger.backup.restore import Outcome, Restore, Verdict
from aivcs_ledgerd.ledger.errors import LedgerError, Unavailable
from aivcs_ledgerd.transport.convert import checked_timestamp_ns
from aivcs_ledgerd.transport.status import guarded_stream

Context = grpc.aio.ServicerContext[Any, Any]

# Record text per DumpLedger response: well below any message limit, large enough to amortise a message.
CHUNK_BYTES = 1 << 20

VERDICTS = {
    Verdict.RESTORED: pb.RestoreOutcome.VERDICT_RESTORED,
    Verdict.UNCHANGED: pb.RestoreOutcome.VERDICT_UNCHANGED,
    Verdict.REFUSED: pb.RestoreOutcome.VERDICT_REFUSED,
}


def outcome_to_proto(outcome: Outcome) -> pb.RestoreOutcome:
    message = pb.RestoreOutcome(
        run_id=outcome.run_id,
        agent_name=outcome.agent_name,
        verdict=VERDICTS[outcome.verdict],
        items=outcome.items,
        reason=outcome.reason,
    )
    if outcome.first_bad_seq is not None:
        message.first_bad_seq = outcome.first_bad_seq
    return message


class LedgerAdminServicer(ledger_admin_pb2_grpc.LedgerAdminServicer):
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._restoring: set[str] = set()  # runs a restore stream is staging, across all streams

    @staticmethod
    def _answer(restore: Restore) -> pb.RestoreLedgerResponse:
        return pb.RestoreLedgerResponse(
            records=restore.records,
            events=restore.events,
            complete=restore.complete,
            outcomes=[outcome_to_proto(outcome) for outcome in restore.taken()],
        )

    @guarded_stream
    async def DumpLedger(self, request: pb.DumpLedgerRequest, context: Context) -> AsyncIterator[pb.DumpLedgerResponse]:
        where = DumpFilter(
            agent_name=validation.identifier("agent_name", request.agent_name)
            if request.HasField("agent_name")
            else None,
            created_after_ns=checked_timestamp_ns("created_after", request.created_after)
            if request.HasField("created_after")
            else None,
            created_before_ns=checked_timestamp_ns("created_before", request.created_before)
            if request.HasField("created_before")
            else None,
            releases=not request.skip_releases,
        )
        counts = DumpCounts()
        chunk: list[str] = []
        size = 0
        with self._ledger.stream():
            async for record in dump(self._ledger.db, where, counts):
                chunk.append(record)
                size += len(record)
                if size >= CHUNK_BYTES:
                    self._check_draining()
                    yield pb.DumpLedgerResponse(
                        records=chunk, runs=counts.runs, events=counts.events, releases=counts.releases
                    )
                    chunk, size = [], 0
            yield pb.DumpLedgerResponse(records=chunk, runs=counts.runs, events=counts.events, releases=counts.releases)

    def _check_draining(self) -> None:
        """A long dump or restore ends promptly when the daemon drains; the caller runs it again."""
        if self._ledger.draining.is_set():
            raise Unavailable("the daemon is shutting down; run the dump or restore again")

    @guarded_stream
    async def RestoreLedger(
        self, requests: AsyncIterator[pb.RestoreLedgerRequest], context: Context
    ) -> AsyncIterator[pb.RestoreLedgerResponse]:
        restore = Restore(self._ledger.db, self._ledger.ownership, self._restoring)
        with self._ledger.stream():  # drain waits for it to end and clean up (within the grace period)
            try:
                async for request in requests:
                    try:
                        self._check_draining()
                        await restore.feed(list(request.records))
                    except LedgerError:
                        if restore.outcomes:  # decided before the malformed record: the caller still learns them
                            yield self._answer(restore)
                        raise
                    yield self._answer(restore)
            finally:
                if not restore.complete:
                    await restore.abort()  # removes the staged rows of the run in progress
