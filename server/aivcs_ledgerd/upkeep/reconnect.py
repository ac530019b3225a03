"""The health check's question to the database, and reconnection of a remote one.

The SDK's WebSocket connection opens a new socket by itself when the old
one died, but a new socket is a new server-side session: signed out, with
no namespace or database selected. So the check asks for the session's
namespace and database, not merely for an answer, and when it fails on a
remote database it opens a fresh connection (connect, sign in, use) in the
background and swaps it in. Calls in flight on the old connection fail with
UNAVAILABLE, and clients retry them (appends with idempotency keys).

Embedded engines live in this process and are never reopened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aivcs_ledgerd.store import Database, StoreError, StoreUnavailable
from aivcs_ledgerd.store.database import REMOTE_SCHEMES, check_url

log = logging.getLogger(__name__)

SESSION_QUERY = "RETURN [session::ns(), session::db()];"


class DatabaseProbe:
    """Raises StoreError unless the database answers on a session with our namespace and database."""

    def __init__(self, db: Database, reconnect: bool | None = None) -> None:
        self._db = db
        self._namespace = db.session.namespace
        self._database = db.session.database
        self._reconnect = check_url(db.url) in REMOTE_SCHEMES if reconnect is None else reconnect
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.reconnects = 0  # successful reconnections, for tests and logs

    async def __call__(self) -> None:
        try:
            [session] = await self._db.query(SESSION_QUERY)
        except StoreError:
            self._start_reconnect()
            raise
        if session != [self._namespace, self._database]:
            self._start_reconnect()
            raise StoreUnavailable(
                f"the database session has namespace/database {session!r}, not "
                f"{[self._namespace, self._database]!r}: the connection was re-opened without a sign-in"
            )

    async def close(self) -> None:
        """Stop any reconnection in progress; the handle itself is closed by its owner."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _start_reconnect(self) -> None:
        if not self._reconnect or self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.create_task(self._reopen(), name="database-reconnect")

    async def _reopen(self) -> None:
        log.info("reconnecting to the database at %s", self._db.url)
        try:
            await self._db.reopen()
        except StoreError as error:
            log.warning("database reconnect failed: %s", error)
            return
        self.reconnects += 1
        log.info("reconnected to the database at %s", self._db.url)
