"""EventStream.AppendEvents and ReadEvents against the real daemon, and the documented hash chain."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import rfc8785
from aivcs.ledger.v1 import event_pb2, event_stream_pb2_grpc, run_ledger_pb2_grpc, run_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1.event_stream_pb2_grpc import EventStreamStub
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub
from google.protobuf import json_format, timestamp_pb2

from harness.daemon import DaemonProcess, start_daemon
from harness.data import new_run
from harness.expect import fails

Code = grpc.StatusCode
NANOS = 1_000_000_000
FOUR_MIB = 4 * 1024 * 1024


def event(kind: str = "step", payload: dict[str, Any] | None = None, at_ns: int | None = None) -> event_pb2.EventInput:
    message = event_pb2.EventInput(kind=kind)
    if payload is not None:
        message.payload.update(payload)
    if at_ns is not None:
        message.timestamp.CopyFrom(timestamp(at_ns))
    return message


def timestamp(at_ns: int) -> timestamp_pb2.Timestamp:
    seconds, nanos = divmod(at_ns, NANOS)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def append(
    events: EventStreamStub, run_id: str, batch: list[event_pb2.EventInput], **options: Any
) -> es.AppendEventsResponse:
    return events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=batch, **options))


def read(events: EventStreamStub, run_id: str, **options: Any) -> list[event_pb2.Event]:
    return [e for message in events.ReadEvents(es.ReadEventsRequest(run_id=run_id, **options)) for e in message.events]


def total(runs: RunLedgerStub, run_id: str) -> int:
    return runs.GetRun(rl.GetRunRequest(run_id=run_id)).run.total_events


def payloads(stored: list[event_pb2.Event]) -> list[dict[str, Any]]:
    return [json_format.MessageToDict(e.payload) for e in stored]


# --- appending ----------------------------------------------------------------------------------


def test_appends_get_consecutive_seqs_and_are_read_back_as_sent(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs)
    first = [
        event("a", {"i": 0, "text": "héllo ✓", "nested": {"list": [1, 2.5, True, None, "x"]}}),
        event("b", {"i": 1}),
        event("c"),
    ]
    assert (append(events, run_id, first).first_seq, append(events, run_id, first).first_seq) == (1, 4)
    single = append(events, run_id, [event("d", {"i": 3})])
    assert (single.first_seq, single.last_seq, single.replayed) == (7, 7, False)
    stored = read(events, run_id)
    assert [e.seq for e in stored] == list(range(1, 8))
    assert [e.kind for e in stored] == ["a", "b", "c", "a", "b", "c", "d"]
    assert {e.run_id for e in stored} == {run_id}
    assert payloads(stored)[:3] == [
        {"i": 0, "text": "héllo ✓", "nested": {"list": [1, 2.5, True, None, "x"]}},
        {"i": 1},
        {},
    ]
    run = runs.GetRun(rl.GetRunRequest(run_id=run_id)).run
    assert run.total_events == 7
    assert run.events_digest == stored[-1].digest


def test_client_timestamps_are_kept_to_the_nanosecond_and_unset_ones_are_server_time(
    runs: RunLedgerStub, events: EventStreamStub
) -> None:
    run_id = new_run(runs)
    given = 1_767_323_045 * NANOS + 6  # 2026-01-02T03:04:05.000000006Z
    before = time.time_ns()
    append(events, run_id, [event("given", at_ns=given), event("server"), event("server")])
    after = time.time_ns()
    stored = read(events, run_id)
    stamps = [e.timestamp.seconds * NANOS + e.timestamp.nanos for e in stored]
    assert stamps[0] == given
    assert before <= stamps[1] <= after
    assert stamps[1] == stamps[2], "events of one batch without a timestamp share the batch's acceptance time"


def test_empty_batch_is_invalid_argument(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs)
    with fails(Code.INVALID_ARGUMENT, "events"):
        append(events, run_id, [])
    assert total(runs, run_id) == 0


def test_empty_or_oversized_kind_is_invalid_argument_and_nothing_is_written(
    runs: RunLedgerStub, events: EventStreamStub
) -> None:
    run_id = new_run(runs)
    with fails(Code.INVALID_ARGUMENT, "events[1].kind"):
        append(events, run_id, [event("ok"), event(""), event("ok")])
    with fails(Code.INVALID_ARGUMENT, "events[0].kind"):
        append(events, run_id, [event("k" * 257)])
    assert total(runs, run_id) == 0
    assert append(events, run_id, [event("k" * 256)]).last_seq == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_in_payload_are_invalid_argument(
    runs: RunLedgerStub, events: EventStreamStub, bad: float
) -> None:
    run_id = new_run(runs)
    with fails(Code.INVALID_ARGUMENT, "events[1].payload"):
        append(events, run_id, [event(payload={"x": 1}), event(payload={"x": bad})])
    with fails(Code.INVALID_ARGUMENT, "events[0].payload"):
        append(events, run_id, [event(payload={"deep": {"list": [0, {"y": bad}]}})])
    assert total(runs, run_id) == 0


def test_timestamp_outside_the_protobuf_range_is_invalid_argument(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs)
    too_late = event_pb2.EventInput(kind="k", timestamp=timestamp_pb2.Timestamp(seconds=253_402_300_800))
    bad_nanos = event_pb2.EventInput(kind="k", timestamp=timestamp_pb2.Timestamp(seconds=1, nanos=-1))
    for bad in (too_late, bad_nanos):
        with fails(Code.INVALID_ARGUMENT, "events[0].timestamp"):
            append(events, run_id, [bad])
    assert total(runs, run_id) == 0


@pytest.mark.parametrize(
    "when",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(1500, 6, 1, tzinfo=UTC),
        datetime(2300, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    ],
    ids=lambda d: str(d.year),
)
def test_any_valid_protobuf_timestamp_is_stored_or_refused_by_name(
    runs: RunLedgerStub, events: EventStreamStub, when: datetime
) -> None:
    """Timestamps far from now are either kept exactly (and chained as documented) or refused as
    INVALID_ARGUMENT naming the field: never answered UNAVAILABLE, which tells a client to retry."""
    run_id = new_run(runs)
    at_ns = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000 + 123
    try:
        append(events, run_id, [event("old", {"y": when.year}, at_ns=at_ns)])
    except grpc.RpcError as error:
        assert error.code() == Code.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"  # type: ignore[attr-defined]
        assert "events[0].timestamp" in error.details()  # type: ignore[attr-defined]
        assert total(runs, run_id) == 0
        return
    [stored] = read(events, run_id)
    assert stored.timestamp == timestamp(at_ns)
    assert stored.digest == documented_digest("", stored)
    assert runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id)).ok


def test_append_to_terminal_run_is_failed_precondition(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs)
    append(events, run_id, [event()])
    runs.CancelRun(rl.CancelRunRequest(run_id=run_id))
    with fails(Code.FAILED_PRECONDITION):
        append(events, run_id, [event(), event()])
    assert total(runs, run_id) == 1
    assert len(read(events, run_id)) == 1


# --- expected_last_seq ----------------------------------------------------------------------------


def test_expected_last_seq_mismatch_is_aborted_and_writes_nothing(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs)
    with fails(Code.ABORTED, "expected_last_seq"):
        append(events, run_id, [event()], expected_last_seq=1)
    assert append(events, run_id, [event(), event(), event()], expected_last_seq=0).last_seq == 3
    for wrong in (0, 2, 4, 1000):
        with fails(Code.ABORTED, "expected_last_seq"):
            append(events, run_id, [event("late")], expected_last_seq=wrong)
    assert total(runs, run_id) == 3
    assert [e.kind for e in read(events, run_id)] == ["step"] * 3
    done = append(events, run_id, [event("next")], expected_last_seq=3)
    assert (done.first_seq, done.last_seq) == (4, 4)


def test_racing_writers_with_the_same_expected_last_seq_let_exactly_one_win(
    runs: RunLedgerStub, events: EventStreamStub
) -> None:
    run_id = new_run(runs)
    calls = [
        events.AppendEvents.future(
            es.AppendEventsRequest(run_id=run_id, events=[event(f"w{w}")] * 3, expected_last_seq=0)
        )
        for w in range(8)
    ]
    won, lost = [], []
    for writer, call in enumerate(calls):
        try:
            won.append((writer, call.result()))
        except grpc.RpcError as error:
            assert error.code() == Code.ABORTED  # type: ignore[attr-defined]
            lost.append(writer)
    assert len(won) == 1 and len(lost) == 7
    [(writer, answer)] = won
    assert (answer.first_seq, answer.last_seq) == (1, 3)
    assert [e.kind for e in read(events, run_id)] == [f"w{writer}"] * 3


# --- idempotency keys -----------------------------------------------------------------------------


def test_retry_with_same_idempotency_key_returns_original_range_and_writes_nothing(
    runs: RunLedgerStub, events: EventStreamStub
) -> None:
    run_id = new_run(runs)
    append(events, run_id, [event("before")])
    batch = [event("a", {"n": 1}), event("b", {"n": 2}, at_ns=5 * NANOS)]
    original = append(events, run_id, batch, idempotency_key="k-1")
    assert (original.first_seq, original.last_seq, original.replayed) == (2, 3, False)
    append(events, run_id, [event("after")])
    for _ in range(3):
        retry = append(events, run_id, batch, idempotency_key="k-1")
        assert (retry.first_seq, retry.last_seq, retry.replayed) == (2, 3, True)
    assert total(runs, run_id) == 4
    assert [e.kind for e in read(events, run_id)] == ["before", "a", "b", "after"]


@pytest.mark.parametrize(
    "other",
    [
        [event("a", {"n": 1})],  # fewer events
        [event("a", {"n": 1}), event("b", {"n": 3}, at_ns=5 * NANOS)],  # another payload
        [event("a", {"n": 1}), event("c", {"n": 2}, at_ns=5 * NANOS)],  # another kind
        [event("a", {"n": 1}), event("b", {"n": 2}, at_ns=6 * NANOS)],  # another timestamp
        [event("a", {"n": 1}), event("b", {"n": 2})],  # timestamp left to the server
    ],
    ids=["fewer", "payload", "kind", "timestamp", "server-time"],
)
def test_idempotency_key_reused_for_another_batch_is_invalid_argument(
    runs: RunLedgerStub, events: EventStreamStub, other: list[event_pb2.EventInput]
) -> None:
    run_id = new_run(runs)
    batch = [event("a", {"n": 1}), event("b", {"n": 2}, at_ns=5 * NANOS)]
    append(events, run_id, batch, idempotency_key="key")
    with fails(Code.INVALID_ARGUMENT, "idempotency_key"):
        append(events, run_id, other, idempotency_key="key")
    assert total(runs, run_id) == 2


def test_idempotency_keys_belong_to_one_run(runs: RunLedgerStub, events: EventStreamStub) -> None:
    first, second = new_run(runs), new_run(runs)
    append(events, first, [event(), event()], idempotency_key="shared")
    other = append(events, second, [event("x")], idempotency_key="shared")
    assert (other.first_seq, other.last_seq, other.replayed) == (1, 1, False)
    assert total(runs, second) == 1


def test_concurrent_retries_of_one_batch_write_it_once(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs)
    request = es.AppendEventsRequest(
        run_id=run_id, events=[event("e", {"i": i}) for i in range(5)], idempotency_key="retry-storm"
    )
    answers = [call.result() for call in [events.AppendEvents.future(request) for _ in range(12)]]
    assert {(a.first_seq, a.last_seq) for a in answers} == {(1, 5)}
    assert sum(not a.replayed for a in answers) == 1
    assert total(runs, run_id) == 5


def test_oversized_idempotency_key_is_invalid_argument(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs)
    with fails(Code.INVALID_ARGUMENT, "idempotency_key"):
        append(events, run_id, [event()], idempotency_key="k" * 257)
    assert total(runs, run_id) == 0


# --- limits of a daemon started with small ones ---------------------------------------------------

PAYLOAD_LIMIT = 1024
BATCH_LIMIT = 10


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunLedgerStub, EventStreamStub]]:
    daemon = start_daemon(
        tmp_path_factory.mktemp("small"),
        extra=["--max-payload-bytes", str(PAYLOAD_LIMIT), "--max-batch-events", str(BATCH_LIMIT)],
    )
    try:
        with daemon.channel() as channel:
            yield run_ledger_pb2_grpc.RunLedgerStub(channel), event_stream_pb2_grpc.EventStreamStub(channel)
    finally:
        daemon.stop()


def payload_of_size(size: int) -> dict[str, Any]:
    """A payload whose serialized Struct is exactly `size` bytes."""
    for length in range(size, 0, -1):
        message = event("k", {"blob": "x" * length})
        if message.payload.ByteSize() == size:
            return {"blob": "x" * length}
    raise AssertionError(size)


def test_payload_over_the_limit_is_invalid_argument(small: tuple[RunLedgerStub, EventStreamStub]) -> None:
    runs, events = small
    run_id = new_run(runs)
    at_limit, over = payload_of_size(PAYLOAD_LIMIT), payload_of_size(PAYLOAD_LIMIT + 1)
    with fails(Code.INVALID_ARGUMENT, "events[1].payload"):
        append(events, run_id, [event(payload=at_limit), event(payload=over)])
    assert total(runs, run_id) == 0
    assert append(events, run_id, [event(payload=at_limit)]).last_seq == 1
    assert payloads(read(events, run_id)) == [at_limit]


def test_batch_over_the_limit_is_invalid_argument(small: tuple[RunLedgerStub, EventStreamStub]) -> None:
    runs, events = small
    run_id = new_run(runs)
    with fails(Code.INVALID_ARGUMENT, "events", str(BATCH_LIMIT)):
        append(events, run_id, [event()] * (BATCH_LIMIT + 1))
    assert total(runs, run_id) == 0
    assert append(events, run_id, [event()] * BATCH_LIMIT).last_seq == BATCH_LIMIT


def test_ingest_refuses_an_oversized_batch_and_goes_on(small: tuple[RunLedgerStub, EventStreamStub]) -> None:
    runs, events = small
    run_id = new_run(runs)
    requests = [
        es.IngestEventsRequest(batch_id=1, run_id=run_id, events=[event()] * (BATCH_LIMIT + 1)),
        es.IngestEventsRequest(batch_id=2, run_id=run_id, events=[event()] * 2),
    ]
    first, second = list(events.IngestEvents(iter(requests), timeout=30))
    assert first.batch_id == 1 and first.error.code == Code.INVALID_ARGUMENT.value[0]
    assert "events" in first.error.message
    assert (second.batch_id, second.first_seq, second.last_seq) == (2, 1, 2)


# --- reading --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_run(runs: RunLedgerStub, events: EventStreamStub) -> str:
    """2,500 events with kinds a, b, c, d, e in turn and payload {"i": seq}: crosses read windows."""
    run_id = new_run(runs)
    kinds = "abcde"
    for start in range(0, 2500, 1000):
        batch = [event(kinds[i % 5], {"i": i + 1}) for i in range(start, min(start + 1000, 2500))]
        append(events, run_id, batch)
    return run_id


def seqs(stored: list[event_pb2.Event]) -> list[int]:
    return [e.seq for e in stored]


def test_read_from_zero_or_one_is_from_the_start(events: EventStreamStub, long_run: str) -> None:
    everything = read(events, long_run)
    assert seqs(everything) == list(range(1, 2501))
    assert [p["i"] for p in payloads(everything)] == list(range(1, 2501))
    assert read(events, long_run, from_seq=1) == everything
    assert read(events, long_run, from_seq=0, to_seq=0) == everything


def test_read_from_and_to_are_inclusive(events: EventStreamStub, long_run: str) -> None:
    assert seqs(read(events, long_run, from_seq=2000)) == list(range(2000, 2501))
    assert seqs(read(events, long_run, to_seq=3)) == [1, 2, 3]
    assert seqs(read(events, long_run, from_seq=999, to_seq=1001)) == [999, 1000, 1001]
    assert seqs(read(events, long_run, from_seq=1500, to_seq=1500)) == [1500]
    assert seqs(read(events, long_run, from_seq=2499, to_seq=9999)) == [2499, 2500]
    assert read(events, long_run, from_seq=2501) == []


def test_read_kinds_filter(events: EventStreamStub, long_run: str) -> None:
    only_b = read(events, long_run, kinds=["b"])
    assert seqs(only_b) == list(range(2, 2501, 5))
    assert {e.kind for e in only_b} == {"b"}
    assert seqs(read(events, long_run, kinds=["a", "e"])) == [s for s in range(1, 2501) if s % 5 in (1, 0)]
    assert read(events, long_run, kinds=["nope"]) == []
    assert seqs(read(events, long_run, kinds=["c"], from_seq=990, to_seq=1010)) == [993, 998, 1003, 1008]


def test_read_limit(events: EventStreamStub, long_run: str) -> None:
    assert seqs(read(events, long_run, limit=4)) == [1, 2, 3, 4]
    assert seqs(read(events, long_run, limit=1500, from_seq=10)) == list(range(10, 1510))
    assert seqs(read(events, long_run, limit=3, kinds=["d"], from_seq=900)) == [904, 909, 914]
    assert seqs(read(events, long_run, limit=600, kinds=["e"])) == list(range(5, 2501, 5))[:500]
    assert seqs(read(events, long_run, limit=10_000, from_seq=2498)) == [2498, 2499, 2500]


def test_read_of_a_run_without_events_is_empty(runs: RunLedgerStub, events: EventStreamStub) -> None:
    assert read(events, new_run(runs)) == []


def test_large_runs_are_read_in_chunks_under_4_mib(
    runs: RunLedgerStub, events: EventStreamStub, daemon: DaemonProcess
) -> None:
    """Six events of ~1 MB and 300 small ones, about 6 MB in all, read with gRPC's default receive limit."""
    run_id = new_run(runs)
    big = "b" * 1_000_000
    for pair in range(3):
        append(events, run_id, [event("big", {"blob": big, "n": n}) for n in (pair * 2, pair * 2 + 1)])
        append(events, run_id, [event("small", {"n": pair * 100 + i}) for i in range(100)])
    with grpc.insecure_channel(daemon.target) as default_channel:  # default limits: 4 MiB receive
        stub = event_stream_pb2_grpc.EventStreamStub(default_channel)
        messages = list(stub.ReadEvents(es.ReadEventsRequest(run_id=run_id)))
    assert sum(m.ByteSize() for m in messages) > FOUR_MIB + 1024 * 1024
    assert max(m.ByteSize() for m in messages) < FOUR_MIB
    received = [e for m in messages for e in m.events]
    assert seqs(received) == list(range(1, 307))
    bigs = [json_format.MessageToDict(e.payload) for e in received if e.kind == "big"]
    assert [b["n"] for b in bigs] == [0, 1, 2, 3, 4, 5]
    assert all(b["blob"] == big for b in bigs)


