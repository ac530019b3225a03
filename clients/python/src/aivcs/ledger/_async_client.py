"""The asyncio client: `AsyncClient`, its `runs`, `events` and `releases`, and the run helper.

Method for method the same as `Client`, awaited; see `_client` for the docs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar, Unpack

import grpc
from grpc_health.v1.health_pb2 import HealthCheckRequest
from grpc_health.v1.health_pb2_grpc import HealthStub

from aivcs.ledger import _requests as build
from aivcs.ledger._async_writer import AsyncEventWriter
from aivcs.ledger._batching import Backoff
from aivcs.ledger._client import RESUMABLE, health_status
from aivcs.ledger._connection import Connection
from aivcs.ledger._errors import LedgerError, error_from_rpc
from aivcs.ledger._models import (
    JSON,
    AppendResult,
    Evaluation,
    Event,
    EventLike,
    Release,
    Run,
    RunStatus,
    Verification,
)
from aivcs.ledger._paging import Paging
from aivcs.ledger._session import SessionState
from aivcs.ledger._settings import WriterOptions, WriterSettings, resolve_settings
from aivcs.ledger.v1 import (
    event_stream_pb2,
    event_stream_pb2_grpc,
    release_registry_pb2,
    release_registry_pb2_grpc,
    run_ledger_pb2,
    run_ledger_pb2_grpc,
)

__all__ = ["AsyncClient", "AsyncEvents", "AsyncReleases", "AsyncRunSession", "AsyncRuns"]

Response = TypeVar("Response")


class _AsyncTransport:
    def __init__(self, connection: Connection, channel: grpc.aio.Channel) -> None:
        self.connection = connection
        self.channel = channel
        self.metadata = connection.metadata
        self.run_ledger = run_ledger_pb2_grpc.RunLedgerStub(channel)
        self.event_stream = event_stream_pb2_grpc.EventStreamStub(channel)
        self.release_registry = release_registry_pb2_grpc.ReleaseRegistryStub(channel)

    async def unary(self, method: Callable[..., Awaitable[Response]], request: Any) -> Response:
        try:
            return await method(request, metadata=self.metadata, timeout=self.connection.timeout)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None


class AsyncRuns:
    """RunLedger: create, inspect, list and finish runs."""

    def __init__(self, transport: _AsyncTransport) -> None:
        self._t = transport

    async def create(
        self,
        spec_digest: str,
        agent_name: str,
        *,
        git_sha: str | None = None,
        tags: Mapping[str, JSON] | None = None,
        evaluation: Evaluation | None = None,
        run_id: str | None = None,
        inactivity_timeout: float | timedelta | None = None,
    ) -> Run:
        request = build.create_run(spec_digest, agent_name, git_sha=git_sha, tags=tags, evaluation=evaluation,
                                   run_id=run_id, inactivity_timeout=inactivity_timeout)
        return Run.from_proto((await self._t.unary(self._t.run_ledger.CreateRun, request)).run)

    async def get(self, run_id: str) -> Run:
        request = run_ledger_pb2.GetRunRequest(run_id=run_id)
        return Run.from_proto((await self._t.unary(self._t.run_ledger.GetRun, request)).run)

    async def list(
        self,
        *,
        spec_digest: str | None = None,
        agent_name: str | None = None,
        git_sha: str | None = None,
        status: RunStatus | str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Run]:
        paging = Paging(limit, page_size)
        while not paging.done:
            request = build.list_runs(spec_digest=spec_digest, agent_name=agent_name, git_sha=git_sha,
                                      status=status, created_after=created_after, created_before=created_before,
                                      page_size=paging.size, page_token=paging.token)
            page = await self._t.unary(self._t.run_ledger.ListRuns, request)
            for run in paging.take(page.runs, page.next_page_token):
                yield Run.from_proto(run)

    async def complete(
        self,
        run_id: str,
        *,
        final_state_digest: str | None = None,
        duration_ms: int = 0,
        expected_total_events: int | None = None,
    ) -> Run:
        request = build.complete_run(run_id, final_state_digest=final_state_digest, duration_ms=duration_ms,
                                     expected_total_events=expected_total_events)
        return Run.from_proto((await self._t.unary(self._t.run_ledger.CompleteRun, request)).run)

    async def fail(
        self, run_id: str, reason: str, *, duration_ms: int = 0, expected_total_events: int | None = None
    ) -> Run:
        request = build.fail_run(run_id, reason=reason, duration_ms=duration_ms,
                                 expected_total_events=expected_total_events)
        return Run.from_proto((await self._t.unary(self._t.run_ledger.FailRun, request)).run)

    async def cancel(self, run_id: str, reason: str = "", *, duration_ms: int = 0) -> Run:
        request = build.cancel_run(run_id, reason=reason, duration_ms=duration_ms)
        return Run.from_proto((await self._t.unary(self._t.run_ledger.CancelRun, request)).run)

    async def heartbeat(self, run_id: str) -> Run:
        request = run_ledger_pb2.HeartbeatRequest(run_id=run_id)
        return Run.from_proto((await self._t.unary(self._t.run_ledger.Heartbeat, request)).run)

    async def verify(self, run_id: str) -> Verification:
        reply = await self._t.unary(self._t.run_ledger.VerifyRun, run_ledger_pb2.VerifyRunRequest(run_id=run_id))
        return Verification(reply.ok, reply.verified_events, reply.events_digest,
                            reply.first_broken_seq if reply.HasField("first_broken_seq") else None, reply.reason)


class AsyncEvents:
    """EventStream: append, read and follow the events of a run."""

    def __init__(self, transport: _AsyncTransport) -> None:
        self._t = transport

    async def append(
        self,
        run_id: str,
        events: Sequence[EventLike],
        *,
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        request = build.append_events(run_id, events, expected_last_seq=expected_last_seq,
                                      idempotency_key=idempotency_key)
        reply = await self._t.unary(self._t.event_stream.AppendEvents, request)
        return AppendResult(reply.first_seq, reply.last_seq, reply.replayed)

    def writer(
        self,
        run_id: str,
        *,
        settings: WriterSettings | None = None,
        writer_id: str | None = None,
        **options: Unpack[WriterOptions],
    ) -> AsyncEventWriter:
        """A buffered writer for `run_id` (see `AsyncEventWriter`); close it when done.

        `settings`, or keyword overrides of the defaults (`WriterOptions`), or both.
        """
        return AsyncEventWriter(self._t.event_stream, run_id, metadata=self._t.metadata,
                                settings=resolve_settings(settings, options), writer_id=writer_id,
                                run_ledger=self._t.run_ledger, call_timeout=self._t.connection.timeout)

    async def read(
        self, run_id: str, *, from_seq: int = 0, to_seq: int = 0, kinds: Iterable[str] = (), limit: int = 0
    ) -> AsyncIterator[Event]:
        request = build.read_events(run_id, from_seq=from_seq, to_seq=to_seq, kinds=kinds, limit=limit)
        call = self._t.event_stream.ReadEvents(request, metadata=self._t.metadata)
        try:
            async for chunk in call:
                for event in chunk.events:
                    yield Event.from_proto(event)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None
        finally:
            call.cancel()

    async def subscribe(
        self, run_id: str, *, from_seq: int = 0, reconnect: bool = True, retry_timeout: float = 60.0
    ) -> AsyncIterator[Event]:
        next_seq = max(from_seq, 1)
        backoff = Backoff(retry_timeout)
        while True:
            request = event_stream_pb2.SubscribeEventsRequest(run_id=run_id, from_seq=next_seq)
            call = self._t.event_stream.SubscribeEvents(request, metadata=self._t.metadata)
            delay: float | None = None
            try:
                async for chunk in call:
                    for event in chunk.events:
                        if event.seq >= next_seq:
                            next_seq = event.seq + 1
                            backoff.progress()
                            yield Event.from_proto(event)
                return
            except grpc.RpcError as error:
                failure = error_from_rpc(error)
                delay = backoff.next_delay() if reconnect and failure.code in RESUMABLE else None
                if delay is None:
                    raise failure from None
            finally:
                call.cancel()
            await asyncio.sleep(delay)


class AsyncReleases:
    """ReleaseRegistry: promote, roll back, and read an agent's release history."""

    def __init__(self, transport: _AsyncTransport) -> None:
        self._t = transport

    async def promote(
        self,
        agent_name: str,
        spec_digest: str,
        *,
        promoted_by: str,
        version_label: str | None = None,
        notes: str | None = None,
        expected_current_spec_digest: str | None = None,
        require_successful_run: bool = False,
    ) -> Release:
        request = build.promote(agent_name, spec_digest, promoted_by=promoted_by, version_label=version_label,
                                notes=notes, expected_current_spec_digest=expected_current_spec_digest,
                                require_successful_run=require_successful_run)
        return Release.from_proto((await self._t.unary(self._t.release_registry.Promote, request)).release)

    async def rollback(
        self,
        agent_name: str,
        *,
        promoted_by: str,
        to_spec_digest: str | None = None,
        expected_current_spec_digest: str | None = None,
        notes: str | None = None,
    ) -> Release:
        request = build.rollback(agent_name, promoted_by=promoted_by, to_spec_digest=to_spec_digest,
                                 expected_current_spec_digest=expected_current_spec_digest, notes=notes)
        return Release.from_proto((await self._t.unary(self._t.release_registry.Rollback, request)).release)

    async def current(self, agent_name: str) -> Release:
        request = release_registry_pb2.GetCurrentRequest(agent_name=agent_name)
        return Release.from_proto((await self._t.unary(self._t.release_registry.GetCurrent, request)).release)

    async def history(
        self, agent_name: str, *, limit: int | None = None, page_size: int = 100
    ) -> AsyncIterator[Release]:
        paging = Paging(limit, page_size)
        while not paging.done:
            request = release_registry_pb2.GetHistoryRequest(agent_name=agent_name, page_size=paging.size,
                                                             page_token=paging.token)
            page = await self._t.unary(self._t.release_registry.GetHistory, request)
            for release in paging.take(page.releases, page.next_page_token):
                yield Release.from_proto(release)


