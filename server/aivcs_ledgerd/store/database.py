"""One SurrealDB handle: connect, run checked queries, serialise writes.

Every query goes through `query_raw` and every statement's status is checked,
because the SDK's `query()` reports only the first statement's error
(docs/architecture.md, hazard 1). Writes that touch a run's or an agent's records
go through `write()`, which holds that key's lock on this handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import surrealdb
from surrealdb import AsyncSurreal

from aivcs_ledgerd.futures import retrieve_exception
from aivcs_ledgerd.store.errors import (
    DuplicateRecord,
    QueryFailed,
    Rejected,
    StoreConflict,
    StoreUnavailable,
)
from aivcs_ledgerd.store.gate import Gate
from aivcs_ledgerd.store.locks import KeyedLocks

log = logging.getLogger(__name__)

EMBEDDED_SCHEMES = frozenset({"mem", "memory", "surrealkv", "file"})
REMOTE_SCHEMES = frozenset({"ws", "wss", "http", "https"})
# Served by the bundled SurrealKV engine (file:// too, in surrealdb-embedded 3.0.0b10), whose
# bugs _connect and Database.checkpoint work around.
SURREALKV_SCHEMES = frozenset({"surrealkv", "file"})
# Opening or closing a durable embedded engine works through the data: a close writes the
# memtable to a table file, an open may first merge table files (measured on 2 cores: up to 3 s
# with 1M events stored, 6.7 s once at 1.1M, growing with the data). Those steps get this long,
# not the round-trip timeout, so that a big store neither fails to start nor breaks a checkpoint.
EMBEDDED_OPEN_SECONDS = 600.0
THROW_PREFIX = "aivcs:"
# Statuses that only echo an earlier statement's failure inside a transaction.
_ECHO_KINDS = frozenset({"NotExecuted", "Cancelled"})


class UnsupportedScheme(ValueError):
    """`--db` names a scheme the daemon cannot open."""


def check_url(url: str) -> str:
    """Return the URL's scheme, or raise UnsupportedScheme naming it."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else url.lower()
    if scheme not in EMBEDDED_SCHEMES | REMOTE_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in sorted(EMBEDDED_SCHEMES | REMOTE_SCHEMES))
        raise UnsupportedScheme(f"unsupported database scheme {scheme!r} in --db {url!r}; use one of {allowed}")
    return scheme


@dataclass(frozen=True, slots=True)
class Credentials:
    """Sign-in for a remote server; a database user when `access_level` is "database"."""

    username: str
    password: str
    access_level: str = "root"


@dataclass(frozen=True, slots=True)
class Session:
    """What a connection must be set up with: namespace, database, sign-in."""

    namespace: str = "aivcs"
    database: str = "ledger"
    credentials: Credentials | None = None


async def _connect(url: str, session: Session, round_trip_seconds: float, after_crash: bool = True) -> Any:
    """An SDK connection, signed in when remote, on the session's namespace and database."""
    scheme = check_url(url)
    open_seconds = round_trip_seconds if scheme in REMOTE_SCHEMES else max(round_trip_seconds, EMBEDDED_OPEN_SECONDS)
    try:
        if scheme in SURREALKV_SCHEMES and after_crash:
            # SurrealKV 0.21.4 (in surrealdb-embedded 3.0.0b10), when an open repairs a torn last
            # WAL record (what a SIGKILL mid-write leaves), replaces the WAL file but goes on
            # writing into the old, unlinked one: that session's acknowledged writes are lost at
            # the next crash. A second open writes to the repaired file, so open once and close.
            first = AsyncSurreal(url)
            await asyncio.wait_for(first.connect(), open_seconds)
            await asyncio.wait_for(first.close(), open_seconds)
        connection = AsyncSurreal(url)
        await asyncio.wait_for(connection.connect(), open_seconds)
        credentials = session.credentials
        if scheme in REMOTE_SCHEMES and credentials is not None:
            auth: dict[str, Any] = {"username": credentials.username, "password": credentials.password}
            if credentials.access_level == "database":
                auth |= {"namespace": session.namespace, "database": session.database}
            await asyncio.wait_for(connection.signin(auth), round_trip_seconds)
        await asyncio.wait_for(connection.use(session.namespace, session.database), round_trip_seconds)
    except (TimeoutError, surrealdb.SurrealError, OSError) as error:
        raise StoreUnavailable(f"cannot open database {url}: {error}") from error
    return connection