# --- the hash chain -------------------------------------------------------------------------------


def rfc3339_nanos(ts: timestamp_pb2.Timestamp) -> str:
    """RFC 3339 in UTC with exactly nine fractional digits and "Z", written out field by field."""
    day = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=ts.seconds)
    return (
        f"{day.year:04d}-{day.month:02d}-{day.day:02d}T{day.hour:02d}:{day.minute:02d}:{day.second:02d}.{ts.nanos:09d}Z"
    )


def documented_digest(prev: str, stored: event_pb2.Event) -> str:
    """Event.digest exactly as event.proto documents it."""
    document = {
        "kind": stored.kind,
        "payload": json_format.MessageToDict(stored.payload),
        "prev": prev,
        "seq": stored.seq,
        "timestamp": rfc3339_nanos(stored.timestamp),
    }
    return hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def test_event_digest_follows_the_documented_canonical_form(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs)
    append(
        events,
        run_id,
        [
            event("first", {"text": 'héllo \u2028 "quoted" ✓ 𝄞', "n": 1.5, "big": 1e21, "small": 1e-7, "neg": -3}),
            event("no-payload"),
            event(
                "nested",
                {"z": [1, {"b": False, "a": True}], "a": {"y": "", "x": [[]]}},
                at_ns=1_767_323_045 * NANOS + 6,
            ),
            event("epoch", {"k": "v"}, at_ns=0),
            event("pre-epoch", {}, at_ns=-1),
        ],
    )
    append(events, run_id, [event("second-batch", {"ints": [0, 10, 2**52]})])
    stored = read(events, run_id)
    assert len(stored) == 6
    prev = ""
    for item in stored:
        assert item.digest == documented_digest(prev, item), f"seq {item.seq}"
        prev = item.digest
    assert rfc3339_nanos(stored[2].timestamp) == "2026-01-02T03:04:05.000000006Z"
    assert rfc3339_nanos(stored[4].timestamp) == "1969-12-31T23:59:59.999999999Z"
    run = runs.GetRun(rl.GetRunRequest(run_id=run_id)).run
    assert run.events_digest == prev
    verdict = runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id))
    assert (verdict.ok, verdict.verified_events, verdict.events_digest) == (True, 6, prev)
    assert not verdict.HasField("first_broken_seq")


