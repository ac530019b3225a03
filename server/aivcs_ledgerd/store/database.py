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
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import surrealdb
from surrealdb import AsyncSurreal

from aivcs_ledgerd.store import wal, wire
from aivcs_ledgerd.store.errors import (
    DuplicateRecord,
    QueryFailed,
    Rejected,
    StorageFault,
    StorageFull,
    StoreConflict,
    StoreDamaged,
    StoreError,
    StoreUnavailable,
)
from aivcs_ledgerd.store.faults import storage_fault
from aivcs_ledgerd.store.gate import Gate
from aivcs_ledgerd.store.locks import KeyedLocks
from aivcs_ledgerd.util.futures import retrieve_exception, settled_within

log = logging.getLogger(__name__)

EMBEDDED_SCHEMES = frozenset({"mem", "memory", "surrealkv", "file"})
REMOTE_SCHEMES = frozenset({"ws", "wss", "http", "https"})
# Served by the bundled SurrealKV engine (file:// too, in surrealdb-embedded 3.0.0b10), whose
# bugs _connect and Database.checkpoint work around.
SURREALKV_SCHEMES = frozenset({"surrealkv", "file"})
# Opening or closing a durable embedded engine works through the data: a close writes the
# memtable to a table file, an open may first merge table files (seconds, growing with the
# data). Those steps get this long,
# not the round-trip timeout, so that a big store neither fails to start nor breaks a checkpoint.
EMBEDDED_OPEN_SECONDS = 600.0
THROW_PREFIX = "aivcs:"
# Statuses that only echo an earlier statement's failure inside a transaction.
_ECHO_KINDS = frozenset({"NotExecuted", "Cancelled"})


# One raw round trip to the engine: SurrealQL and its variables in, the engine's response out.
Send = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
# Wraps a Send (metrics timing it, tests injecting faults); see Database.wrap_send.
SendWrapper = Callable[[Send], Send]


class UnsupportedScheme(ValueError):
    """`--db` names a scheme the daemon cannot open."""


def check_url(url: str) -> str:
    """Return the URL's scheme, or raise UnsupportedScheme naming it."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else url.lower()
    if scheme not in EMBEDDED_SCHEMES | REMOTE_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in sorted(EMBEDDED_SCHEMES | REMOTE_SCHEMES))
        raise UnsupportedScheme(f"unsupported database scheme {scheme!r} in --db {url!r}; use one of {allowed}")
    return scheme


def wal_folder(url: str) -> Path | None:
    """Where a durable embedded engine keeps its write-ahead log; None for other engines."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SURREALKV_SCHEMES:
        return None
    return Path(parts.netloc + parts.path) / "wal"


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding `folder`."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


# Beside the store while a recovery from a storage fault runs: "SEGMENT SIZE", the newest log segment and
# its size at the fault, so that a start after a crash mid-recovery cuts the failed writes off too.
FAULT_MARKER = "aivcs-storage-fault"
REPAIR_HINT = (
    "copy the data folder aside, then run `aivcs-ledgerd repair --db {url}`: it cuts the log at the "
    "damage and reports what is lost"
)


def prepare_log(url: str) -> None:
    """Check a durable embedded store's write-ahead log before the engine replays it.

    A torn tail (what a crash mid-write leaves, never acknowledged) is cut off here, in place.
    Damage with valid records after it raises StoreDamaged: the engine would drop those records
    silently (store/wal.py).
    """
    folder = wal_folder(url)
    if folder is None:
        return
    marker = folder.parent / FAULT_MARKER
    if marker.exists():
        # A recovery was under way when the daemon stopped: cut what the failed writes left first.
        name, _, size = marker.read_text(encoding="ascii", errors="replace").partition(" ")
        dropped = wal.drop_failed_writes(folder / name, int(size)) if size.isdigit() and "/" not in name else 0
        if dropped:
            log.warning(
                "write-ahead log %s: cut off its last %d bytes, written by writes that failed with a storage "
                "fault before the last stop (none of them was acknowledged)",
                folder / name,
                dropped,
            )
        marker.unlink()
    torn, damaged = wal.check(folder)
    if damaged:
        where = "; ".join(segment.describe() for segment in damaged)
        raise StoreDamaged(
            f"the write-ahead log of {url} is damaged in the middle ({where}); the daemon does "
            f"not drop acknowledged writes silently: " + REPAIR_HINT.format(url=url)
        )
    for segment in torn:
        dropped = wal.cut(segment)
        log.warning(
            "write-ahead log %s: cut off a torn tail of %d bytes at offset %d (%s): an incomplete last "
            "write from a crash, never acknowledged",
            segment.path,
            dropped,
            segment.good_end,
            segment.problem,
        )


