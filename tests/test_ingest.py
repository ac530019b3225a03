"""IngestEvents against the real daemon.

Every event carries a payload token `<batch>/<index>`, so a read-back shows
exactly which batch each stored event came from: a test can tell a whole
batch from a torn one, and an acknowledged range from a misplaced one.
"""

from __future__ import annotations

import queue
import random
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2, run_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1.event_stream_pb2_grpc import EventStreamStub
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub
from google.protobuf import timestamp_pb2

from harness.daemon import DaemonProcess, assert_serving, start_daemon
from harness.data import new_run
from harness.flood import run_flood

Code = grpc.StatusCode
STREAM_TIMEOUT = 120  # seconds; a hung stream fails the test instead of the CI job


def code_number(code: grpc.StatusCode) -> int:
    """The numeric gRPC status code, as IngestError.code carries it."""
    number: int = code.value[0]
    return number


def event(token: str, kind: str = "step", **extra: Any) -> event_pb2.EventInput:
    message = event_pb2.EventInput(kind=kind)
    message.payload.update({"token": token, **extra})
    return message


@dataclass
class Batch:
    """One batch as sent, with the tokens of its events in order."""

    batch_id: int
    run_id: str
    tokens: list[str]
    expected_last_seq: int | None = None
    events: list[event_pb2.EventInput] = field(default_factory=list)
    idempotency_key: str | None = None

    def request(self) -> es.IngestEventsRequest:
        request = es.IngestEventsRequest(
            batch_id=self.batch_id, run_id=self.run_id, events=self.events or [event(t) for t in self.tokens]
        )
        if self.expected_last_seq is not None:
            request.expected_last_seq = self.expected_last_seq
        if self.idempotency_key is not None:
            request.idempotency_key = self.idempotency_key
        return request


def make_batch(batch_id: int, run_id: str, size: int, tag: str = "") -> Batch:
    return Batch(batch_id, run_id, [f"{tag}{batch_id}/{index}" for index in range(size)])


def ingest(events: EventStreamStub, batches: Sequence[Batch]) -> list[es.IngestEventsResponse]:
    return list(events.IngestEvents(iter([b.request() for b in batches]), timeout=STREAM_TIMEOUT))


def stored(events: EventStreamStub, run_id: str) -> list[tuple[int, str]]:
    """(seq, token) of every stored event of the run, as ReadEvents returns them."""
    out = []
    for chunk in events.ReadEvents(es.ReadEventsRequest(run_id=run_id), timeout=STREAM_TIMEOUT):
        out.extend((e.seq, e.payload["token"]) for e in chunk.events)
    return out


def total_events(runs: RunLedgerStub, run_id: str) -> int:
    count: int = runs.GetRun(rl.GetRunRequest(run_id=run_id)).run.total_events
    return count


def assert_ranges_hold_their_batches(
    log: list[tuple[int, int, list[str]]], stored_events: list[tuple[int, str]]
) -> None:
    """The acknowledged (first, last, tokens) partition 1..N, and each range holds exactly its batch."""
    assert [seq for seq, _ in stored_events] == list(range(1, len(stored_events) + 1))
    expected_first = 1
    for first, last, tokens in sorted(log):
        assert first == expected_first, f"gap or overlap at seq {expected_first}: next range starts at {first}"
        assert last - first + 1 == len(tokens), f"range {first}..{last} for a batch of {len(tokens)}"
        assert [token for _, token in stored_events[first - 1 : last]] == tokens
        expected_first = last + 1
    assert expected_first - 1 == len(stored_events), "stored events that no acknowledgement accounts for"


# --- one stream, many runs -------------------------------------------------------------------------------


