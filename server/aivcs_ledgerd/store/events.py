"""SurrealQL for events: the append transaction, idempotency keys, range reads.

An event is the record `run_events:[run_id, seq]`: a duplicate seq cannot be
stored, and the events of a run from seq a to b are one record-id range scan.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import cbor2

from aivcs_ledgerd.model import Event, RunStatus
from aivcs_ledgerd.store.database import Database, Exclusive, Queries
from aivcs_ledgerd.store.leases import FENCE_CHECK, FENCE_RENEW, Fence
from aivcs_ledgerd.store.values import json_to_surreal
from aivcs_ledgerd.store.wire import Native, datetime_ns, native_datetime_ns

MAX_SEQ = 2**63 - 1  # SurrealDB's largest integer


@dataclass(frozen=True, slots=True)
class RunHead:
    """What an append must know about its run: state, last seq, chain head, inactivity timeout."""

    status: RunStatus
    last_seq: int
    events_digest: str
    inactivity_timeout_ms: int = 0  # fixed at creation, so a cached head never has it stale


@dataclass(frozen=True, slots=True)
class StoredAppend:
    """An idempotency key's record: the seqs its batch got."""

    first_seq: int
    last_seq: int
    fingerprint: str


async def run_head(db: Queries, run_id: str) -> RunHead | None:
    [row] = await db.query(
        "SELECT status, total_events, events_digest, inactivity_timeout_ms FROM ONLY type::record('runs', $run_id);",
        {"run_id": run_id},
    )
    if row is None:
        return None
    return RunHead(
        RunStatus(row["status"]),
        row["total_events"],
        row.get("events_digest", ""),
        row.get("inactivity_timeout_ms") or 0,
    )


async def find_appends(db: Queries, run_id: str, keys: list[str]) -> dict[str, StoredAppend]:
    """The stored appends among `keys` for this run, by key.

    The keys travel as one cbor2 byte string: through a remote server's SDK
    connection, its Python encoder cost more than the lookup for a group of many keyed batches.
    """
    [rows] = await db.query(
        "SELECT key, first_seq, last_seq, fingerprint FROM "
        "encoding::cbor::decode($keys).map(|$k| type::record('run_appends', [$run_id, $k]));",
        {"run_id": run_id, "keys": cbor2.dumps(keys)},
    )
    return {row["key"]: StoredAppend(row["first_seq"], row["last_seq"], row["fingerprint"]) for row in rows}


def event_records(run_id: str, events: list[Event]) -> list[dict[str, Any]]:
    """The stored records of `events`, for INSERT_ROWS: the one shape of an event in the database.

    Sent as values (through store/wire.py's C codec when the engine is embedded), not built by the
    engine from a byte string, which it does more slowly. A payload's JSON nulls go as NULL, so they
    are kept (store/values.py); the timestamp is a datetime to the nanosecond.
    """
    return _records(run_id, events, json_to_surreal, datetime_ns)


def event_rows(run_id: str, events: list[Event]) -> Native:
    """event_records(run_id, events) as a wire.Native: built in cbor2's types, sent unwalked.

    The payloads must be as canonical_json accepted them (every appended event's is: ledger/events.py
    refuses the rest): objects with str keys of JSON values, integers below 2**53. Then cbor2's bytes
    for them are the SDK's for event_records' (a JSON null is NULL either way); tests/test_wire.py
    holds the two forms equal.
    """
    return Native(_records(run_id, events, _as_is, native_datetime_ns), lambda: event_records(run_id, events))


def _as_is(payload: Any) -> Any:
    return payload


def _records(
    run_id: str, events: list[Event], payload: Callable[[Any], Any], timestamp: Callable[[int], Any]
) -> list[dict[str, Any]]:
    return [
        {
            "id": [run_id, event.seq],  # the record run_events:[run_id, seq]
            "run_id": run_id,
            "seq": event.seq,
            "kind": event.kind,
            "payload": payload(event.payload),
            "timestamp": timestamp(event.timestamp_ns),
            "timestamp_ns": event.timestamp_ns,
            "digest": event.digest,
        }
        for event in events
    ]


# Every writer of events inserts their records so: appends, and a restore's staging.
INSERT_ROWS = "INSERT INTO run_events $rows RETURN NONE;"

# The head moves only if the run is RUNNING at $base (the update's WHERE); why it did not is looked up
# only then, so an append that goes through reads the run once, in its update.
_APPEND_BODY = (
    """
    LET $moved = (UPDATE type::record('runs', $run_id) SET total_events = $last, events_digest = $digest,
        last_activity_at = time::from_nanos($now){deadline}{tokens}
        WHERE status = 'running' AND total_events = $base RETURN VALUE id);
    IF array::len($moved) = 0 {
        LET $run = (SELECT status FROM ONLY type::record('runs', $run_id));
        IF $run = NONE { THROW 'aivcs:not_found' }
        ELSE IF $run.status != 'running' { THROW 'aivcs:terminal' }
        ELSE { THROW 'aivcs:moved' };
    };
    """
    + INSERT_ROWS
    + """{keys}
"""
)
# The stored shape of an idempotency record, from $appends: CBOR of [[key, first_seq, last_seq, fingerprint], ...].
INSERT_APPENDS = """INSERT INTO run_appends encoding::cbor::decode($appends).map(|$a| {
        id: type::record('run_appends', [$run_id, $a[0]]),
        run_id: $run_id,
        key: $a[0],
        first_seq: $a[1],
        last_seq: $a[2],
        fingerprint: $a[3],
    }) RETURN NONE;"""
