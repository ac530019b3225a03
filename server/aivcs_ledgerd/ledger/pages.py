"""Listing pages bounded by bytes as well as by count.

A page of runs or releases holds at most `page_size` items and, whatever
`page_size` is, at most PAGE_BYTES of serialized items (at least one item),
so every page reaches a client with gRPC's default 4 MiB receive limit.
What does not fit is on the next page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

PAGE_BYTES = 1 << 20

Item = TypeVar("Item")


def within_bytes(items: list[Item], size_of: Callable[[Item], int], limit: int = PAGE_BYTES) -> list[Item]:
    """The longest prefix of `items` whose sizes add up to at most `limit`; never empty if `items` is not."""
    total = 0
    for index, item in enumerate(items):
        total += size_of(item) + 6  # the tag and length of the item inside the response
        if total > limit and index > 0:
            return items[:index]
    return items
