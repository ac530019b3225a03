"""The asyncio client: `AsyncClient`, its `runs`, `events` and `releases`, and the run helper.

Method for method the same as `Client` (`_client`), awaited; listings and
reads are async iterators. What both decide alike is in `_base`,
`_requests`, `_paging` and `_session`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar, Unpack

import grpc
from grpc_health.v1.health_pb2 import HealthCheckRequest
from grpc_health.v1.health_pb2_grpc import HealthStub

from aivcs.ledger import _requests as build
from aivcs.ledger._async_writer import AsyncEventWriter
from aivcs.ledger._base import BaseClient, Resumption, health_status
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
from aivcs.ledger._paging import PageReply, PageRequest, async_pages
from aivcs.ledger._session import SessionState
from aivcs.ledger._settings import WriterOptions, WriterSettings, resolve_settings
from aivcs.ledger.v1 import (
    event_stream_pb2_grpc,
    release_registry_pb2,
    release_registry_pb2_grpc,
    run_ledger_pb2,
    run_ledger_pb2_grpc,
)

__all__ = ["AsyncClient", "AsyncEvents", "AsyncReleases", "AsyncRunSession", "AsyncRuns"]

Response = TypeVar("Response")
Item = TypeVar("Item")
Request = TypeVar("Request", bound=PageRequest)
Reply = TypeVar("Reply", bound=PageReply)


class _AsyncTransport:
    """Stubs over one asyncio channel, plus what every call carries."""

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

    def pages(
        self,
        method: Callable[..., Awaitable[Reply]],
        request: Request,
        items: Callable[[Reply], Sequence[Item]],
        *,
        limit: int | None,
        page_size: int,
    ) -> AsyncIterator[Item]:
        return async_pages(lambda page: self.unary(method, page), request, items, limit=limit, page_size=page_size)


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
        """Create a RUNNING run; with `run_id` (client-chosen), a retry returns the same run.

        `inactivity_timeout` (seconds or a timedelta; 0 or None: none) has the
        daemon fail the run once it has had no append and no heartbeat for
        that long. InvalidArgument names the field a bad argument is in.
        """
        request = build.create_run(
            spec_digest,
            agent_name,
            git_sha=git_sha,
            tags=tags,
            evaluation=evaluation,
            run_id=run_id,
            inactivity_timeout=inactivity_timeout,
        )
        return Run.from_proto((await self._t.unary(self._t.run_ledger.CreateRun, request)).run)

    async def get(self, run_id: str) -> Run:
        """The run `run_id`; NotFound when there is none."""
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
        """Runs newest first, every filter given combined with AND, fetched a page at a time; at most `limit`."""
        request = build.list_runs(
            spec_digest=spec_digest,
            agent_name=agent_name,
            git_sha=git_sha,
            status=status,
            created_after=created_after,
            created_before=created_before,
        )
        async for run in self._t.pages(
            self._t.run_ledger.ListRuns, request, lambda page: page.runs, limit=limit, page_size=page_size
        ):
            yield Run.from_proto(run)

    async def complete(
        self,
        run_id: str,
        *,
        final_state_digest: str | None = None,
        duration_ms: int = 0,
        expected_total_events: int | None = None,
    ) -> Run:
        """Move a RUNNING run to COMPLETED.

        With `expected_total_events`, only if the run holds exactly that many
        events, so a run whose last events were lost cannot be completed:
        otherwise FailedPrecondition and the run is unchanged (as on a run
        that is already terminal).
        """
        request = build.complete_run(
            run_id,
            final_state_digest=final_state_digest,
            duration_ms=duration_ms,
            expected_total_events=expected_total_events,
        )
        return Run.from_proto((await self._t.unary(self._t.run_ledger.CompleteRun, request)).run)

    async def fail(
        self, run_id: str, reason: str, *, duration_ms: int = 0, expected_total_events: int | None = None
    ) -> Run:
        """Move a RUNNING run to FAILED with `reason` (cut to 4096 bytes); FailedPrecondition as for `complete`."""
        request = build.fail_run(
            run_id, reason=reason, duration_ms=duration_ms, expected_total_events=expected_total_events
        )
        return Run.from_proto((await self._t.unary(self._t.run_ledger.FailRun, request)).run)

    async def cancel(self, run_id: str, reason: str = "", *, duration_ms: int = 0) -> Run:
        """Move a RUNNING run to CANCELLED; FailedPrecondition on a terminal run."""
        request = build.cancel_run(run_id, reason=reason, duration_ms=duration_ms)
        return Run.from_proto((await self._t.unary(self._t.run_ledger.CancelRun, request)).run)

    async def heartbeat(self, run_id: str) -> Run:
        """Tell the daemon the run's agent is alive, so its inactivity timeout does not strike.

        An open writer does this by itself; call it for a run without one.
        FailedPrecondition once the run is terminal (e.g. failed for inactivity).
        """
        request = run_ledger_pb2.HeartbeatRequest(run_id=run_id)
        return Run.from_proto((await self._t.unary(self._t.run_ledger.Heartbeat, request)).run)

    async def verify(self, run_id: str) -> Verification:
        """Have the daemon recompute the run's hash chain: whether it holds, and where it breaks if not."""
        request = run_ledger_pb2.VerifyRunRequest(run_id=run_id)
        return Verification.from_proto(await self._t.unary(self._t.run_ledger.VerifyRun, request))


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
        """Append one atomic batch of `NewEvent`s or `(kind, payload)` pairs; the seqs it got.

        With `expected_last_seq`, only if the run's last seq is that (else
        Aborted); with `idempotency_key`, a retry of the same batch returns
        the seqs of the first attempt, `replayed` set.
        """
        request = build.append_events(
            run_id, events, expected_last_seq=expected_last_seq, idempotency_key=idempotency_key
        )
        return AppendResult.from_proto(await self._t.unary(self._t.event_stream.AppendEvents, request))

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
        return AsyncEventWriter(
            self._t.event_stream,
            run_id,
            metadata=self._t.metadata,
            settings=resolve_settings(settings, options),
            writer_id=writer_id,
            run_ledger=self._t.run_ledger,
            call_timeout=self._t.connection.timeout,
        )

    async def read(
        self, run_id: str, *, from_seq: int = 0, to_seq: int = 0, kinds: Iterable[str] = (), limit: int = 0
    ) -> AsyncIterator[Event]:
        """Stored events in ascending seq; `to_seq` and `limit` 0 mean no bound."""
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
        """Stored events from `from_seq`, then live ones; ends when the run is terminal.

        With `reconnect`, a lost connection is resumed after the last event
        yielded, so the sequence has no gap and no duplicate; after
        `retry_timeout` seconds without progress the error is raised.
        """
        position = Resumption(run_id, from_seq=from_seq, reconnect=reconnect, retry_timeout=retry_timeout)
        while True:
            call = self._t.event_stream.SubscribeEvents(position.request(), metadata=self._t.metadata)
            try:
                async for chunk in call:
                    for event in position.events(chunk):
                        yield event
                return
            except grpc.RpcError as error:
                delay = position.delay_after(error)
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
        """Append a release of `spec_digest` that becomes the agent's current one.

        With `expected_current_spec_digest`, only if that is the current
        release's digest ("": the agent has none yet), else Aborted and
        nothing is written; with `require_successful_run`, only if the ledger
        holds a successful COMPLETED run of this spec by this agent, else
        FailedPrecondition.
        """
        request = build.promote(
            agent_name,
            spec_digest,
            promoted_by=promoted_by,
            version_label=version_label,
            notes=notes,
            expected_current_spec_digest=expected_current_spec_digest,
            require_successful_run=require_successful_run,
        )
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
        """Re-append the previous release (or the newest one with `to_spec_digest`) as current."""
        request = build.rollback(
            agent_name,
            promoted_by=promoted_by,
            to_spec_digest=to_spec_digest,
            expected_current_spec_digest=expected_current_spec_digest,
            notes=notes,
        )
        return Release.from_proto((await self._t.unary(self._t.release_registry.Rollback, request)).release)

    async def current(self, agent_name: str) -> Release:
        """The agent's current release; raises NotFound when it has none."""
        request = release_registry_pb2.GetCurrentRequest(agent_name=agent_name)
        return Release.from_proto((await self._t.unary(self._t.release_registry.GetCurrent, request)).release)

    async def history(
        self, agent_name: str, *, limit: int | None = None, page_size: int = 100
    ) -> AsyncIterator[Release]:
        """The agent's releases newest first, fetched a page at a time; at most `limit`."""
        request = release_registry_pb2.GetHistoryRequest(agent_name=agent_name)
        async for release in self._t.pages(
            self._t.release_registry.GetHistory, request, lambda page: page.releases, limit=limit, page_size=page_size
        ):
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
        """The run's buffered writer, once the block is entered."""
        if self._writer is None:
            raise RuntimeError("the run starts when its `async with` block is entered")
        return self._writer

    async def emit(
        self, kind: str, payload: Mapping[str, JSON] | None = None, *, timestamp: datetime | int | None = None
    ) -> bool:
        """Queue one event; False if the writer dropped it (only with `when_full="drop"`)."""
        return await self.writer.emit(kind, payload, timestamp=timestamp)

    async def flush(self) -> None:
        """Wait until every event emitted so far is acknowledged (see the writer's `flush`)."""
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


