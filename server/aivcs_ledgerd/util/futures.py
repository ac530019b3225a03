"""asyncio helpers shared by the layers: futures nobody may await, and waiting without cancelling."""

from __future__ import annotations

import asyncio
import functools
from typing import Any


def retrieve_exception(future: asyncio.Future[Any]) -> None:
    """A done-callback that marks a failure as seen, so asyncio does not log it when nobody awaits it."""
    if not future.cancelled():
        future.exception()


async def settled_within(future: asyncio.Future[Any], seconds: float) -> bool:
    """Wait until `future` is done or `seconds` have passed; whether it is done. Never cancels `future`.

    `asyncio.wait({future}, timeout=seconds)` without its sets, generator checks and second
    callback list: on the path of every query. Cancelling the waiting caller leaves `future` running.
    """
    if future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    timer = loop.call_later(seconds, _wake, waiter)
    wake = functools.partial(_wake, waiter)
    future.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)
    return future.done()


def _wake(waiter: asyncio.Future[None], *_: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)
