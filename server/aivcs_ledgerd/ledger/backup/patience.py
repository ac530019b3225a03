"""Retrying a backup's or restore's database call through a passing outage, instead of failing the whole stream.

A dump or restore of millions of events runs for minutes: one round trip
that times out (a checkpoint's pause, a loaded machine, a server restart)
must not throw the work away. Each call is repeated with a growing pause,
told whether it is a repeat, so a write whose first attempt may have
committed unseen can make itself idempotent. A storage fault (disk full,
I/O error) is not waited out: it needs an operator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aivcs_ledgerd.store import StorageFault, StoreUnavailable

T = TypeVar("T")

log = logging.getLogger(__name__)

ATTEMPTS = 8
FIRST_PAUSE_SECONDS = 0.25
LONGEST_PAUSE_SECONDS = 8.0


async def patiently(call: Callable[[bool], Awaitable[T]], what: str) -> T:
    """`call(repeat)`, again on StoreUnavailable (at most ATTEMPTS times, about half a minute of pauses)."""
    pause = FIRST_PAUSE_SECONDS
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await call(attempt > 1)
        except StoreUnavailable as error:
            if attempt == ATTEMPTS or isinstance(error, StorageFault):
                raise
            log.info(
                "%s: database unavailable (%s); attempt %d of %d in %.2fs", what, error, attempt + 1, ATTEMPTS, pause
            )
            await asyncio.sleep(pause)
            pause = min(LONGEST_PAUSE_SECONDS, pause * 2)
    raise AssertionError("unreachable")