def _open_failure(url: str, error: Exception) -> StoreError:
    """What a failed open of `url` means, and what the operator does about it."""
    folder = wal_folder(url)
    fault = storage_fault(str(error)) if folder is not None else None
    if isinstance(fault, StorageFull) and folder is not None:
        return StorageFull(
            f"cannot open database {url}: the disk is full ({free_bytes(folder)} bytes free on the "
            f"file system of {folder.parent}): free space or grow the volume, then start again; "
            f"nothing acknowledged is lost ({error})"
        )
    if isinstance(fault, StoreDamaged):
        return StoreDamaged(
            f"cannot open database {url}: its table files or manifest fail their checksums "
            f"({error}); restore the data folder from a backup"
        )
    if isinstance(fault, StorageFault):
        return StorageFault(
            f"cannot open database {url}: {error}; check the volume (permissions, I/O errors "
            f"in the kernel log), then start again"
        )
    return StoreUnavailable(f"cannot open database {url}: {error}")


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


async def _connect(url: str, session: Session, round_trip_seconds: float) -> Any:
    """An SDK connection, signed in when remote, on the session's namespace and database.

    A durable embedded store's log is checked first (prepare_log), which also cuts off a torn
    tail, so that the engine never repairs one itself: SurrealKV 0.21.4's repair replaces the
    WAL file but goes on writing into the old, unlinked one (that session's acknowledged writes
    were lost at the next crash; the daemon used to open such a store twice to dodge it), and on
    a full disk its copy of the file fails and leaves the log unreadable for every later start.
    """
    scheme = check_url(url)
    open_seconds = round_trip_seconds if scheme in REMOTE_SCHEMES else max(round_trip_seconds, EMBEDDED_OPEN_SECONDS)
    try:
        await asyncio.to_thread(prepare_log, url)
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
        raise _open_failure(url, error) from error
    return connection


