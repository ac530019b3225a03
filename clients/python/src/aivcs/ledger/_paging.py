"""Where a paged listing stands (ListRuns, GetHistory), shared by the sync and async clients.

The clients only fetch pages (`pages` and `async_pages`, one loop each);
`Paging` decides each page's size, carries the page token, cuts the last
page at `limit`, and says when to stop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Protocol, TypeVar

__all__ = ["PageReply", "PageRequest", "Paging", "async_pages", "pages"]

Item = TypeVar("Item")
Request = TypeVar("Request", bound="PageRequest")
Reply = TypeVar("Reply", bound="PageReply")


class PageRequest(Protocol):
    """A listing request: ListRunsRequest, GetHistoryRequest."""

    page_size: int
    page_token: str


class PageReply(Protocol):
    """A page of a listing: its items are the caller's to pick out."""

    @property
    def next_page_token(self) -> str: ...


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

    def ask(self, request: Request) -> Request:
        """`request` set to fetch the next page."""
        request.page_size = self.size
        request.page_token = self.token
        return request

    def take(self, items: Sequence[Item], next_page_token: str) -> Sequence[Item]:
        """The items of the page just fetched that are to be yielded; moves on to the next page."""
        if self._limit is not None:
            items = items[: self._limit - self._seen]
        self._seen += len(items)
        self.token = next_page_token
        self.done = not next_page_token or (self._limit is not None and self._seen >= self._limit)
        return items


def pages(
    fetch: Callable[[Request], Reply],
    request: Request,
    items: Callable[[Reply], Sequence[Item]],
    *,
    limit: int | None,
    page_size: int,
) -> Iterator[Item]:
    """The items of every page `fetch` returns for `request`, fetched as the iteration goes; at most `limit`."""
    paging = Paging(limit, page_size)
    while not paging.done:
        reply = fetch(paging.ask(request))
        yield from paging.take(items(reply), reply.next_page_token)


async def async_pages(
    fetch: Callable[[Request], Awaitable[Reply]],
    request: Request,
    items: Callable[[Reply], Sequence[Item]],
    *,
    limit: int | None,
    page_size: int,
) -> AsyncIterator[Item]:
    """`pages` for asyncio: `fetch` is awaited."""
    paging = Paging(limit, page_size)
    while not paging.done:
        reply = await fetch(paging.ask(request))
        for item in paging.take(items(reply), reply.next_page_token):
            yield item
