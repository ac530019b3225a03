"""The one place where the store's errors become the ledger's refusals.

Every public method of Runs, Events and Releases is wrapped here, so what
reaches the ways in (gRPC, HTTP, OTLP) is always a LedgerError: they never
need to know the store's exception types, and the status a caller gets for
a database fault is the same whichever way it came in.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from aivcs_ledgerd.ledger.errors import DataLoss, LedgerError, ResourceExhausted, Unavailable
from aivcs_ledgerd.store import StorageFull, StoreDamaged, StoreError

P = ParamSpec("P")
T = TypeVar("T")


def ledger_error(error: StoreError) -> LedgerError:
    """The refusal a caller gets for a store error: full disk, damaged data, or (anything else) retry later."""
    if isinstance(error, StorageFull):
        return ResourceExhausted(str(error))
    if isinstance(error, StoreDamaged):
        return DataLoss(str(error))
    return Unavailable(f"database error: {error}")


def translated(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Wrap a coroutine method so a store error leaves it as a ledger error."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except StoreError as error:
            raise ledger_error(error) from error

    return wrapper


def translated_stream(method: Callable[P, AsyncIterator[T]]) -> Callable[P, AsyncIterator[T]]:
    """Wrap an async-generator method likewise; closing the wrapper closes the wrapped generator at once."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        try:
            async with contextlib.aclosing(method(*args, **kwargs)) as items:  # type: ignore[type-var]
                async for item in items:
                    yield item
        except StoreError as error:
            raise ledger_error(error) from error

    return wrapper
