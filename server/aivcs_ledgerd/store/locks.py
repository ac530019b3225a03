"""Per-key mutual exclusion that belongs to one database handle.

The embedded engine can lose a transaction that reported success when two
transactions writing the same record run at once (docs/architecture.md, hazard 2).
So every transaction that writes a run's or an agent's records holds that
key's lock until the engine has finished with it, even when the caller gave
up waiting. The locks live on the handle, so any number of ledger objects
sharing one handle share them too.
"""

from __future__ import annotations

import asyncio


class KeyedLocks:
    """A lock per key, created on demand and dropped when nobody holds or waits."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def acquire(self, key: str) -> None:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._forget(key)
            raise

    def contended(self, key: str) -> bool:
        """Whether anyone holds or waits for `key`; if not, acquire() returns without suspending."""
        return key in self._locks

    def release(self, key: str) -> None:
        self._locks[key][0].release()
        self._forget(key)

    def _forget(self, key: str) -> None:
        lock, users = self._locks[key]
        if users == 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
