"""What a checkpoint costs the calls it holds: measured per call (metrics) and per checkpoint (its log line)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from aivcs_ledgerd.middleware.metrics import Metrics
from aivcs_ledgerd.store import Database
from aivcs_ledgerd.store.gate import Gate, Hold
from aivcs_ledgerd.upkeep.checkpoint import Checkpointer

CLOSE_SECONDS = 0.8  # a checkpoint with a big memtable to write
CALLS = 5


async def test_the_gate_counts_the_calls_that_waited_and_the_longest_wait() -> None:
    gate = Gate()
    waits: list[float] = []
    gate.observe_wait = waits.append

    async def call() -> None:
        async with gate.passage():
            pass

    await call()  # an open gate: nobody waits
    assert waits == [] and gate.last_hold == Hold()
    async with gate.shut(1):
        tasks = [asyncio.create_task(call()) for _ in range(3)]
        await asyncio.sleep(0.2)
    await asyncio.gather(*tasks)
    assert len(waits) == 3 and min(waits) >= 0.15
    assert gate.last_hold.waited == 3 and gate.last_hold.longest >= 0.15
    async with gate.shut(1):
        pass
    assert gate.last_hold == Hold(), "each shut is counted on its own"


async def test_a_checkpoint_logs_and_measures_how_long_calls_waited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.open(f"surrealkv://{tmp_path / 'data'}")
    metrics = Metrics()
    metrics.instrument(db)
    try:
        await db.query("CREATE probe:0 SET n = 0;")
        close = db._connection.close
        closing = asyncio.Event()

        async def slow_close() -> None:
            closing.set()  # the gate is shut and empty by now
            await asyncio.sleep(CLOSE_SECONDS)
            await close()

        db._connection.close = slow_close
        checkpointer = Checkpointer(db, wal_bytes=1)
        caplog.set_level(logging.INFO, logger="aivcs_ledgerd.upkeep.checkpoint")
        checkpoint = asyncio.create_task(checkpointer.check())
        await asyncio.wait_for(closing.wait(), 10)
        assert db.checkpointing
        calls = [asyncio.create_task(db.query(f"CREATE probe:{i} SET n = {i};")) for i in range(1, CALLS + 1)]
        assert await checkpoint
        await asyncio.gather(*calls)
        [stored] = await db.query("SELECT VALUE n FROM probe;")
        assert sorted(stored) == list(range(CALLS + 1))
    finally:
        await db.close()
    assert db.gate.last_hold.waited == CALLS
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("database checkpoint: flushed")]
    found = re.search(r"; (\d+) calls waited, longest (\d+\.\d\d)s$", line)
    assert found is not None, line
    assert int(found[1]) == CALLS and float(found[2]) >= CLOSE_SECONDS / 2
    count = metrics.registry.get_sample_value("aivcs_ledger_db_checkpoint_wait_seconds_count")
    total = metrics.registry.get_sample_value("aivcs_ledger_db_checkpoint_wait_seconds_sum")
    assert count == CALLS
    assert total is not None and total >= CALLS * CLOSE_SECONDS / 2
    slow = metrics.registry.get_sample_value("aivcs_ledger_db_checkpoint_wait_seconds_bucket", {"le": "0.25"})
    assert slow == 0, "every call waited for the close"
