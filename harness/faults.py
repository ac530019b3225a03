"""Faults injected at the store boundary of an in-process daemon: a wrapper of its `Database.send`.

`daemon.db.send` carries every raw round trip to SurrealDB. `StoreFaults`
wraps it (`Database.wrap_send`): the calls `only` selects meet the installed
fault (fail, hang, fail only the Nth, fail after the engine ran the
statement...), every other call goes through. `restore()` removes the wrapper
and lets go of every call held by `hold_until_restored` or `hang`.
`intercept` wraps every round trip with a test's own function.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aivcs_ledgerd.process.app import Daemon
from aivcs_ledgerd.store import Database, StoreUnavailable
from aivcs_ledgerd.store.database import Send

Replacement = Callable[[Send, str, dict[str, Any]], Awaitable[dict[str, Any]]]  # (real send, sql, variables)
Fault = Callable[[str, dict[str, Any], int], Awaitable[dict[str, Any]]]  # (sql, variables, nth selected call)


def intercept(db: Database, replacement: Replacement) -> Callable[[], None]:
    """Route every round trip of `db` through `replacement(real, sql, variables)`; returns the undo."""
    return db.wrap_send(lambda real: functools.partial(replacement, real))


def everything(sql: str) -> bool:
    return True


def is_append(sql: str) -> bool:
    return "INSERT INTO run_events" in sql


class StoreFaults:
    """A wrapper of one daemon's `Database.send`; the faults are its methods."""

    def __init__(self, daemon: Daemon, timeout: float = 0.5) -> None:
        self.db = daemon.db
        self.real: Send = daemon.db.send
        self.timeout = timeout  # the daemon's db_timeout: `hang_then_execute` and `execute_then_hang` outlast it
        self.calls = 0  # selected calls since the last install
        self.executed = 0  # selected calls the engine really ran
        self.released = asyncio.Event()
        self._fault: Fault | None = None
        self._only: Callable[[str], bool] = everything
        self._undo: Callable[[], None] | None = None

    def install(self, fault: Fault, only: Callable[[str], bool] = everything) -> None:
        self.calls = self.executed = 0
        self.released = asyncio.Event()
        self._fault, self._only = fault, only
        if self._undo is None:
            self._undo = self.db.wrap_send(self._wrap)

    def _wrap(self, real: Send) -> Send:
        self.real = real
        return self._send

    def restore(self) -> None:
        self.released.set()
        if self._undo is not None:
            self._undo()
            self._undo = None

    # The store as a test describes it.

    def fail(self) -> None:
        """Every round trip fails: the database is down."""
        self.install(self.unavailable)

    def hang(self) -> None:
        """Round trips that never answer until `restore()`, then fail as a timed-out socket would."""
        self.install(self.hang_until_restored)

    async def _send(self, sql: str, variables: dict[str, Any]) -> dict[str, Any]:
        if self._fault is None or not self._only(sql):
            return await self.real(sql, variables)
        self.calls += 1
        return await self._fault(sql, variables, self.calls)

    async def execute(self, sql: str, variables: dict[str, Any]) -> dict[str, Any]:
        answer = await self.real(sql, variables)
        self.executed += 1
        return answer

    # The faults.

    async def unavailable(self, sql: str, variables: dict[str, Any], n: int) -> dict[str, Any]:
        raise StoreUnavailable("injected: database unreachable")

    async def hang_until_restored(self, sql: str, variables: dict[str, Any], n: int) -> dict[str, Any]:
        await self.released.wait()
        raise StoreUnavailable("injected: the answer came too late")

    async def hang_then_execute(self, sql: str, variables: dict[str, Any], n: int) -> dict[str, Any]:
        await asyncio.sleep(self.timeout * 3)
        return await self.execute(sql, variables)

    async def execute_then_hang(self, sql: str, variables: dict[str, Any], n: int) -> dict[str, Any]:
        answer = await self.execute(sql, variables)
        await asyncio.sleep(self.timeout * 3)
        return answer

    async def hold_until_restored(self, sql: str, variables: dict[str, Any], n: int) -> dict[str, Any]:
        await self.released.wait()
        return await self.execute(sql, variables)

    async def execute_then_fail(self, sql: str, variables: dict[str, Any], n: int) -> dict[str, Any]:
        await self.execute(sql, variables)
        raise StoreUnavailable("injected: the connection dropped before the answer arrived")

    def nth(self, target: int, after: bool = False) -> Fault:
        """Only the `target`th selected call fails, before the engine ran it or (`after`) once it has."""

        async def fault(sql: str, variables: dict[str, Any], n: int) -> dict[str, Any]:
            if n != target:
                return await self.execute(sql, variables)
            if after:
                await self.execute(sql, variables)
            raise StoreUnavailable(f"injected: call {n} failed")

        return fault

    def raising(self, error: BaseException) -> Fault:
        async def fault(sql: str, variables: dict[str, Any], n: int) -> dict[str, Any]:
            raise error

        return fault

    def answering(self, answer: Any) -> Fault:
        async def fault(sql: str, variables: dict[str, Any], n: int) -> dict[str, Any]:
            return answer  # type: ignore[no-any-return]

        return fault
