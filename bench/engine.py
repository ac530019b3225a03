"""The direct-engine ceilings: embedded SurrealDB driven from Python, no daemon.

Same engine (surrealkv:// in a temporary folder), same schema
(`init_schema`), same rows (record id run_events:[run_id, seq], run_id,
seq, kind, payload, timestamp, timestamp_ns, digest), the run record
updated in every transaction as the daemon's append does, the same batch
size, and the daemon's range query over record ids, 1000 seqs per query.
One transaction or query at a time, as the daemon's per-run writer and
reader issue them.

Four ways to hand rows to the engine are measured, each on a fresh
database, and the fastest is the ceiling: "sdk", the SDK's own values
through its own query_raw (its pure-Python CBOR codec both ways); "json", the rows as one JSON
text that the engine decodes (for reads, one JSON text decoded with the C
`json` module, as store/events.py reads); "cbor", the rows as one CBOR
byte string the engine decodes (as a restore stages them; for reads,
decoded with cbor2); and "rows", the daemon's own records as values
(store/events.py event_rows), encoded by the C codec (store/wire.py), as
appends write them (read as JSON text). Batches (values, JSON text, CBOR
bytes) are built before the clock starts; encoding of values and
decoding of what is read are timed, since every writer and reader pays
them. Left out on purpose: the daemon's
in-transaction guards (status and last-seq re-check, idempotency keys),
hash chaining and proto conversion, which are costs of the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from surrealdb import AsyncSurreal, RecordID

from aivcs_ledgerd.config import Settings
from aivcs_ledgerd.model import Event
from aivcs_ledgerd.store import Database, init_schema
from aivcs_ledgerd.store.events import event_rows
from aivcs_ledgerd.store.runs import create_run
from aivcs_ledgerd.store.wal import size as wal_size
from aivcs_ledgerd.util.timeutil import ns_to_datetime
from bench import workload
from bench.stats import Rate
from harness.data import run_record
from harness.proc import rss_mb

UPDATE_RUN = "UPDATE ONLY type::record('runs', $run_id) SET total_events = $last, events_digest = $digest RETURN NONE;"
INSERT = {
    **{
        encoding: f"BEGIN TRANSACTION; INSERT INTO run_events $events RETURN NONE; {UPDATE_RUN} COMMIT TRANSACTION;"
        for encoding in ("sdk", "rows")
    },
    **{
        encoding: f"""BEGIN TRANSACTION;
    INSERT INTO run_events encoding::{encoding}::decode($events).map(|$e| {{
        id: type::record('run_events', [$run_id, $e[0]]), run_id: $run_id, seq: $e[0], kind: $e[1], payload: $e[2],
        timestamp: time::from_nanos($e[3]), timestamp_ns: $e[3], digest: $e[4],
    }}) RETURN NONE;
    {UPDATE_RUN}
    COMMIT TRANSACTION;"""
        for encoding in ("json", "cbor")
    },
}
RANGE = "run_events:[$run_id, $from_seq]..=[$run_id, $to_seq]"
READ = {
    "sdk": f"SELECT seq, kind, payload, timestamp_ns, digest FROM {RANGE};",
    **{
        encoding: f"RETURN encoding::{encoding}::encode((SELECT VALUE [seq, kind, payload, timestamp_ns, digest] "
        f"FROM {RANGE}));"
        for encoding in ("json", "cbor")
    },
}
READ["rows"] = READ["json"]  # the daemon writes rows as values and reads JSON text
DECODE: dict[str, Callable[[Any], Any]] = {
    "sdk": lambda rows: rows,
    "json": json.loads,
    "cbor": cbor2.loads,
    "rows": json.loads,
}
READ_WINDOW = 1000
RUN_ID = "engine-ceiling"


@dataclass(frozen=True, slots=True)
class EngineCeilings:
    insert: Rate
    read: Rate
    insert_via: str
    read_via: str
    variants: dict[str, tuple[Rate, Rate]]  # encoding -> (insert, read)
    rss_per_event_kb: dict[str, float]  # encoding -> this process's RSS growth per event inserted
    # rows inserts with the daemon's checkpoints (Database.checkpoint at --checkpoint-wal-mb of log),
    # which the engine needs to go on taking writes (upkeep/checkpoint.py) and the ceilings above never pay.
    insert_checkpointed: Rate

    @property
    def insert_rss_per_event_kb(self) -> float:
        return self.rss_per_event_kb[self.insert_via]


def _digest(seq: int) -> str:
    return hashlib.sha256(seq.to_bytes(8, "big")).hexdigest()  # a digest's shape: 64 hex characters


def _batches(encoding: str, events: int, batch: int, run_id: str = RUN_ID) -> list[dict[str, Any]]:
    """The variables of each insert transaction."""
    now = time.time_ns()
    out = []
    for first in range(1, events + 1, batch):
        seqs = range(first, min(first + batch, events + 1))
        rows: Any
        if encoding == "rows":
            stored = [Event(run_id, seq, workload.KIND, workload.payload(seq), now + seq, _digest(seq)) for seq in seqs]
            rows = event_rows(run_id, stored)
        elif encoding == "sdk":
            rows = [
                {
                    "id": RecordID("run_events", [run_id, seq]),
                    "run_id": run_id,
                    "seq": seq,
                    "kind": workload.KIND,
                    "payload": workload.payload(seq),
                    "timestamp": ns_to_datetime(now + seq),
                    "timestamp_ns": now + seq,
                    "digest": _digest(seq),
                }
                for seq in seqs
            ]
        else:
            plain = [[seq, workload.KIND, workload.payload(seq), now + seq, _digest(seq)] for seq in seqs]
            rows = json.dumps(plain, separators=(",", ":")) if encoding == "json" else cbor2.dumps(plain)
        out.append({"run_id": run_id, "events": rows, "last": seqs[-1], "digest": _digest(seqs[-1])})
    return out


def _check(response: dict[str, Any]) -> list[Any]:
    if response.get("error") is not None:
        raise RuntimeError(f"engine error: {response['error']}")
    results: list[dict[str, Any]] = response["result"]
    for statement in results:
        if statement.get("status") != "OK":
            raise RuntimeError(f"engine statement failed: {statement}")
    return [statement.get("result") for statement in results]


def _rate(events: int, started: float, cpu: float) -> Rate:
    """`events` since `started`; this process's CPU (Python and the engine's threads) counts as the server's."""
    seconds = time.perf_counter() - started
    return Rate(events, seconds, server_cpu=(time.process_time() - cpu) / seconds)


