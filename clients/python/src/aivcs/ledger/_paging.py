"""Where a paged listing stands (ListRuns, GetHistory), shared by the sync and async clients.

The clients only fetch pages; this decides each page's size, carries the
page token, cuts the last page at `limit`, and says when to stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

__all__ = ["Paging"]

Item = TypeVar("Item")


class Paging:
    """The next page's size and token, and whether there is one to fetch."""

    def __init__(self, limit: int | None, page_size: int) -> None:
        self._limit = limit
        self._page_size = page_size
        self._seen = 0
        self.token = ""
        self.done = limit is not None and limit <= 0

    @property
    def size(self) -> int:
        """The page size to ask for: no more than what is left of `limit`."""
        if self._limit is None:
            return self._page_size
        return max(1, min(self._page_size, self._limit - self._seen))

    def take(self, items: Sequence[Item], next_page_token: str) -> Sequence[Item]:
        """The items of the page just fetched that are to be yielded; moves on to the next page."""
        if self._limit is not None:
            items = items[: self._limit - self._seen]
        self._seen += len(items)
        self.token = next_page_token
        self.done = not next_page_token or (self._limit is not None and self._seen >= self._limit)
        return items
