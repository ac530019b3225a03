"""Python's cyclic garbage collector, set for a daemon that allocates per event.

Every appended event makes a handful of containers (its payload's dicts and
lists, its domain values, its row), and CPython collects the youngest
generation every 700 container allocations, each pass also walking what it
promotes, and now and then everything start-up made (modules, the schema, the
engine's handles). Measured inside the daemon, sequential 1,000-event appends
spent about 8.5 ms a batch in about 13 collections; with start-up's objects
frozen and a young threshold of 10,000, under 1 ms (docs/performance-notes.md).

Memory is freed by reference counting as before; only cyclic garbage (an
exception's frames, for one) waits longer, for at most YOUNG_THRESHOLD more
container allocations.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle_after_start() -> None:
    """Once started: collect start-up's garbage, keep the rest out of every later collection, raise the
    youngest generation's threshold (the older generations' stay as they are)."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
