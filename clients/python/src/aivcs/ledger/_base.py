"""What `Client` and `AsyncClient` share, as httpx's two clients share a base class.

Both clients have the same methods with the same arguments; `_client` and
`_async_client` only do the I/O, blocking or awaited. What they decide alike
lives here: how a client is configured and reached, and what a run helper is
created from (`BaseClient`); where a subscription resumes after a lost
connection and when it gives up (`Resumption`); how a health answer reads.
Requests are built in `_requests`, listings paged in `_paging`, and the end
of a run helper's block decided in `_session`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, Generic, TypeVar, Unpack

import grpc
from grpc_health.v1.health_pb2 import HealthCheckResponse

from aivcs.ledger._batching import Backoff
from aivcs.ledger._connection import Connection
from aivcs.ledger._errors import error_from_rpc
from aivcs.ledger._models import JSON, Evaluation, Event
from aivcs.ledger._settings import WriterOptions, WriterSettings, resolve_settings
from aivcs.ledger.v1 import event_stream_pb2

__all__ = ["RESUMABLE", "BaseClient", "Resumption", "health_status"]

Session = TypeVar("Session")

# Codes after which a subscription resumes where it stopped.
RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


def health_status(reply: HealthCheckResponse) -> str:
    name: str = HealthCheckResponse.ServingStatus.Name(reply.status)
    return name


class Resumption:
    """Where a subscription stands: the seq to ask for next, and when a lost stream is given up.

    Each event is yielded once, in seq order: a resumed stream asks for the
    seq after the last one yielded, and anything older it sends is skipped.
    """

    def __init__(self, run_id: str, *, from_seq: int, reconnect: bool, retry_timeout: float) -> None:
        self._run_id = run_id
        self._next_seq = max(from_seq, 1)
        self._reconnect = reconnect
        self._backoff = Backoff(retry_timeout)

    def request(self) -> event_stream_pb2.SubscribeEventsRequest:
        return event_stream_pb2.SubscribeEventsRequest(run_id=self._run_id, from_seq=self._next_seq)

    def events(self, chunk: event_stream_pb2.SubscribeEventsResponse) -> Iterator[Event]:
        """The chunk's events not yielded yet; each one counts as progress."""
        for event in chunk.events:
            if event.seq >= self._next_seq:
                self._next_seq = event.seq + 1
                self._backoff.progress()
                yield Event.from_proto(event)

    def delay_after(self, error: grpc.RpcError) -> float:
        """Seconds to wait before resuming after `error`; raises its `LedgerError` when not to resume."""
        failure = error_from_rpc(error)
        delay = self._backoff.next_delay() if self._reconnect and failure.code in RESUMABLE else None
        if delay is None:
            raise failure from None
        return delay


class BaseClient(abc.ABC, Generic[Session]):
    """What a client is configured with, and its run helper; `Client` and `AsyncClient` open the channel.

    The arguments are resolved once into a `Connection` (see
    `Connection.resolve` and the clients' docstrings); a `connection` given
    replaces all of them.
    """

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
            target,
            token=token,
            token_file=token_file,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            timeout=timeout,
            options=options,
        )
        self._open()

    @abc.abstractmethod
    def _open(self) -> None:
        """Open the channel and make `runs`, `events` and `releases` over it."""

    @abc.abstractmethod
    def _session(self, create: dict[str, Any], settings: WriterSettings) -> Session:
        """The run helper for `start_run`: `create` holds the `runs.create` arguments."""

    @property
    def target(self) -> str:
        """The daemon's address, as resolved."""
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
    ) -> Session:
        """A run recorded by a `with` block (`async with` for `AsyncClient`); see `RunSession`.

        `with client.start_run(digest, "planner") as run: run.emit(kind, payload)`
        creates the run on entering (the arguments are those of `runs.create`)
        and completes, fails or cancels it on leaving. `writer_settings` and
        keyword overrides of it (`WriterOptions`) tune the run's writer (see
        `events.writer`); its heartbeats follow the run's inactivity timeout
        unless `heartbeat_interval` is given. Nothing is sent before the block
        is entered.
        """
        create = {
            "spec_digest": spec_digest,
            "agent_name": agent_name,
            "git_sha": git_sha,
            "tags": tags,
            "evaluation": evaluation,
            "run_id": run_id,
            "inactivity_timeout": inactivity_timeout,
        }
        return self._session(create, resolve_settings(writer_settings, writer_options))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target={self.target!r})"