class AsyncRunSession(SessionState):
    """`RunSession` for asyncio: `async with client.start_run(...) as run: await run.emit(...)`.

    A cancelled task (asyncio.CancelledError) cancels the run; any other
    exception fails it with the exception as the reason, then propagates.
    """

    def __init__(self, client: AsyncClient, create: dict[str, Any], settings: WriterSettings) -> None:
        super().__init__(create, settings)
        self._client = client
        self._writer: AsyncEventWriter | None = None

    @property
    def writer(self) -> AsyncEventWriter:
        if self._writer is None:
            raise RuntimeError("the run starts when its `async with` block is entered")
        return self._writer

    async def emit(
        self, kind: str, payload: Mapping[str, JSON] | None = None, *, timestamp: datetime | int | None = None
    ) -> bool:
        """Queue one event; False if the writer dropped it (only with `when_full="drop"`)."""
        return await self.writer.emit(kind, payload, timestamp=timestamp)

    async def flush(self) -> None:
        await self.writer.flush()

    async def __aenter__(self) -> AsyncRunSession:
        settings = self._began(await self._client.runs.create(**self._create))
        self._writer = self._client.events.writer(self.run_id, settings=settings)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        writer = self.writer
        if exc is None:
            await writer.close()
            self.run = await self._end(None, writer.acknowledged).apply(self.run_id, self._client.runs)
            return
        acknowledged: int | None = None
        try:
            await writer.close()
            acknowledged = writer.acknowledged
        except LedgerError as error:
            exc.add_note(f"the run's last events could not be stored: {error}")
        try:
            self.run = await self._end(exc, acknowledged).apply(self.run_id, self._client.runs)
        except LedgerError as error:
            exc.add_note(f"run {self.run_id} could not be marked failed: {error}")