async def _measure(
    folder: Path, encoding: str, events: int, batch: int, read_passes: int, checkpoint_bytes: int = 0
) -> tuple[Rate, Rate, float]:
    """Insert and read rates and RSS per event; with `checkpoint_bytes`, checkpoint as the daemon does."""
    url = f"surrealkv://{folder}"
    connection = AsyncSurreal(url)
    await connection.connect()
    db = Database(connection, url, 60.0)  # a checkpoint swaps the connection inside: query through db
    try:
        await connection.use("aivcs", "ledger")
        await init_schema(db)
        await create_run(db, run_record(RUN_ID, agent=workload.AGENT, spec=workload.SPEC_DIGEST))
        # "sdk" through the SDK's own query_raw (its Python codec both ways); the others as the daemon
        # sends queries (store/wire.py's C codec frames them).
        send = connection.query_raw if encoding == "sdk" else db.send
        batches = _batches(encoding, events, batch)
        rss_before = rss_mb(os.getpid())
        started, cpu = time.perf_counter(), time.process_time()
        for variables in batches:
            _check(await send(INSERT[encoding], variables))
            if checkpoint_bytes and wal_size(folder / "wal")[0] >= checkpoint_bytes:
                await db.checkpoint()
        inserts = _rate(events, started, cpu)
        # What the engine keeps in memory for what it stored: the reference for the daemon's RSS.
        rss_per_event_kb = (rss_mb(os.getpid()) - rss_before) * 1000 / events
        del batches

        read = 0
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(read_passes):
            for first in range(1, events + 1, READ_WINDOW):
                last = min(first + READ_WINDOW - 1, events)
                [found] = _check(await send(READ[encoding], {"run_id": RUN_ID, "from_seq": first, "to_seq": last}))
                rows = DECODE[encoding](found)
                head = rows[0]["seq"] if encoding == "sdk" else rows[0][0]
                if len(rows) != last - first + 1 or head != first:
                    raise RuntimeError(f"engine read of {first}..{last} returned {len(rows)} rows")
                read += len(rows)
        reads = _rate(read, started, cpu)
    finally:
        await db.close()
    return inserts, reads, rss_per_event_kb


async def ceilings(folder: Path, events: int, batch: int, read_passes: int) -> EngineCeilings:
    """Events/s inserting `batch` per transaction, and reading the run back in seq order."""
    variants: dict[str, tuple[Rate, Rate]] = {}
    rss: dict[str, float] = {}
    for encoding in ("sdk", "json", "cbor", "rows"):
        inserts, reads, rss[encoding] = await _measure(
            folder / f"engine-{encoding}", encoding, events, batch, read_passes
        )
        variants[encoding] = (inserts, reads)
    insert_via = max(variants, key=lambda encoding: variants[encoding][0].per_second)
    read_via = max(variants, key=lambda encoding: variants[encoding][1].per_second)
    checkpointed, _, _ = await _measure(
        folder / "engine-checkpointed", "rows", events, batch, 0, checkpoint_bytes=Settings().checkpoint_wal_mb << 20
    )
    return EngineCeilings(
        variants[insert_via][0], variants[read_via][1], insert_via, read_via, variants, rss, checkpointed
    )


