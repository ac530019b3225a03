"""One asyncio helper shared by the layers: futures nobody may await."""

from __future__ import annotations

import asyncio
from typing import Any


def retrieve_exception(future: asyncio.Future[Any]) -> None:
    """A done-callback that marks a failure as seen, so asyncio does not log it when nobody awaits it."""
    if not future.cancelled():
        future.exception()
