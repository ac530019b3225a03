"""ReadEvents' read-ahead: the next window's query is with the engine before the reader handles this one.

The ledger's Events over the real embedded engine (mem://), with a send wrapper that records when
each range read reaches the database and adds an await of its own (which must not stop the overlap).
"""

from __future__ import annotations

from typing import Any

from aivcs_ledgerd.ledger.events import Events
from aivcs_ledgerd.ledger.hub import Hub
from aivcs_ledgerd.ledger.limits import Limits
from aivcs_ledgerd.model import NewEvent
from aivcs_ledgerd.store import Database, init_schema
from aivcs_ledgerd.store.database import Send
from aivcs_ledgerd.store.runs import create_run
from harness.data import run_record


async def _nothing() -> None:
    return None


async def test_the_next_window_reaches_the_engine_before_the_reader_handles_this_one() -> None:
    db = await Database.open("mem://")
    events = Events(db, Hub(), Limits())
    try:
        await init_schema(db)
        await create_run(db, run_record("ahead", agent="agent"))
        await events.append("ahead", [NewEvent("step", {"n": n}, None) for n in range(200)])
        reads: list[tuple[int, int]] = []  # (from_seq, to_seq) of each range read, as it reaches the engine

        def recording(real: Send) -> Send:
            async def send(sql: str, variables: dict[str, Any]) -> dict[str, Any]:
                await _nothing()  # an extra await on the way, as a wrapper or the store may add
                if "FROM run_events:[" in sql:
                    reads.append((variables["from_seq"], variables["to_seq"]))
                return await real(sql, variables)

            return send

        db.wrap_send(recording)
        seen = 0
        async for window in events.read("ahead"):
            # Nothing here awaits: the next read must already be with the engine.
            seen += len(window)
            if seen < 200:
                assert reads and reads[-1][0] == seen + 1, f"after {seen} events the reads were {reads}"
        assert seen == 200 and len(reads) > 2
    finally:
        await events.close()
        await db.close()