def test_one_stream_of_10k_events_in_mixed_batches_over_three_runs(
    runs: RunLedgerStub, events: EventStreamStub
) -> None:
    rng = random.Random(4)
    run_ids = [new_run(runs, f"mixed{n}") for n in range(3)]
    batches: list[Batch] = []
    total = 0
    while total < 10_000:
        size = min(rng.randint(1, 200), 10_000 - total)
        batches.append(make_batch(1_000 + 7 * len(batches), rng.choice(run_ids), size))
        total += size
    batches[-1].batch_id = 2**64 - 1  # batch_id is a uint64 and is echoed whole
    batches[-1].tokens = [f"last/{index}" for index in range(len(batches[-1].tokens))]

    answers = ingest(events, batches)

    assert [a.batch_id for a in answers] == [b.batch_id for b in batches], "answers out of order or missing"
    assert [(a.batch_id, a.error.message) for a in answers if a.HasField("error")] == []
    for run_id in run_ids:
        mine = [(b, a) for b, a in zip(batches, answers, strict=True) if b.run_id == run_id]
        expected_first = 1
        for batch, answer in mine:
            assert (answer.first_seq, answer.last_seq) == (expected_first, expected_first + len(batch.tokens) - 1)
            expected_first = answer.last_seq + 1
        sent = [token for batch, _ in mine for token in batch.tokens]
        assert stored(events, run_id) == list(enumerate(sent, start=1))
        assert total_events(runs, run_id) == len(sent)
    assert sum(total_events(runs, r) for r in run_ids) == 10_000


# --- refused batches in the middle of a stream --------------------------------------------------------------

REPLAY = "replayed"


def test_refused_batches_get_their_error_and_the_stream_goes_on(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs, "refusals")
    finished = new_run(runs, "finished")
    events.AppendEvents(es.AppendEventsRequest(run_id=finished, events=[event("done/0"), event("done/1")]))
    runs.CompleteRun(rl.CompleteRunRequest(run_id=finished, duration_ms=1))
    unknown = f"no-such-run-{uuid.uuid4()}"

    bad_kind = make_batch(4, run_id, 3)
    bad_kind.events = [event("4/0"), event("4/1", kind=""), event("4/2")]
    bad_time = make_batch(13, run_id, 1)
    bad_time.events = [event("13/0")]
    bad_time.events[0].timestamp.CopyFrom(timestamp_pb2.Timestamp(seconds=10**12))
    key = f"key-{uuid.uuid4()}"
    sequence: list[tuple[Batch, grpc.StatusCode, str]] = [
        (make_batch(1, run_id, 5), Code.OK, ""),
        (make_batch(2, finished, 3), Code.FAILED_PRECONDITION, ""),
        (make_batch(3, run_id, 4), Code.OK, ""),
        (bad_kind, Code.INVALID_ARGUMENT, "events[1].kind"),
        (make_batch(5, run_id, 2), Code.OK, ""),
        (Batch(6, run_id, ["6/0"], expected_last_seq=999), Code.ABORTED, "expected_last_seq"),
        (Batch(7, run_id, ["7/0", "7/1"], expected_last_seq=11), Code.OK, ""),  # 5 + 4 + 2 stored so far
        (make_batch(8, unknown, 2), Code.NOT_FOUND, unknown),
        (make_batch(10, "", 1), Code.INVALID_ARGUMENT, "run_id"),
        (make_batch(11, run_id, 1_001), Code.INVALID_ARGUMENT, "events"),
        (make_batch(12, run_id, 3), Code.OK, ""),
        (bad_time, Code.INVALID_ARGUMENT, "events[0].timestamp"),
        (make_batch(14, run_id, 1), Code.OK, ""),
        (Batch(15, run_id, ["k/0", "k/1"], idempotency_key=key), Code.OK, ""),
        (Batch(16, run_id, ["k/0", "k/1"], idempotency_key=key), Code.OK, REPLAY),  # a retry: batch 15's seqs
        (Batch(17, run_id, ["other/0"], idempotency_key=key), Code.INVALID_ARGUMENT, "idempotency_key"),
        (make_batch(18, run_id, 2), Code.OK, ""),
    ]

    answers = ingest(events, [batch for batch, _, _ in sequence])

    assert [a.batch_id for a in answers] == [b.batch_id for b, _, _ in sequence]
    expected_first = 1
    kept: list[str] = []
    first_with_key: dict[str, es.IngestEventsResponse] = {}
    for (batch, code, named), answer in zip(sequence, answers, strict=True):
        if named == REPLAY:
            assert batch.idempotency_key is not None
            original = first_with_key[batch.idempotency_key]
            assert (answer.first_seq, answer.last_seq, answer.replayed) == (original.first_seq, original.last_seq, True)
        elif code is Code.OK:
            assert not answer.HasField("error"), f"batch {batch.batch_id}: {answer.error}"
            assert not answer.replayed
            if batch.idempotency_key is not None:
                first_with_key[batch.idempotency_key] = answer
            assert (answer.first_seq, answer.last_seq) == (expected_first, expected_first + len(batch.tokens) - 1)
            expected_first = answer.last_seq + 1
            kept.extend(batch.tokens)
        else:
            assert answer.HasField("error"), f"batch {batch.batch_id} should be refused with {code}"
            assert answer.error.code == code_number(code), f"batch {batch.batch_id}: {answer.error}"
            assert named in answer.error.message, f"batch {batch.batch_id}: {answer.error.message!r}"
            assert (answer.first_seq, answer.last_seq, answer.replayed) == (0, 0, False)
    assert stored(events, run_id) == list(enumerate(kept, start=1))
    assert stored(events, finished) == [(1, "done/0"), (2, "done/1")]
    assert total_events(runs, finished) == 2
    with pytest.raises(grpc.RpcError) as info:
        runs.GetRun(rl.GetRunRequest(run_id=unknown))
    assert info.value.code() == Code.NOT_FOUND


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_payload_number_is_invalid_argument_naming_the_field(
    runs: RunLedgerStub, events: EventStreamStub, bad: float
) -> None:
    run_id = new_run(runs, "non-finite")
    refused = make_batch(2, run_id, 2)
    refused.events = [event("2/0"), event("2/1", score={"deep": [1, bad]})]
    answers = ingest(events, [make_batch(1, run_id, 2), refused, make_batch(3, run_id, 2)])

    assert [a.batch_id for a in answers] == [1, 2, 3]
    assert answers[1].error.code == code_number(Code.INVALID_ARGUMENT), answers[1].error
    assert "events[1].payload" in answers[1].error.message, answers[1].error
    assert [(a.first_seq, a.last_seq) for a in (answers[0], answers[2])] == [(1, 2), (3, 4)]
    assert [token for _, token in stored(events, run_id)] == ["1/0", "1/1", "3/0", "3/1"]


