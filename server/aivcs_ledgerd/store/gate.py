"""A gate in front of the database connection: open to any number of calls, or shut for maintenance.

While it is shut, new calls wait in front of it and the calls already
through finish; whoever shut it then has the connection to itself (to close
and reopen an embedded engine, see Database.checkpoint).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Gate:
    def __init__(self) -> None:
        self._inside = 0
        self._open = asyncio.Event()
        self._open.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._keeper = asyncio.Lock()

    @property
    def inside(self) -> int:
        return self._inside

    @property
    def shut_now(self) -> bool:
        return not self._open.is_set()

    @asynccontextmanager
    async def passage(self) -> AsyncIterator[None]:
        """Wait while the gate is shut, then stay inside for the block."""
        while not self._open.is_set():
            await self._open.wait()
        self._inside += 1
        self._empty.clear()
        try:
            yield
        finally:
            self._inside -= 1
            if self._inside == 0:
                self._empty.set()

    @asynccontextmanager
    async def shut(self, wait_seconds: float) -> AsyncIterator[None]:
        """Shut the gate and wait, at most `wait_seconds`, until nobody is inside.

        Raises TimeoutError (and opens the gate again) when calls inside do
        not finish in time; the gate opens again when the block ends.
        """
        async with self._keeper:
            self._open.clear()
            try:
                await asyncio.wait_for(self._empty.wait(), wait_seconds)
                yield
            finally:
                self._open.set()
