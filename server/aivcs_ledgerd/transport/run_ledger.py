"""RunLedger servicer: run lifecycle RPCs."""

from __future__ import annotations

from typing import Any

import grpc
from aivcs.ledger.v1 import run_ledger_pb2 as pb
from aivcs.ledger.v1 import run_ledger_pb2_grpc, run_pb2
from google.protobuf import struct_pb2

from aivcs_ledgerd.ledger import Ledger, keys, validation
from aivcs_ledgerd.ledger.errors import InvalidArgument
from aivcs_ledgerd.ledger.runs import Finish, NewRun
from aivcs_ledgerd.model import Evaluation, Run, RunFilter, RunStatus
from aivcs_ledgerd.transport.convert import (
    RUN_STATUS_FROM_PROTO,
    checked_timestamp_ns,
    run_to_proto,
    struct_to_dict,
)
from aivcs_ledgerd.transport.peers import Peers, routed
from aivcs_ledgerd.transport.status import guarded

Context = grpc.aio.ServicerContext[Any, Any]


# Tags are kept with the run and sent with it in every GetRun and ListRuns answer.
MAX_TAGS_BYTES = 16 << 10


def _bounded_tags(tags: struct_pb2.Struct) -> struct_pb2.Struct:
    size = tags.ByteSize()
    if size > MAX_TAGS_BYTES:
        raise InvalidArgument("tags", f"must be at most {MAX_TAGS_BYTES} bytes serialized, got {size}")
    return tags


class RunLedgerServicer(run_ledger_pb2_grpc.RunLedgerServicer):
    def __init__(self, ledger: Ledger, peers: Peers | None = None) -> None:
        self._runs = ledger.runs
        self._events = ledger.events
        self._ownership = ledger.ownership
        self._peers = peers or Peers()

    async def _finish(self, method: str, request: Any, finish: Finish, context: Context) -> run_pb2.Run:
        """Finish the run here, or on the replica that owns it (several replicas on one database)."""
        run_id = validation.identifier("run_id", request.run_id)  # also here: its key routes the call

        async def local() -> run_pb2.Run:
            run: Run = await self._runs.finish(run_id, finish)
            return run_to_proto(run)

        if not self._ownership.enabled:
            return await local()

        async def remote(address: str) -> run_pb2.Run:
            answer = await self._peers.unary(address, "RunLedger", method, request, context)
            forwarded: run_pb2.Run = answer.run
            return forwarded

        return await routed(self._ownership, keys.of_run(run_id), f"run {run_id!r}", context, local, remote)

    @guarded
    async def CreateRun(self, request: pb.CreateRunRequest, context: Context) -> pb.CreateRunResponse:
        # The ledger checks each field (ledger/validation.py); the serialized size of tags is checked here.
        new = NewRun(
            spec_digest=request.spec_digest,
            agent_name=request.agent_name,
            git_sha=request.git_sha if request.HasField("git_sha") else None,
            tags=struct_to_dict("tags", _bounded_tags(request.tags)),
            evaluation=Evaluation(
                rubric_path=request.evaluation.rubric_path,
                is_promotion_gate=request.evaluation.is_promotion_gate,
                agent_phase=request.evaluation.agent_phase,
            ),
            run_id=request.run_id if request.HasField("run_id") else None,
            inactivity_timeout_ms=request.inactivity_timeout_ms if request.HasField("inactivity_timeout_ms") else None,
        )
        return pb.CreateRunResponse(run=run_to_proto(await self._runs.create(new)))

    @guarded
    async def GetRun(self, request: pb.GetRunRequest, context: Context) -> pb.GetRunResponse:
        run = await self._runs.get(request.run_id)
        return pb.GetRunResponse(run=run_to_proto(run))

    @guarded
    async def ListRuns(self, request: pb.ListRunsRequest, context: Context) -> pb.ListRunsResponse:
        if request.status not in RUN_STATUS_FROM_PROTO and request.status != run_pb2.RUN_STATUS_UNSPECIFIED:
            raise InvalidArgument("status", f"unknown RunStatus value {request.status}")
        where = RunFilter(
            spec_digest=request.spec_digest if request.HasField("spec_digest") else None,
            agent_name=request.agent_name if request.HasField("agent_name") else None,
            git_sha=request.git_sha if request.HasField("git_sha") else None,
            status=RUN_STATUS_FROM_PROTO.get(request.status),
            created_after_ns=checked_timestamp_ns("created_after", request.created_after)
            if request.HasField("created_after")
            else None,
            created_before_ns=checked_timestamp_ns("created_before", request.created_before)
            if request.HasField("created_before")
            else None,
        )
        page = await self._runs.list(
            where, request.page_size, request.page_token, size_of=lambda run: run_to_proto(run).ByteSize()
        )
        return pb.ListRunsResponse(
            runs=[run_to_proto(run) for run in page.items], next_page_token=page.next_cursor or ""
        )

    @guarded
    async def CompleteRun(self, request: pb.CompleteRunRequest, context: Context) -> pb.CompleteRunResponse:
        finish = Finish(
            RunStatus.COMPLETED,
            request.duration_ms,
            final_state_digest=request.final_state_digest if request.HasField("final_state_digest") else None,
            expected_total_events=request.expected_total_events if request.HasField("expected_total_events") else None,
        )
        return pb.CompleteRunResponse(run=await self._finish("CompleteRun", request, finish, context))

    @guarded
    async def FailRun(self, request: pb.FailRunRequest, context: Context) -> pb.FailRunResponse:
        finish = Finish(
            RunStatus.FAILED,
            request.duration_ms,
            reason=request.reason,
            expected_total_events=request.expected_total_events if request.HasField("expected_total_events") else None,
        )
        return pb.FailRunResponse(run=await self._finish("FailRun", request, finish, context))

    @guarded
    async def CancelRun(self, request: pb.CancelRunRequest, context: Context) -> pb.CancelRunResponse:
        finish = Finish(RunStatus.CANCELLED, request.duration_ms, reason=request.reason)
        return pb.CancelRunResponse(run=await self._finish("CancelRun", request, finish, context))

    @guarded
    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Context) -> pb.HeartbeatResponse:
        run_id = validation.identifier("run_id", request.run_id)

        async def local() -> run_pb2.Run:
            return run_to_proto(await self._runs.heartbeat(run_id))

        if not self._ownership.enabled:
            return pb.HeartbeatResponse(run=await local())

        async def remote(address: str) -> run_pb2.Run:
            answer = await self._peers.unary(address, "RunLedger", "Heartbeat", request, context)
            forwarded: run_pb2.Run = answer.run
            return forwarded

        key = keys.of_run(run_id)
        return pb.HeartbeatResponse(run=await routed(self._ownership, key, f"run {run_id!r}", context, local, remote))

    @guarded
    async def VerifyRun(self, request: pb.VerifyRunRequest, context: Context) -> pb.VerifyRunResponse:
        verdict = await self._events.verify(request.run_id)
        response = pb.VerifyRunResponse(
            ok=verdict.ok,
            verified_events=verdict.verified_events,
            reason=verdict.reason,
            events_digest=verdict.events_digest,
        )
        if verdict.first_broken_seq is not None:
            response.first_broken_seq = verdict.first_broken_seq
        return response
