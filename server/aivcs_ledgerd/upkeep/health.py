"""gRPC health that follows the database.

Every service name (and "") is SERVING only while the database answers a
ping, NOT_SERVING while it does not, and NOT_SERVING for good once the
daemon starts draining. Watch subscribers are told of every change by the
library's servicer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from aivcs_ledgerd.store import Database, StoreError

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ListingHealthServicer(HealthServicer):  # type: ignore[misc]  # the library has no type hints
    """The library's servicer, plus `List`, which grpcio-health-checking leaves unimplemented.

    Reflection lists grpc.health.v1.Health with all three methods, so all
    three answer: List returns every service name this daemon reports and
    its status (the same answers Check gives), from one instant.
    """

    async def List(self, request: health_pb2.HealthListRequest, context: Any) -> health_pb2.HealthListResponse:
        # _server_status is the servicer's one table of statuses (what Check reads); copied, so it is one snapshot.
        statuses = dict(self._server_status)
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items()}
        )


class HealthMonitor:
    """Pings the database every `interval` seconds and publishes the result."""

    def __init__(
        self,
        db: Database,
        services: Sequence[str],
        interval: float = 2.0,
        probe: Callable[[], Awaitable[None]] | None = None,
        condition: Callable[[], str | None] | None = None,
    ) -> None:
        self.servicer = ListingHealthServicer()
        # A problem of the process itself (e.g. out of file descriptors, process/fdlimit.py): its reason, or None.
        self._condition = condition
        self._problem: str | None = None
        self._db = db
        # What a check asks; raises StoreError when the database is not usable (reconnect.DatabaseProbe).
        self._probe = probe or db.ping
        self._names = ["", *services]
        self._interval = interval
        self._serving: bool | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        return bool(self._serving)

    async def start(self) -> None:
        await self.check()
        self._task = asyncio.create_task(self._loop(), name="health-monitor")

    async def check(self) -> bool:
        """Ping once, publish the outcome, and return whether the database answered."""
        try:
            await asyncio.wait_for(self._probe(), timeout=self._interval)
            healthy = True
        except TimeoutError:
            if self._db.checkpointing:
                # A checkpoint holds every call for a moment (checkpoint.py): not an outage.
                return self.serving
            healthy = False
            if self._serving is not False:
                log.warning("database unavailable: no answer within %gs", self._interval)
        except StoreError as error:
            healthy = False
            if self._serving is not False:
                log.warning("database unavailable: %s", error)
        except Exception:
            # Whatever else the probe raises (a malformed answer, an SDK error) means the same:
            # not serving. The monitor must outlive it, or health would freeze at its last value.
            healthy = False
            if self._serving is not False:
                log.exception("database check failed unexpectedly")
        if healthy and self._condition is not None:
            problem = self._condition()
            if problem is not None and problem != self._problem:
                log.warning("not serving: %s", problem)
            self._problem = problem
            healthy = problem is None
        await self._publish(healthy)
        return healthy

    async def drain(self) -> None:
        """Stop checking and report NOT_SERVING until the process exits."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.servicer.enter_graceful_shutdown()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()

    async def _publish(self, healthy: bool) -> None:
        if healthy == self._serving:
            return
        if self._serving is not None:
            log.info("health: %s", "SERVING" if healthy else "NOT_SERVING")
        self._serving = healthy
        for name in self._names:
            await self.servicer.set(name, SERVING if healthy else NOT_SERVING)