class AsyncClient:
    """An asyncio client of the ledger daemon; create it inside the event loop that uses it."""

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls: bool | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        timeout: float | None = 30.0,
        options: Sequence[tuple[str, Any]] = (),
        connection: Connection | None = None,
    ) -> None:
        self.connection = connection or Connection.resolve(
            target, token=token, token_file=token_file, tls=tls, ca_file=ca_file, cert_file=cert_file,
            key_file=key_file, timeout=timeout, options=options,
        )
        self._channel = self.connection.aio_channel()
        self._transport = transport = _AsyncTransport(self.connection, self._channel)
        self.runs = AsyncRuns(transport)
        self.events = AsyncEvents(transport)
        self.releases = AsyncReleases(transport)

    @property
    def target(self) -> str:
        return self.connection.target

    def start_run(
        self,
        spec_digest: str,
        agent_name: str,
        *,
        git_sha: str | None = None,
        tags: Mapping[str, JSON] | None = None,
        evaluation: Evaluation | None = None,
        run_id: str | None = None,
        inactivity_timeout: float | timedelta | None = None,
        writer_settings: WriterSettings | None = None,
        **writer_options: Unpack[WriterOptions],
    ) -> AsyncRunSession:
        create = {"spec_digest": spec_digest, "agent_name": agent_name, "git_sha": git_sha, "tags": tags,
                  "evaluation": evaluation, "run_id": run_id, "inactivity_timeout": inactivity_timeout}
        return AsyncRunSession(self, create, resolve_settings(writer_settings, writer_options))

    async def health(self, service: str = "") -> str:
        """The daemon's grpc.health.v1 status for `service` ("" = the whole daemon), e.g. "SERVING"."""
        request = HealthCheckRequest(service=service)
        return health_status(await self._transport.unary(HealthStub(self._channel).Check, request))

    async def close(self) -> None:
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient(target={self.target!r})"