class AsyncClient(BaseClient[AsyncRunSession]):
    """An asyncio client of the ledger daemon; create it inside the event loop that uses it.

    The arguments and their defaults are those of `Client` ($AIVCS_LEDGER_TARGET,
    $AIVCS_LEDGER_TOKEN or _TOKEN_FILE, _TLS, _CA_FILE, _CERT_FILE, _KEY_FILE);
    `timeout` bounds each unary call (seconds). Close it (`await client.close()`),
    or use it as an async context manager::

        async with AsyncClient("127.0.0.1:50051") as client:
            async with client.start_run(digest, "planner") as run:
                await run.emit("tool_called", {"tool": "search"})
    """

    runs: AsyncRuns
    events: AsyncEvents
    releases: AsyncReleases

    def _open(self) -> None:
        self._channel = self.connection.aio_channel()
        self._transport = transport = _AsyncTransport(self.connection, self._channel)
        self.runs = AsyncRuns(transport)
        self.events = AsyncEvents(transport)
        self.releases = AsyncReleases(transport)

    def _session(self, create: dict[str, Any], settings: WriterSettings) -> AsyncRunSession:
        return AsyncRunSession(self, create, settings)

    async def health(self, service: str = "") -> str:
        """The daemon's grpc.health.v1 status for `service` ("" = the whole daemon), e.g. "SERVING"."""
        request = HealthCheckRequest(service=service)
        return health_status(await self._transport.unary(HealthStub(self._channel).Check, request))

    async def close(self) -> None:
        """Close the channel; calls still in flight are cancelled."""
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