def test_null_values_in_payloads_are_stored_verbatim(runs: RunLedgerStub, events: EventStreamStub) -> None:
    """JSON null is a value like any other: it must come back, and the chain over it must hold."""
    run_id = new_run(runs)
    sent = [{"result": None}, {"a": {"b": None, "c": 1}}, {"list": [None, {"x": None}]}]
    append(events, run_id, [event("null", p) for p in sent])
    stored = read(events, run_id)
    assert payloads(stored) == sent
    verdict = runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id))
    assert (verdict.ok, verdict.verified_events, verdict.reason) == (True, 3, "")


def test_verify_of_a_run_without_events(runs: RunLedgerStub) -> None:
    run_id = new_run(runs)
    verdict = runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id))
    assert (verdict.ok, verdict.verified_events, verdict.events_digest, verdict.reason) == (True, 0, "", "")


def test_verify_holds_for_a_finished_run(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs)
    append(events, run_id, [event(payload={"i": i}) for i in range(20)])
    runs.CompleteRun(rl.CompleteRunRequest(run_id=run_id, expected_total_events=20))
    verdict = runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id))
    assert (verdict.ok, verdict.verified_events) == (True, 20)
    run = runs.GetRun(rl.GetRunRequest(run_id=run_id)).run
    assert run.status == run_pb2.RUN_STATUS_COMPLETED and verdict.events_digest == run.events_digest


def test_verify_holds_for_a_run_that_takes_events_meanwhile(runs: RunLedgerStub, events: EventStreamStub) -> None:
    """VerifyRun checks the run as of its head when called: appends landing meanwhile are not a break."""
    run_id = new_run(runs)
    append(events, run_id, [event(payload={"i": i, "pad": "x" * 2000}) for i in range(600)])
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            append(events, run_id, [event(payload={"more": i}) for i in range(5)])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        verdicts = [runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id)) for _ in range(15)]
    finally:
        stop.set()
        thread.join()
    assert [(v.ok, v.reason) for v in verdicts] == [(True, "")] * len(verdicts)
    counts = [v.verified_events for v in verdicts]
    assert counts == sorted(counts) and counts[-1] > counts[0] >= 600, counts
    total = runs.GetRun(rl.GetRunRequest(run_id=run_id)).run.total_events
    assert runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id)).verified_events == total