# The layouts differ only by which secondary indexes exist: the seed's on run_events too
# (`--seed-indexes`), the daemon's default (none on run_events), and none on the run row either.
LAYOUTS = ("seed indexes", "no event index", "no secondary index")
SINGLE = INSERT["rows"]


@dataclass(frozen=True, slots=True)
class LayoutCeilings:
    """One index layout: one-event transactions one at a time, and bulk inserts by events per transaction."""

    single: Rate  # latencies of one-event transactions, sequential
    bulk: dict[int, Rate]  # events per transaction -> rate
    # One-event transactions with the engine left idle `pace` seconds before each (the daemon's layout
    # only): an agent's appends reach the engine only after the wire's round trip, and an engine woken
    # from idle answers slower than one called back to back.
    paced: Rate | None = None


async def _drop_indexes(db: Database, table: str, keep: tuple[str, ...] = ()) -> None:
    [info] = await db.query(f"INFO FOR TABLE {table};")
    names = [name for name in info["indexes"] if name not in keep]
    if names:
        await db.query("".join(f"REMOVE INDEX {name} ON TABLE {table};" for name in names))


@contextlib.asynccontextmanager
async def _database(folder: Path, layout: str, run_ids: list[str]) -> AsyncIterator[Database]:
    """A fresh durable database with `layout`'s indexes and the runs `run_ids`."""
    url = f"surrealkv://{folder}"
    connection = AsyncSurreal(url)
    await connection.connect()
    db = Database(connection, url, 60.0)
    try:
        await connection.use("aivcs", "ledger")
        await init_schema(db, seed_indexes=layout == "seed indexes")
        if layout == "no secondary index":
            await _drop_indexes(db, "runs")
        for run_id in run_ids:
            await create_run(db, run_record(run_id, agent=workload.AGENT, spec=workload.SPEC_DIGEST))
        yield db
    finally:
        await db.close()


async def _bulk(db: Database, run_id: str, events: int, size: int, pace: float = 0.0) -> Rate:
    """`events` inserted `size` per transaction, each transaction `pace` seconds after the previous answer."""
    batches = _batches("rows", events, size, run_id)
    latencies = []
    started, cpu = time.perf_counter(), time.process_time()
    for variables in batches:
        if pace:
            await asyncio.sleep(pace)
        sent = time.perf_counter()
        _check(await db.send(SINGLE, variables))
        latencies.append(time.perf_counter() - sent)
    rate = _rate(events, started, cpu)
    rate.latencies = latencies
    return rate


async def _layout(
    folder: Path, layout: str, single_calls: int, bulk_events: int, sizes: tuple[int, ...], pace: float | None
) -> LayoutCeilings:
    runs = [f"{RUN_ID}-single", f"{RUN_ID}-paced", *(f"{RUN_ID}-{size}" for size in sizes)]
    async with _database(folder, layout, runs) as db:
        single = await _bulk(db, runs[0], single_calls, 1)
        paced = None if pace is None else await _bulk(db, runs[1], single_calls, 1, pace)
        bulk = {size: await _bulk(db, run_id, bulk_events, size) for size, run_id in zip(sizes, runs[2:], strict=True)}
    return LayoutCeilings(single, bulk, paced)


async def daemon_layout_bulk(folder: Path, events: int, size: int) -> Rate:
    """The daemon's append transaction alone (LAYOUTS[1], rows as it sends them), `size` events each, on a
    fresh durable database: what no server on this engine can beat for one sequential writer."""
    async with _database(folder, LAYOUTS[1], [RUN_ID]) as db:
        return await _bulk(db, RUN_ID, events, size)


async def layouts(
    folder: Path, single_calls: int, bulk_events: int, sizes: tuple[int, ...], pace: float
) -> dict[str, LayoutCeilings]:
    """Each layout of LAYOUTS on a fresh durable database: one-event transactions, and bulk inserts;
    for the daemon's layout (LAYOUTS[1]) also one-event transactions paced `pace` seconds apart."""
    return {
        layout: await _layout(
            folder / f"layout-{index}", layout, single_calls, bulk_events, sizes, pace if index == 1 else None
        )
        for index, layout in enumerate(LAYOUTS)
    }
