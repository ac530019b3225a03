"""The daemon's garbage-collector settings: start-up's objects out of every collection, a larger young generation."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from aivcs_ledgerd.process import collector


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored")
def test_settling_freezes_what_exists_and_collects_the_young_less_often() -> None:
    survivor = [object()]  # alive at the call: frozen with everything else
    _, middle, oldest = gc.get_threshold()
    collector.settle_after_start()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, middle, oldest)
    assert survivor not in gc.get_objects()  # frozen objects are in no generation a collection walks
    garbage: list[object] = []
    garbage.append(garbage)  # a cycle made afterwards is still collected
    del garbage
    assert gc.collect() >= 1
