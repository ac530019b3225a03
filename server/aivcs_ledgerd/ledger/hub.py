"""In-process fan-out of committed events to live subscribers.

Publishing never waits: each subscriber has a bounded mailbox, and one that
falls behind is marked `overflowed` and its mailbox dropped, so it goes back
to reading from storage. A slow subscriber therefore never slows a writer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from aivcs_ledgerd.model import Event

# A mailbox item: committed events, or None for "the run became terminal".
Notice = list[Event] | None


class Listener:
    def __init__(self, capacity: int) -> None:
        self.mailbox: asyncio.Queue[Notice] = asyncio.Queue(capacity)
        self.overflowed = False
        self.closed = False

    def close(self) -> None:
        """Wake the subscriber for good: the daemon is draining."""
        self.closed = True
        while not self.mailbox.empty():
            self.mailbox.get_nowait()
        self.mailbox.put_nowait(None)

    def offer(self, notice: Notice) -> None:
        if self.overflowed or self.closed:
            return
        try:
            self.mailbox.put_nowait(notice)
        except asyncio.QueueFull:
            # Drop the backlog and leave one wake-up, so the subscriber goes
            # back to storage as soon as it reads again.
            self.overflowed = True
            while not self.mailbox.empty():
                self.mailbox.get_nowait()
            self.mailbox.put_nowait(None)

    def reset(self) -> None:
        """Called after the subscriber has caught up from storage."""
        self.overflowed = False


class Hub:
    def __init__(self, capacity: int = 64) -> None:
        self._listeners: dict[str, set[Listener]] = defaultdict(set)
        self._capacity = capacity
        self._closed = False

    @contextmanager
    def listen(self, run_id: str) -> Iterator[Listener]:
        listener = Listener(self._capacity)
        if self._closed:
            listener.close()
        self._listeners[run_id].add(listener)
        try:
            yield listener
        finally:
            listeners = self._listeners[run_id]
            listeners.discard(listener)
            if not listeners:
                del self._listeners[run_id]

    def close(self) -> None:
        """Wake every listener, now and later, with `closed` set."""
        self._closed = True
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.close()

    def publish(self, run_id: str, notice: Notice) -> None:
        for listener in self._listeners.get(run_id, ()):
            listener.offer(notice)

    @property
    def subscriber_count(self) -> int:
        return sum(len(listeners) for listeners in self._listeners.values())
