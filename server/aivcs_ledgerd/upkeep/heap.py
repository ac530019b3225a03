"""Hands memory the engine has freed back to the operating system.

The embedded engine allocates through glibc's malloc from many threads,
so glibc keeps many arenas, and it keeps what they free for reuse instead
of returning it. After a checkpoint closes the engine (its memtable and
caches freed), the daemon's RSS would stay at its high-water mark;
`malloc_trim(0)` after each checkpoint returns it (README, "Storage
engine memory", has the figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to call
        return None
    return trim


_TRIM = _malloc_trim()


def available() -> bool:
    """Whether this C library can return freed memory on request (glibc can)."""
    return _TRIM is not None


def trim() -> bool:
    """Return free memory of every malloc arena to the OS; whether any was returned.

    Blocks for a few milliseconds per hundred MB freed; ctypes releases the
    GIL for the call, so run it in a worker thread.
    """
    return _TRIM is not None and _TRIM(0) == 1


class Trimmer:
    """Trims the heap every `interval` seconds, for daemons without a Checkpointer (which trims itself).

    A flood of large requests leaves its freed buffers in glibc's arenas;
    without a trim the daemon would keep its high-water mark after the flood.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if available():
            self._task = asyncio.create_task(self._loop(), name="heap-trim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await asyncio.to_thread(trim)