def test_pipelined_batches_may_each_expect_the_seq_their_predecessors_leave(
    runs: RunLedgerStub, events: EventStreamStub
) -> None:
    """A client that sends batch n+1 before batch n is answered can still guard each with expected_last_seq."""
    run_id = new_run(runs, "expect-chain")
    rng = random.Random(11)
    batches, last = [], 0
    for n in range(150):
        size = rng.randint(1, 30)
        wrong = n == 70
        expected = last + 1 if wrong else last
        batches.append(Batch(n, run_id, [f"{n}/{i}" for i in range(size)], expected_last_seq=expected))
        if not wrong:
            last += size
    answers = ingest(events, batches)

    assert [a.error.code for a in answers if a.HasField("error")] == [code_number(Code.ABORTED)]
    assert answers[70].HasField("error")
    kept = [token for n, batch in enumerate(batches) if n != 70 for token in batch.tokens]
    assert stored(events, run_id) == list(enumerate(kept, start=1))


def test_run_finished_mid_stream_refuses_the_later_batches_and_the_stream_goes_on(
    runs: RunLedgerStub, events: EventStreamStub
) -> None:
    run_id = new_run(runs, "finished-mid-stream")
    other = new_run(runs, "bystander")
    feed: queue.Queue[es.IngestEventsRequest | None] = queue.Queue()

    def requests() -> Iterator[es.IngestEventsRequest]:
        while (request := feed.get()) is not None:
            yield request

    answers = events.IngestEvents(requests(), timeout=STREAM_TIMEOUT)

    def send(batch: Batch) -> es.IngestEventsResponse:
        feed.put(batch.request())
        answer: es.IngestEventsResponse = next(answers)
        assert answer.batch_id == batch.batch_id
        return answer

    for n in range(5):  # the run's writer now knows the run as RUNNING at seq 10 n
        assert (send(make_batch(n, run_id, 10)).last_seq, n) == (10 * n + 10, n)
    runs.CompleteRun(rl.CompleteRunRequest(run_id=run_id, duration_ms=1, expected_total_events=50), timeout=30)
    late = send(make_batch(5, run_id, 10))
    bystander = send(make_batch(6, other, 3))
    later = send(make_batch(7, run_id, 1))
    feed.put(None)
    assert list(answers) == []

    for refused in (late, later):
        assert refused.error.code == code_number(Code.FAILED_PRECONDITION), refused
    assert (bystander.first_seq, bystander.last_seq, bystander.HasField("error")) == (1, 3, False)
    assert [token for _, token in stored(events, run_id)] == [f"{n}/{i}" for n in range(5) for i in range(10)]
    run = runs.GetRun(rl.GetRunRequest(run_id=run_id)).run
    assert (run.status, run.total_events) == (run_pb2.RUN_STATUS_COMPLETED, 50)


