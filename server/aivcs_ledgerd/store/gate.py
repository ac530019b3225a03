"""A gate in front of the database connection: open to any number of calls, or shut for maintenance.

While it is shut, new calls wait in front of it and the calls already
through finish; whoever shut it then has the connection to itself (to close
and reopen an embedded engine, see Database.checkpoint).

What the calls pay is measured: `observe_wait`, when set, gets each
waiting call's wait once it passes (metrics), and `last_hold` says, once
the gate opens, how many calls arrived while it was shut and how long the
first of them waited (the checkpoint's log line).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hold:
    """What one shut of the gate cost the calls: how many waited, and the longest wait in seconds."""

    waited: int = 0
    longest: float = 0.0


class Gate:
    def __init__(self) -> None:
        self._inside = 0
        self._open = asyncio.Event()
        self._open.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._keeper = asyncio.Lock()
        self._waited = 0  # calls that arrived since the gate was last shut
        self._first_arrival: float | None = None
        self.last_hold = Hold()
        self.observe_wait: Callable[[float], None] | None = None

    @property
    def inside(self) -> int:
        return self._inside

    @property
    def shut_now(self) -> bool:
        return not self._open.is_set()

    def passage(self) -> _Passage:
        """Wait while the gate is shut, then stay inside for the block (`async with gate.passage():`)."""
        return _Passage(self)

    async def enter(self) -> None:
        """Wait while the gate is shut, then count this call as inside until `leave`."""
        if not self._open.is_set():
            arrived = time.perf_counter()
            self._waited += 1
            if self._first_arrival is None:
                self._first_arrival = arrived
            while not self._open.is_set():
                await self._open.wait()
            if self.observe_wait is not None:
                self.observe_wait(time.perf_counter() - arrived)
        self._inside += 1
        self._empty.clear()

    def leave(self) -> None:
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
            self._waited, self._first_arrival = 0, None
            try:
                await asyncio.wait_for(self._empty.wait(), wait_seconds)
                yield
            finally:
                first = self._first_arrival
                self.last_hold = Hold(self._waited, 0.0 if first is None else time.perf_counter() - first)
                self._open.set()


class _Passage:
    """`Gate.passage()`: a class rather than a generator, as it is entered once per query."""

    __slots__ = ("_gate",)

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    async def __aenter__(self) -> None:
        await self._gate.enter()

    async def __aexit__(self, *_: object) -> None:
        self._gate.leave()
