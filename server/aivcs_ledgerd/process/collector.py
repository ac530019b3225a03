"""Python's cyclic garbage collector, set for a daemon that allocates per event.

Every appended event makes a handful of containers (its payload's dicts and
lists, its domain values, its row). CPython collects the youngest generation
every 700 container allocations, each pass also walking what it promotes,
and now and then everything start-up made (modules, the schema, the engine's
handles). Measured inside the daemon, that cost a 1,000-event append more
than its hash chain; frozen start-up objects and a larger young generation
take nearly all of it away (docs/performance-notes.md has the figures).

Memory is freed by reference counting as before; only cyclic garbage (an
exception's frames, for one) is found later.
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