# --- several streams and unary appends on one run ------------------------------------------------------------


def test_streams_and_unary_appends_share_the_run_writer(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs, "shared")
    rng = random.Random(7)
    streams = [[make_batch(n, run_id, rng.randint(1, 60), tag=f"s{s}-") for n in range(40)] for s in range(3)]
    unary = [[make_batch(n, run_id, rng.randint(1, 20), tag=f"u{u}-") for n in range(40)] for u in range(2)]
    start = threading.Barrier(len(streams) + len(unary))
    log: list[tuple[int, int, list[str]]] = []  # (first, last, tokens) of every acknowledged batch
    per_source: list[list[int]] = []  # first seqs, in the order each source sent its batches
    failures: list[BaseException] = []
    lock = threading.Lock()

    def record(batch: Batch, first: int, last: int, firsts: list[int]) -> None:
        with lock:
            log.append((first, last, batch.tokens))
        firsts.append(first)

    def stream_writer(batches: list[Batch]) -> None:
        firsts: list[int] = []
        try:
            requests = [b.request() for b in batches]
            start.wait()
            answers = list(events.IngestEvents(iter(requests), timeout=STREAM_TIMEOUT))
            assert [a.batch_id for a in answers] == [b.batch_id for b in batches]
            for batch, answer in zip(batches, answers, strict=True):
                assert not answer.HasField("error"), answer.error
                record(batch, answer.first_seq, answer.last_seq, firsts)
        except BaseException as error:
            failures.append(error)
        per_source.append(firsts)

    def unary_writer(batches: list[Batch]) -> None:
        firsts: list[int] = []
        try:
            requests = [es.AppendEventsRequest(run_id=run_id, events=b.request().events) for b in batches]
            start.wait()
            for batch, request in zip(batches, requests, strict=True):
                answer = events.AppendEvents(request, timeout=STREAM_TIMEOUT)
                record(batch, answer.first_seq, answer.last_seq, firsts)
        except BaseException as error:
            failures.append(error)
        per_source.append(firsts)

    threads = [threading.Thread(target=stream_writer, args=(b,)) for b in streams]
    threads += [threading.Thread(target=unary_writer, args=(b,)) for b in unary]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STREAM_TIMEOUT)
    assert not failures, failures
    assert len(log) == sum(len(b) for b in streams + unary)

    assert_ranges_hold_their_batches(log, stored(events, run_id))
    for firsts in per_source:  # one stream's (or caller's) batches are stored in the order sent
        assert firsts == sorted(firsts)
    assert total_events(runs, run_id) == sum(len(t) for _, _, t in log)


# --- a client that goes away mid-stream ---------------------------------------------------------------------


