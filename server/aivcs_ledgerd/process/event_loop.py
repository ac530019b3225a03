"""Which asyncio event loop the daemon runs on: uvloop where it is installed, else the standard one.

Every call's Python work runs on the one event-loop thread, so what the loop
itself costs (scheduling callbacks, waking on gRPC's completions and on the
engine's answers from its threads) is paid on every append. uvloop runs the
loop in C on libuv; it is a dependency on every platform it supports (not
Windows). `--event-loop asyncio` keeps the standard loop, for a platform or
a problem uvloop does not cover; the daemon behaves the same on either.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

CHOICES = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


class EventLoopUnavailable(Exception):
    """The loop asked for cannot run here."""


def have_uvloop() -> bool:
    """Whether uvloop can be imported here."""
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory `asyncio.Runner` takes for `choice` (one of CHOICES); None is the standard loop."""
    if choice == "asyncio" or (choice == "auto" and not have_uvloop()):
        return None
    if not have_uvloop():
        raise EventLoopUnavailable("uvloop is not installed here (pip install uvloop; not available on Windows)")
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop] | None) -> T:
    """Run `main` to completion on a loop from `factory` (see loop_factory), as `asyncio.run` does."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """The implementation of the loop this is called on: uvloop or asyncio."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