class Database:
    """The daemon's handle on SurrealDB. Safe to share between ledger objects."""

    def __init__(
        self,
        connection: Any,
        url: str,
        timeout: float,
        session: Session | None = None,
        send_wrappers: Sequence[SendWrapper] = (),
    ) -> None:
        self._connection = connection
        self.url = url
        self.timeout = timeout
        self.session = session or Session()
        self.locks = KeyedLocks()
        self._gate = Gate()
        self._closed = False
        self._wal_folder = wal_folder(url)
        # Set by the first storage fault (a write the engine could not make durable); every call is
        # then refused with it until recover() has proved the store sound again.
        self.fault: StorageFault | StoreDamaged | None = None
        self._last_damage = ""
        self._log_at_fault: tuple[Path, int] | None = None  # (newest segment, its size) at the first fault
        self._wrappers: list[SendWrapper] = list(send_wrappers)
        self._send_chain: Send = self._send
        self._rebuild_send()

    @classmethod
    async def open(
        cls,
        url: str,
        namespace: str = "aivcs",
        database: str = "ledger",
        credentials: Credentials | None = None,
        round_trip_seconds: float = 10.0,
        send_wrappers: Sequence[SendWrapper] = (),
    ) -> Database:
        """Connect, sign in when remote, and select the namespace and database; see wrap_send for the wrappers."""
        session = Session(namespace, database, credentials)
        connection = await _connect(url, session, round_trip_seconds)
        return cls(connection, url, round_trip_seconds, session, send_wrappers)

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
        """Close the engine; raise StorageFault when a durable engine could not write its memtable.

        The embedded engine's close reports nothing itself: a close that flushed leaves an empty
        write-ahead log, one that failed (a full disk) leaves the log as it was. Nothing is lost
        then (the next start replays the log), but the failure is the caller's to report.
        """
        if self._closed:
            return
        self._closed = True
        if self._connection is not None:
            await self._connection.close()
        if self._wal_folder is not None:
            left, files = await asyncio.to_thread(wal.size, self._wal_folder)
            if left:
                await asyncio.to_thread(self._drop_failed_writes)
                raise StorageFault(
                    f"the final flush failed: the engine could not write its memtable to disk ({left} bytes of "
                    f"write-ahead log in {files} files kept, {free_bytes(self._wal_folder)} bytes free); nothing "
                    f"acknowledged is lost, the next start replays the log" + self._fault_note()
                )

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
        return self._wal_folder

    async def checkpoint(self) -> None:
        """Close and reopen a durable embedded engine, which writes its memtable to disk.

        SurrealKV in this engine build never flushes its memtable while open:
        memory grows with every write, and at the second memtable rotation
        every write stalls for good (sooner on a host with less RAM: the
        engine sizes its memtable from it). Closing flushes it. Calls
        wait in front of the gate meanwhile; calls already inside finish
        first. Raises StoreUnavailable when they do not finish within the
        timeout (nothing is closed then) or when the reopen fails (every
        call then fails with StoreUnavailable until a checkpoint succeeds).
        The close and the reopen may take seconds on a big store and are
        bounded by EMBEDDED_OPEN_SECONDS, not the round-trip timeout; calls
        waiting at the gate meanwhile still time out after the latter.
        """
        folder = self.wal_folder
        if folder is None:
            raise ValueError(f"checkpoint() is for durable embedded engines, not {self.url}")
        try:
            async with self._gate.shut(self.timeout):
                if self._connection is not None:  # None: the last checkpoint's reopen failed
                    await asyncio.wait_for(self._connection.close(), EMBEDDED_OPEN_SECONDS)
                    self._connection = None
                left, _ = await asyncio.to_thread(wal.size, folder)
                failed = self._flush_fault(left, "checkpoint") if left else None
                if failed is not None:
                    # The close could not write the memtable (it reports nothing itself): the log is all
                    # there is of those writes, and the engine's state is no longer proven.
                    self._enter_fault(failed)
                    await asyncio.to_thread(self._drop_failed_writes)
                self._connection = await _connect(self.url, self.session, self.timeout)
                if failed is not None:
                    raise failed
        except TimeoutError:
            raise StoreUnavailable("checkpoint: calls did not settle, or the engine did not close, in time") from None
        except StoreError as error:
            if isinstance(error, StorageFault | StoreDamaged):
                self._enter_fault(error)
            raise

    async def recover(self) -> None:
        """Prove a durable embedded store sound after a storage fault, and clear the fault.

        Closes the engine (which writes its memtable, the acknowledged writes only, to a table file
        and empties the write-ahead log, whose tail may hold writes that failed), checks that the
        log is empty, opens it again and reads back. Raises the fault (or a newer one) when any
        step fails; the handle then stays refusing, and the caller tries again later. Needs free
        space for the memtable: call it once the file system has room.
        """
        folder = self.wal_folder
        if folder is None:
            raise ValueError(f"recover() is for durable embedded engines, not {self.url}")
        try:
            async with self._gate.shut(self.timeout):
                await asyncio.to_thread(self._mark_fault)
                if self._connection is not None:
                    connection, self._connection = self._connection, None
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), EMBEDDED_OPEN_SECONDS)
                left, _ = await asyncio.to_thread(wal.size, folder)
                if left:
                    await asyncio.to_thread(self._drop_failed_writes)
                self._connection = await _connect(self.url, self.session, self.timeout)
                if left:
                    # The reopen replayed the log into a fresh memtable; the next attempt flushes it.
                    raise self._flush_fault(left, "recovery")
                _results(await self._connection.query_raw("RETURN 1", {}))
        except TimeoutError:
            raise StoreUnavailable("recovery: calls did not settle, or the engine did not close, in time") from None
        except StoreError as error:
            if isinstance(error, StorageFault | StoreDamaged):
                self.fault = error
            raise
        cleared, self.fault, self._log_at_fault = self.fault, None, None
        with contextlib.suppress(FileNotFoundError):
            folder.parent.joinpath(FAULT_MARKER).unlink()
        log.warning("storage recovered: the store was closed, reopened and read back after: %s", cleared)

    def _mark_fault(self) -> None:
        """Write FAULT_MARKER before a recovery closes the engine (which writes out the failed writes)."""
        if self._log_at_fault is None or self._wal_folder is None:
            return
        path, size = self._log_at_fault
        marker = self._wal_folder.parent / FAULT_MARKER
        with contextlib.suppress(OSError), marker.open("w", encoding="ascii") as file:
            file.write(f"{path.name} {size}")
            file.flush()
            os.fsync(file.fileno())

    def _drop_failed_writes(self) -> None:
        """With the engine closed on a log it could not empty: cut off the writes that failed (wal.py)."""
        if self._log_at_fault is None:
            return
        path, size_at_fault = self._log_at_fault
        dropped = wal.drop_failed_writes(path, size_at_fault)
        if dropped:
            log.warning(
                "write-ahead log %s: cut off its last %d bytes, written by the writes that failed with the "
                "storage fault (it was %d bytes long then; none of them was acknowledged)",
                path,
                dropped,
                size_at_fault,
            )

    def _flush_fault(self, left: int, during: str) -> StorageFault:
        assert self._wal_folder is not None
        free = free_bytes(self._wal_folder)
        full = free < left + (1 << 20)
        kind = StorageFull if full else StorageFault
        return kind(
            f"{'disk full' if full else 'storage I/O error'}: {during}: the engine could not write its "
            f"memtable to disk ({left} bytes of write-ahead log kept, {free} bytes free)"
        )

    def _enter_fault(self, fault: StorageFault | StoreDamaged) -> None:
        if self.fault is None and self._wal_folder is not None and self._log_at_fault is None:
            newest = wal.segments(self._wal_folder)[-1:]
            with contextlib.suppress(OSError):
                self._log_at_fault = (newest[0], newest[0].stat().st_size) if newest else None
        if self.fault is None:
            log.error(
                "storage fault (%s): %s; every call is refused until the store is proven sound again",
                fault.reason,
                fault,
            )
        self.fault = fault

    def _fault_note(self) -> str:
        return "" if self.fault is None else f" (after the storage fault: {self.fault})"

    def _refusal(self) -> StoreError:
        fault = self.fault
        assert fault is not None
        if isinstance(fault, StorageFull):
            return StorageFull(
                f"{fault}; nothing of this call is acknowledged, writes resume once space is free "
                f"and the store is proven sound"
            )
        return type(fault)(f"{fault}; nothing of this call is acknowledged until the store is proven sound")

    def _checked(self, response: dict[str, Any]) -> list[Any]:
        """_results(), with the storage faults a durable embedded engine reports only as text."""
        if self._wal_folder is not None:
            texts = [str(response["error"])] if response.get("error") is not None else []
            statements = response.get("result")
            if isinstance(statements, list):
                texts += [
                    str(s.get("result"))
                    for s in statements
                    if isinstance(s, dict) and s.get("status") != "OK" and s.get("kind") != "Thrown"
                ]
            for text in texts:
                fault = storage_fault(text)
                if fault is not None:
                    raise self._met(fault)
        return _results(response)

    def _met(self, fault: StoreError) -> StoreError:
        """Note a storage fault a call met and return it to raise.

        A failed write (StorageFault) refuses every later call until recover(). Damaged data
        (StoreDamaged, a table file failing its checksum) fails only the calls that read it, with
        DATA_LOSS: the rest of the store still serves.
        """
        if isinstance(fault, StorageFault):
            self._enter_fault(fault)
        elif str(fault) != self._last_damage:
            self._last_damage = str(fault)
            log.error("%s; calls reading it answer DATA_LOSS: restore the data folder from a backup", fault)
        return fault

    def wrap_send(self, wrapper: SendWrapper) -> Callable[[], None]:
        """Wrap every raw round trip from now on; returns a function that removes the wrapper again.

        `wrapper` gets the Send it wraps and returns the Send to use instead; the wrapper added
        last is the outermost. The metrics time round trips this way, fault-injection tests break
        them. Every query of this handle, checkpoints' and recoveries' aside, goes through it.
        """
        self._wrappers.append(wrapper)
        self._rebuild_send()

        def remove() -> None:
            self._wrappers.remove(wrapper)
            self._rebuild_send()

        return remove

    def _rebuild_send(self) -> None:
        chain: Send = self._send
        for wrapper in self._wrappers:
            chain = wrapper(chain)
        self._send_chain = chain

    async def send(self, sql: str, variables: dict[str, Any]) -> dict[str, Any]:
        """One raw round trip through the wrappers (wrap_send): the engine's response, unchecked."""
        return await self._send_chain(sql, variables)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers a trivial query."""
        await self.query("RETURN 1")

    def start(self, sql: str, variables: dict[str, Any] | None = None) -> asyncio.Future[dict[str, Any]]:
        """Hand `sql` to the engine now: its round trip runs as a task of its own; see `answer`.

        The task's first step, on the next loop turn, reaches the engine (an open gate does not
        wait), so a caller that starts a query and then works without awaiting overlaps the two.
        """
        return asyncio.ensure_future(self._send_chain(sql, variables or {}))

    async def answer(
        self,
        call: asyncio.Future[dict[str, Any]],
        abandoned: Callable[[asyncio.Future[dict[str, Any]]], None] | None = None,
    ) -> list[Any]:
        """Each statement's result of a started query; raise on any failed statement.

        Waits at most the timeout (then StoreUnavailable). A call given up on, by the timeout or
        by the caller's cancellation, goes on in the engine: its failure is not logged, and
        `abandoned` gets it (an Exclusive session holds its key's lock until the engine answers).
        """
        try:
            done = await settled_within(call, self.timeout)
        except BaseException:
            self._abandon(call, abandoned)
            raise
        if not done:
            self._abandon(call, abandoned)
            raise StoreUnavailable(f"database did not answer within {self.timeout:g}s")
        return self._checked(call.result())

    @staticmethod
    def _abandon(
        call: asyncio.Future[dict[str, Any]], abandoned: Callable[[asyncio.Future[dict[str, Any]]], None] | None
    ) -> None:
        call.add_done_callback(retrieve_exception)
        if abandoned is not None:
            abandoned(call)

    async def query(self, sql: str, variables: dict[str, Any] | None = None) -> list[Any]:
        """Run `sql` and return each statement's result; raise on any failed statement."""
        return await self.answer(self.start(sql, variables))

    async def write(self, key: str, sql: str, variables: dict[str, Any] | None = None) -> list[Any]:
        """query() while holding `key`'s lock: see `exclusive`."""
        async with self.exclusive(key) as session:
            return await session.query(sql, variables)

    def exclusive(self, key: str) -> Exclusive:
        """Hold `key`'s lock on this handle for a sequence of queries: `async with db.exclusive(key) as session`.

        Waiting for the lock is bounded by the timeout: behind a transaction
        the database never answers, the caller gets StoreUnavailable, not a
        hang. If a query inside is abandoned (timeout or cancellation), the
        lock is released only once the engine has answered it, so no second
        transaction on the same key can start meanwhile.
        """
        return Exclusive(self, key)

    async def _send(self, sql: str, variables: dict[str, Any]) -> dict[str, Any]:
        gate = self._gate
        await gate.enter()  # Gate.passage() without a context manager's two coroutines: once per query
        try:
            return await self._send_through(sql, variables)
        finally:
            gate.leave()

    async def _send_through(self, sql: str, variables: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise StoreUnavailable("database is closed")
        if self.fault is not None:
            raise self._refusal()
        if self._connection is None:
            raise StoreUnavailable("database is being reopened")
        try:
            response = await wire.query_raw(self._connection, sql, variables)
        except surrealdb.TransportError as error:
            raise StoreUnavailable(f"database unreachable: {error}") from error
        except surrealdb.SurrealError as error:
            # Closed or broken engines surface as SDK errors of several kinds.
            fault = storage_fault(str(error)) if self._wal_folder is not None else None
            if fault is not None:
                raise self._met(fault) from error
            raise StoreUnavailable(f"database error: {error}") from error
        except OSError as error:
            raise StoreUnavailable(f"database unreachable: {error}") from error
        return response


class Queries(Protocol):
    """Anything that runs checked queries: the handle itself, or an Exclusive session."""

    async def query(self, sql: str, variables: dict[str, Any] | None = None) -> list[Any]: ...


class Exclusive:
    """Queries run while a key's lock is held; see Database.exclusive (a class, not a generator: entered
    once per append)."""

    def __init__(self, db: Database, key: str) -> None:
        self._db = db
        self._key = key
        self.unanswered: asyncio.Future[Any] | None = None

    async def __aenter__(self) -> Exclusive:
        db, key = self._db, self._key
        try:
            if db.locks.contended(key):
                await asyncio.wait_for(db.locks.acquire(key), db.timeout)
            else:
                await db.locks.acquire(key)  # free: taken at once, without wait_for's task and loop turn
        except TimeoutError:
            raise StoreUnavailable(
                f"an earlier transaction on {key} is still unanswered after {db.timeout:g}s"
            ) from None
        return self

    async def __aexit__(self, *_: object) -> None:
        unanswered, locks, key = self.unanswered, self._db.locks, self._key
        if unanswered is None or unanswered.done():
            locks.release(key)
        else:
            unanswered.add_done_callback(lambda _: locks.release(key))

    async def query(self, sql: str, variables: dict[str, Any] | None = None) -> list[Any]:
        return await self._db.answer(self._db.start(sql, variables), self._abandoned)

    def _abandoned(self, call: asyncio.Future[Any]) -> None:
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