@pytest.mark.parametrize("cut_after", [1, 37, 150])
def test_cancelled_stream_keeps_every_acknowledged_batch_and_tears_none(
    daemon: DaemonProcess, runs: RunLedgerStub, events: EventStreamStub, cut_after: int
) -> None:
    run_id = new_run(runs, f"cut{cut_after}")
    rng = random.Random(cut_after)
    sent: list[Batch] = []

    def requests() -> Iterator[es.IngestEventsRequest]:
        """More batches than the stream can take before the cut: the client is still sending when it cancels."""
        for batch_id in range(1_000_000):
            batch = make_batch(batch_id, run_id, rng.randint(1, 120))
            sent.append(batch)
            yield batch.request()

    call = events.IngestEvents(requests(), timeout=STREAM_TIMEOUT)
    acked: list[tuple[int, int, list[str]]] = []
    with pytest.raises(grpc.RpcError) as info:
        for answer in call:
            assert not answer.HasField("error"), answer.error
            assert answer.batch_id == len(acked)
            acked.append((answer.first_seq, answer.last_seq, sent[answer.batch_id].tokens))
            if len(acked) == cut_after:
                call.cancel()
    assert info.value.code() == Code.CANCELLED
    assert len(acked) == cut_after

    # A later append on the same run queues behind whatever the cancelled stream still had in the writer.
    marker = events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=[event("marker/0")]), timeout=30)
    assert_serving(daemon)

    after = stored(events, run_id)
    assert [seq for seq, _ in after] == list(range(1, len(after) + 1))
    assert total_events(runs, run_id) == len(after)
    assert after[marker.first_seq - 1] == (marker.first_seq, "marker/0")
    for first, last, tokens in acked:
        assert [token for _, token in after[first - 1 : last]] == tokens, f"acknowledged batch at {first} lost"
    # Unacknowledged batches may or may not have been written, but only whole, and only in the order sent.
    positions: dict[int, list[tuple[int, int]]] = {}
    for seq, token in after:
        if token != "marker/0":
            batch_id, index = map(int, token.split("/"))
            positions.setdefault(batch_id, []).append((seq, index))
    for batch_id, places in positions.items():
        size = len(sent[batch_id].tokens)
        first_seq = places[0][0]
        assert places == [(first_seq + i, i) for i in range(size)], f"batch {batch_id} is torn: {places}"
    assert sorted(positions) == list(range(len(positions))), "a batch is missing but a later one is stored"
    assert len(sent) > cut_after, "no batch beyond the acknowledged ones was sent: nothing was tested"


def test_cancelled_streams_give_back_their_append_slots(daemon: DaemonProcess, runs: RunLedgerStub) -> None:
    """The daemon counts unanswered append batches per connection (1,024 by default). Each stream below is
    cancelled while ~64 batches wait for their answers (answers go in order, and batch 1 is slow to commit);
    a subscription keeps the connection busy throughout. If a cancelled stream kept its slots, 20 of them
    would use up the connection's, and it could append no more."""
    gate, rest = new_run(runs, "slots-gate"), new_run(runs, "slots-rest")
    with daemon.channel() as channel:  # one connection for every call below
        stub = EventStreamStub(channel)
        watch = stub.SubscribeEvents(es.SubscribeEventsRequest(run_id=gate), timeout=STREAM_TIMEOUT)
        for cycle in range(20):
            batches = [make_batch(0, gate, 1, tag=f"c{cycle}-"), make_batch(1, gate, 400, tag=f"c{cycle}-")]
            batches += [make_batch(n, rest, 1, tag=f"c{cycle}-") for n in range(2, 100)]
            call = stub.IngestEvents(iter([b.request() for b in batches]), timeout=30)
            assert not next(call).HasField("error")
            call.cancel()
        single = stub.AppendEvents(es.AppendEventsRequest(run_id=rest, events=[event("after/0")]), timeout=30)
        answers = list(
            stub.IngestEvents(iter([make_batch(n, rest, 1, tag="after-").request() for n in range(300)]), timeout=30)
        )
        watch.cancel()
    assert [a.last_seq - a.first_seq for a in answers] == [0] * 300
    assert answers[0].first_seq > single.last_seq
    assert_serving(daemon)


# --- flow control: a flood must not grow the daemon's memory without bound ----------------------------------


def test_flood_through_one_stream_keeps_daemon_memory_bounded(tmp_path: Path) -> None:
    """A scaled-down bench/flood_memory.py: 20,000 events of ~1 KB, 10 per batch, as fast as gRPC lets us.

    The daemon's RSS grows here by ~70 MB, nearly all of it the embedded
    engine's own growth with the stored data; 150 MB leaves room for that
    and for a noisy machine. A daemon that read the stream ahead of its
    commits without bound, or kept what it had answered, would hold the
    flood itself (20 MB on the wire, several times that as Python objects).
    """
    db = f"surrealkv://{tmp_path / 'data'}"
    daemon = start_daemon(tmp_path, db=db)
    try:
        result = run_flood(daemon, db, events=20_000, batch=10, payload_bytes=1_000)
        assert_serving(daemon)
    finally:
        code = daemon.stop()
    assert result.stored_events == 20_000
    assert result.rss_growth_mb < 150, f"daemon RSS grew {result.rss_growth_mb} MB: {result.samples}"
    assert code == 0, daemon.log()