_KEYS = "\n    " + INSERT_APPENDS
_DEADLINE = ", inactivity_deadline_ns = $deadline"
_TOKENS = ", input_tokens = (input_tokens ?? 0) + $input_tokens, output_tokens = (output_tokens ?? 0) + $output_tokens"


def _append_sql(deadline: bool, tokens: bool, fenced: bool, keys: bool = True) -> str:
    # The head update names only the fields this append changes, and the statements are as few as the
    # append needs (the checks in the update's WHERE, no key insert without keys): each costs the
    # engine time on the run's serial path.
    body = (
        _APPEND_BODY.replace("{deadline}", _DEADLINE if deadline else "")
        .replace("{tokens}", _TOKENS if tokens else "")
        .replace("{keys}", _KEYS if keys else "")
    )
    if fenced:
        body = FENCE_CHECK + body + FENCE_RENEW
    return "BEGIN TRANSACTION;" + body + "COMMIT TRANSACTION;"


_APPENDS = {flags: _append_sql(*flags) for flags in itertools.product((False, True), repeat=4)}


async def append(
    session: Exclusive,
    run_id: str,
    base_seq: int,
    events: list[Event],
    appends: dict[str, StoredAppend],
    now_ns: int,
    inactivity_timeout_ms: int = 0,
    tokens: tuple[int, int] = (0, 0),
    fence: Fence | None = None,
) -> None:
    """Write `events` (seqs base_seq+1 ...) and their idempotency keys atomically.

    The same statement that advances the run's head moves its last activity
    to `now_ns`, and with a timeout its inactivity deadline: no extra round
    trip, and the sweeper's transaction, which re-checks that deadline,
    can never fail a run whose append committed first. `tokens` (input,
    output) is added to the run's input_tokens and output_tokens in that
    statement too, so the sums always match the stored events.

    `session` must hold the run's lock (`run_key`).

    The events travel as CBOR values (event_records, encoded by store/wire.py's
    C codec), never as JSON text: encoding::json::decode in SurrealDB 3.2.4
    misreads about one full-precision double in ten by an ulp, which would
    change an acknowledged payload and break its hash chain.

    The transaction re-checks that the run is RUNNING and still at
    `base_seq`, for daemons sharing a remote database; it raises
    Rejected("not_found" | "terminal" | "moved") and writes nothing when that
    does not hold. A seq or key stored meanwhile fails it with DuplicateRecord.
    With a `fence` (several replicas), it also checks that this replica still
    holds the run's lease at that epoch, else Rejected("fenced"), and renews it.
    """
    sql = _APPENDS[inactivity_timeout_ms > 0, tokens != (0, 0), fence is not None, bool(appends)]
    variables = {
        "run_id": run_id,
        "base": base_seq,
        "rows": event_rows(run_id, events),
        "last": events[-1].seq,
        "digest": events[-1].digest,
        "now": now_ns,
    }
    if tokens != (0, 0):
        variables |= {"input_tokens": tokens[0], "output_tokens": tokens[1]}
    if appends:
        variables["appends"] = cbor2.dumps(
            [[key, stored.first_seq, stored.last_seq, stored.fingerprint] for key, stored in appends.items()]
        )
    if inactivity_timeout_ms > 0:
        variables["deadline"] = now_ns + inactivity_timeout_ms * 1_000_000
    if fence is not None:
        variables |= fence.variables()
    await session.query(sql, variables)


def start_read(
    db: Database, run_id: str, from_seq: int, to_seq: int, kinds: list[str] | None = None
) -> Coroutine[Any, Any, tuple[list[Event], int]]:
    """Hand a range read to the engine now (Database.start); await the result for the events.

    Events with from_seq <= seq <= to_seq (and kind in `kinds`), ascending, and
    their size as JSON. The engine hands the rows back as one JSON text:
    decoding it with the C `json` module is faster than the SDK's CBOR decoder.
    """
    where = " WHERE kind IN $kinds" if kinds else ""
    sql = (
        "RETURN encoding::json::encode((SELECT VALUE [seq, kind, payload, timestamp_ns, digest] "
        f"FROM run_events:[$run_id, $from_seq]..=[$run_id, $to_seq]{where}));"
    )
    call = db.start(sql, {"run_id": run_id, "from_seq": from_seq, "to_seq": to_seq, "kinds": kinds or []})
    return _decoded(db, call, run_id)


async def _decoded(db: Database, call: asyncio.Future[dict[str, Any]], run_id: str) -> tuple[list[Event], int]:
    [text] = await db.answer(call)
    events = [Event(run_id, seq, kind, payload, ts, digest) for seq, kind, payload, ts, digest in json.loads(text)]
    return events, len(text)


async def first_seq_after(db: Queries, run_id: str, seq: int) -> int | None:
    """The lowest stored seq of the run above `seq`, if any."""
    [found] = await db.query(
        "SELECT VALUE seq FROM run_events:[$run_id, $first]..=[$run_id, $last] LIMIT 1;",
        {"run_id": run_id, "first": seq + 1, "last": MAX_SEQ},
    )
    return found[0] if found else None
