"""ReleaseRegistry servicer: validate, call the ledger's Releases, convert."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import grpc
from aivcs.ledger.v1 import release_pb2, release_registry_pb2_grpc
from aivcs.ledger.v1 import release_registry_pb2 as pb
from google.protobuf import timestamp_pb2

from aivcs_ledgerd.ledger import Ledger, keys, validation
from aivcs_ledgerd.model import Release
from aivcs_ledgerd.transport.convert import datetime_to_timestamp
from aivcs_ledgerd.transport.peers import Peers, routed
from aivcs_ledgerd.transport.status import guarded

Context = grpc.aio.ServicerContext[Any, Any]


class ReleaseRegistryServicer(release_registry_pb2_grpc.ReleaseRegistryServicer):
    def __init__(self, ledger: Ledger, peers: Peers | None = None) -> None:
        self._releases = ledger.releases
        self._ownership = ledger.ownership
        self._peers = peers or Peers()

    async def _routed(
        self,
        method: str,
        request: pb.PromoteRequest | pb.RollbackRequest,
        context: Context,
        local: Callable[[], Awaitable[Release]],
    ) -> release_pb2.Release:
        """Append here, or on the replica that owns the agent's history (several replicas on one database)."""

        async def here() -> release_pb2.Release:
            return release_to_proto(await local())

        if not self._ownership.enabled:
            return await here()

        async def remote(address: str) -> release_pb2.Release:
            answer = await self._peers.unary(address, "ReleaseRegistry", method, request, context)
            forwarded: release_pb2.Release = answer.release
            return forwarded

        agent = _agent_name(request.agent_name)
        return await routed(self._ownership, keys.of_agent(agent), f"agent {agent!r}", context, here, remote)

    @guarded
    async def Promote(self, request: pb.PromoteRequest, context: Context) -> pb.PromoteResponse:
        return pb.PromoteResponse(
            release=await self._routed("Promote", request, context, lambda: self._promote(request))
        )

    async def _promote(self, request: pb.PromoteRequest) -> Release:
        return await self._releases.promote(
            request.agent_name,
            request.spec_digest,
            request.promoted_by,
            version_label=request.version_label if request.HasField("version_label") else None,
            notes=request.notes if request.HasField("notes") else None,
            expected_current_spec_digest=_expected(request),
            require_successful_run=request.require_successful_run,
        )

    @guarded
    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> pb.RollbackResponse:
        return pb.RollbackResponse(
            release=await self._routed("Rollback", request, context, lambda: self._rollback(request))
        )

    async def _rollback(self, request: pb.RollbackRequest) -> Release:
        return await self._releases.rollback(
            request.agent_name,
            request.promoted_by,
            to_spec_digest=request.to_spec_digest if request.HasField("to_spec_digest") else None,
            expected_current_spec_digest=_expected(request),
            notes=request.notes if request.HasField("notes") else None,
        )

    @guarded
    async def GetCurrent(self, request: pb.GetCurrentRequest, context: Context) -> pb.GetCurrentResponse:
        release = await self._releases.current(request.agent_name)
        return pb.GetCurrentResponse(release=release_to_proto(release))

    @guarded
    async def GetHistory(self, request: pb.GetHistoryRequest, context: Context) -> pb.GetHistoryResponse:
        page = await self._releases.history(
            request.agent_name,
            request.page_size,
            request.page_token,
            size_of=lambda release: release_to_proto(release).ByteSize(),
        )
        return pb.GetHistoryResponse(
            releases=[release_to_proto(release) for release in page.items], next_page_token=page.next_cursor or ""
        )


def _agent_name(value: str) -> str:
    """Checked here too: the agent's ownership key routes the call before the ledger sees it."""
    return validation.identifier("agent_name", value)


def _expected(request: pb.PromoteRequest | pb.RollbackRequest) -> str | None:
    """The compare-and-set expectation: None when unset, "" for "no release yet" (checked by the ledger)."""
    return request.expected_current_spec_digest if request.HasField("expected_current_spec_digest") else None


def release_to_proto(release: Release) -> release_pb2.Release:
    message = release_pb2.Release(
        agent_name=release.agent_name,
        spec_digest=release.spec_digest,
        promoted_by=release.promoted_by,
        created_at=_timestamp(release.created_at),
        sequence=release.sequence,
    )
    if release.version_label is not None:
        message.version_label = release.version_label
    if release.notes is not None:
        message.notes = release.notes
    if release.rollback_of is not None:
        message.rollback_of = release.rollback_of
    return message


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """Keep the nanoseconds SurrealDB stores beyond datetime's microseconds (PreciseDatetime)."""
    ts = datetime_to_timestamp(value)
    ts.nanos += getattr(value, "nanosecond", 0)
    return ts
