"""The C-codec query frames (store/wire.py) say and read exactly what the SDK's own codec does."""

from __future__ import annotations

import datetime
import decimal
from collections.abc import AsyncIterator
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from surrealdb import AsyncSurreal, Null, RecordID, SurrealError
from surrealdb.data.cbor import encode as sdk_encode

from aivcs_ledgerd.model import Event
from aivcs_ledgerd.store import wire
from aivcs_ledgerd.store.events import event_records, event_rows
from aivcs_ledgerd.store.values import json_from_surreal

I64 = st.integers(-(2**63), 2**63 - 1)
scalars = (
    st.none()
    | st.just(Null)
    | st.booleans()
    | I64
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.builds(RecordID, st.sampled_from(["runs", "run_events"]), st.text(min_size=1, max_size=8) | I64)
    | st.builds(wire.datetime_ns, st.integers(-(2**62), 2**62))
)
variables = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
        max_leaves=20,
    ),
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(variables)
def test_a_request_is_byte_for_byte_the_sdks(values: dict[str, Any]) -> None:
    frame = wire.request("RETURN $x;", values)
    assert frame is not None
    request_id = cbor2.loads(frame)["id"]
    assert frame == sdk_encode({"id": request_id, "method": "query", "params": ["RETURN $x;", values]})


# What canonical_json lets through to a stored payload: JSON values, integers below 2**53.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
stored_events = st.lists(
    st.builds(
        Event,
        st.just("run-1"),
        st.integers(1, 2**63 - 1),
        st.text(min_size=1, max_size=8),
        st.dictionaries(st.text(max_size=6), json_values, max_size=5),
        st.integers(-(2**63), 2**63 - 1),
        st.text(max_size=64),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(stored_events)
def test_event_rows_are_sent_as_the_sdk_sends_their_records(events: list[Event]) -> None:
    """The append's rows, built in cbor2's types and sent unwalked, are the bytes the SDK makes of
    event_records (and the SDK, for a remote server, gets those records)."""
    rows = event_rows("run-1", events)
    frame = wire.request("RETURN $rows;", {"rows": rows})
    assert frame is not None
    request_id = cbor2.loads(frame)["id"]
    records = event_records("run-1", events)
    assert rows.sdk() == records
    assert frame == sdk_encode({"id": request_id, "method": "query", "params": ["RETURN $rows;", {"rows": records}]})


async def test_a_native_variable_reaches_a_remote_server_in_the_sdks_types() -> None:
    """Without the C codec (a ws:// connection), the SDK is given the Native variable's SDK form."""
    sent: list[dict[str, Any]] = []

    class Remote:
        async def query_raw(self, sql: str, variables: dict[str, Any]) -> dict[str, Any]:
            sent.append(variables)
            return {"result": []}

    native = wire.Native(cbor2.CBORTag(12, [1, 2]), lambda: wire.datetime_ns(1_000_000_002))
    await wire.query_raw(Remote(), "RETURN $at;", {"at": native, "n": 1})
    assert sent == [{"at": wire.datetime_ns(1_000_000_002), "n": 1}]


@pytest.mark.parametrize(
    "value",
    [
        2**63,  # the SDK refuses it with its own message
        -(2**63) - 1,
        datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        decimal.Decimal("1.5"),
        (1, 2),
        {1, 2},
        {1: "not a str key"},
        [{"deep": datetime.timedelta(seconds=1)}],
    ],
)
def test_values_it_would_not_encode_like_the_sdk_go_through_the_sdk(value: Any) -> None:
    assert wire.request("RETURN $x;", {"x": value}) is None


@pytest.fixture
async def engine() -> AsyncIterator[Any]:
    connection = AsyncSurreal("mem://")
    await connection.connect()
    await connection.use("aivcs", "test")
    try:
        yield connection
    finally:
        await connection.close()


ANSWERS = [
    "RETURN NONE;",
    "RETURN NULL;",
    "RETURN {a: 1, b: 2.5, c: 'x', d: NULL, e: true, f: [1, NONE, NULL], g: <bytes>'ab'};",
    "RETURN d'2026-01-02T03:04:05.123456789Z';",
    "RETURN 1h30m;",
    "RETURN 1.25dec;",
    "RETURN u'0190d4a3-8f2a-7b1c-9d4e-5f6a7b8c9d0e';",
    "CREATE runs:['a', 1] SET x = 1; SELECT * FROM runs;",
    "RETURN [runs:['a', [1, 2], {x: [3]}], runs:{a: [1], b: 'x'}, runs:⟨x y⟩, {k: runs:['q', 5]}];",
    "BEGIN; LET $r = 1; IF $r = 1 { THROW 'aivcs:moved' }; COMMIT;",
    "SELECT * FROM nonsense::function();",
]


@pytest.mark.parametrize("sql", ANSWERS)
async def test_an_answer_reads_as_the_sdk_reads_it_with_null_as_none(engine: Any, sql: str) -> None:
    through_sdk = await engine.query_raw(sql, {})
    await engine.query_raw("DELETE runs;", {})
    through_wire = await wire.query_raw(engine, sql, {})
    await engine.query_raw("DELETE runs;", {})
    for answer in (through_sdk, through_wire):
        answer.pop("id")  # each request's own
        for statement in answer.get("result") or []:
            statement.pop("time", None)  # how long the engine took differs between the two runs
    assert through_wire == json_from_surreal(through_sdk)


async def test_variables_reach_the_engine_as_the_sdk_sends_them(engine: Any) -> None:
    values = {
        "none": None,
        "null": Null,
        "id": RecordID("runs", ["a", 2]),
        "list": [1, "x", b"y", None],
        "n": -(2**63),
        "at": wire.datetime_ns(1_767_323_045_000_000_006),
    }
    sql = (
        "RETURN [type::of($none), type::of($null), $id, $list, $n, type::is_none($list[3]), "
        "time::format($at, '%Y-%m-%dT%H:%M:%S%.9fZ'), type::of($at)];"
    )
    through_sdk = await engine.query_raw(sql, values)
    through_wire = await wire.query_raw(engine, sql, values)
    [sdk_statement], [wire_statement] = through_sdk["result"], through_wire["result"]
    assert wire_statement["status"] == sdk_statement["status"] == "OK"
    assert wire_statement["result"] == sdk_statement["result"]
    assert wire_statement["result"][0:2] == ["none", "null"]
    assert wire_statement["result"][6:] == ["2026-01-02T03:04:05.000000006Z", "datetime"]


@pytest.mark.parametrize(
    "frame",
    [cbor2.dumps({"result": cbor2.CBORTag(999, 1)}), b"\xff\xff"],
    ids=["a tag the SDK does not know", "not CBOR"],
)
def test_an_answer_that_does_not_decode_is_the_sdks_error(frame: bytes) -> None:
    # The store turns an SDK error into StoreUnavailable; anything else would escape as an unexpected failure.
    with pytest.raises(SurrealError):
        wire.answer(frame)