class Database:
    """The daemon's handle on SurrealDB. Safe to share between ledger objects."""

    def __init__(self, connection: Any, url: str, timeout: float, session: Session | None = None) -> None:
        self._connection = connection
        self.url = url
        self.timeout = timeout
        self.session = session or Session()
        self.locks = KeyedLocks()
        self._gate = Gate()
        self._closed = False
        # Wraps every raw round trip; fault-injection tests replace it.
        self.send: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]] = self._send

    @classmethod
    async def open(
        cls,
        url: str,
        namespace: str = "aivcs",
        database: str = "ledger",
        credentials: Credentials | None = None,
        round_trip_seconds: float = 10.0,
    ) -> Database:
        """Connect, sign in when remote, and select the namespace and database."""
        session = Session(namespace, database, credentials)
        connection = await _connect(url, session, round_trip_seconds)
        return cls(connection, url, round_trip_seconds, session)

    async def reopen(self) -> None:
        """Open a fresh connection with the same session and swap it in.

        For a remote server whose socket was replaced by a signed-out one.
        The handle, and with it every ledger's locks, stays the same; calls
        in flight on the old connection fail with StoreUnavailable.
        """
        fresh = await _connect(self.url, self.session, self.timeout)
        old, self._connection = self._connection, fresh
        with contextlib.suppress(Exception):
            await old.close()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._connection.close()

    @property
    def gate(self) -> Gate:
        """The gate every call passes; checkpoints shut it (its `last_hold` and `observe_wait` measure the waits)."""
        return self._gate

    @property
    def checkpointing(self) -> bool:
        """True while a checkpoint holds every call (see checkpoint())."""
        return self._gate.shut_now

    @property
    def wal_folder(self) -> Path | None:
        """Where a durable embedded engine keeps its write-ahead log; None for other engines."""
        parts = urlsplit(self.url)
        if parts.scheme.lower() not in SURREALKV_SCHEMES:
            return None
        return Path(parts.netloc + parts.path) / "wal"

    async def checkpoint(self) -> None:
        """Close and reopen a durable embedded engine, which writes its memtable to disk.

        SurrealKV in this engine build never flushes its memtable while open:
        memory grows with every write, and at the second memtable rotation
        every write stalls for good (measured: 1.59M events on a 24 GB host,
        186k events when the host reports 2 GB). Closing flushes it. Calls
        wait in front of the gate meanwhile; calls already inside finish
        first. Raises StoreUnavailable when they do not finish within the
        timeout (nothing is closed then) or when the reopen fails (every
        call then fails with StoreUnavailable until a checkpoint succeeds).
        The close and the reopen may take seconds on a big store and are
        bounded by EMBEDDED_OPEN_SECONDS, not the round-trip timeout; calls
        waiting at the gate meanwhile still time out after the latter.
        """
        if self.wal_folder is None:
            raise ValueError(f"checkpoint() is for durable embedded engines, not {self.url}")
        try:
            async with self._gate.shut(self.timeout):
                await asyncio.wait_for(self._connection.close(), EMBEDDED_OPEN_SECONDS)
                self._connection = await _connect(self.url, self.session, self.timeout, after_crash=False)
        except TimeoutError:
            raise StoreUnavailable("checkpoint: calls did not settle, or the engine did not close, in time") from None

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers a trivial query."""
        await self.query("RETURN 1")

    async def query(self, sql: str, variables: dict[str, Any] | None = None) -> list[Any]:
        """Run `sql` and return each statement's result; raise on any failed statement."""
        call = asyncio.ensure_future(self.send(sql, variables or {}))
        done, _ = await asyncio.wait({call}, timeout=self.timeout)
        if not done:
            call.add_done_callback(retrieve_exception)
            raise StoreUnavailable(f"database did not answer within {self.timeout:g}s")
        return _results(call.result())

    async def write(self, key: str, sql: str, variables: dict[str, Any] | None = None) -> list[Any]:
        """query() while holding `key`'s lock: see `exclusive`."""
        async with self.exclusive(key) as session:
            return await session.query(sql, variables)

    @asynccontextmanager
    async def exclusive(self, key: str) -> AsyncIterator[Exclusive]:
        """Hold `key`'s lock on this handle for a sequence of queries.

        Waiting for the lock is bounded by the timeout: behind a transaction
        the database never answers, the caller gets StoreUnavailable, not a
        hang. If a query inside is abandoned (timeout or cancellation), the
        lock is released only once the engine has answered it, so no second
        transaction on the same key can start meanwhile.
        """
        try:
            if self.locks.contended(key):
                await asyncio.wait_for(self.locks.acquire(key), self.timeout)
            else:
                await self.locks.acquire(key)  # free: taken at once, without wait_for's task and loop turn
        except TimeoutError:
            raise StoreUnavailable(
                f"an earlier transaction on {key} is still unanswered after {self.timeout:g}s"
            ) from None
        session = Exclusive(self)
        try:
            yield session
        finally:
            unanswered = session.unanswered
            if unanswered is None or unanswered.done():
                self.locks.release(key)
            else:
                unanswered.add_done_callback(lambda _: self.locks.release(key))

    async def _send(self, sql: str, variables: dict[str, Any]) -> dict[str, Any]:
        async with self._gate.passage():
            return await self._send_through(sql, variables)

    async def _send_through(self, sql: str, variables: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise StoreUnavailable("database is closed")
        try:
            response: dict[str, Any] = await self._connection.query_raw(sql, variables)
        except surrealdb.TransportError as error:
            raise StoreUnavailable(f"database unreachable: {error}") from error
        except surrealdb.SurrealError as error:
            # Closed or broken engines surface as SDK errors of several kinds.
            raise StoreUnavailable(f"database error: {error}") from error
        except OSError as error:
            raise StoreUnavailable(f"database unreachable: {error}") from error
        return response


class Queries(Protocol):
    """Anything that runs checked queries: the handle itself, or an Exclusive session."""

    async def query(self, sql: str, variables: dict[str, Any] | None = None) -> list[Any]: ...


class Exclusive:
    """Queries run while a key's lock is held; see Database.exclusive."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.unanswered: asyncio.Future[Any] | None = None

    async def query(self, sql: str, variables: dict[str, Any] | None = None) -> list[Any]:
        call = asyncio.ensure_future(self._db.send(sql, variables or {}))
        try:
            done, _ = await asyncio.wait({call}, timeout=self._db.timeout)
        except BaseException:
            self._abandon(call)
            raise
        if not done:
            self._abandon(call)
            raise StoreUnavailable(f"database did not answer within {self._db.timeout:g}s")
        return _results(call.result())

    def _abandon(self, call: asyncio.Future[Any]) -> None:
        call.add_done_callback(retrieve_exception)
        self.unanswered = call


def _results(response: dict[str, Any]) -> list[Any]:
    """Each statement's result, or the first real error raised as a StoreError."""
    if response.get("error") is not None:
        raise QueryFailed(str(response["error"]))
    statements = response.get("result")
    if not isinstance(statements, list) or not statements:
        # Every query has at least one statement: an answer without results
        # confirms nothing, so a write behind it may or may not have happened.
        raise StoreUnavailable(f"the database answered without statement results: {response!r:.200}")
    for statement in statements:
        if statement.get("status") == "OK":
            continue
        details = statement.get("details") or {}
        if details.get("kind") in _ECHO_KINDS:
            continue
        raise _error(statement)
    failed = [s for s in statements if s.get("status") != "OK"]
    if failed:
        # Only echoes: the transaction failed for a reason it did not name.
        raise StoreConflict(str(failed[0].get("result")))
    return [s.get("result") for s in statements]


def _error(statement: dict[str, Any]) -> Exception:
    kind = statement.get("kind")
    text = str(statement.get("result"))
    details = statement.get("details") or {}
    if kind == "Thrown" and THROW_PREFIX in text:
        return Rejected(text.split(THROW_PREFIX, 1)[1])
    if kind == "AlreadyExists" or ("index" in text and "already contains" in text):
        return DuplicateRecord(text)
    if details.get("kind") == "TransactionConflict" or "conflict" in text.lower():
        return StoreConflict(text)
    if kind == "Connection":
        return StoreUnavailable(text)
    return QueryFailed(f"{kind}: {text}")
