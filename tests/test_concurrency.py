"""Many writers on one run: seqs stay 1..N, and every acknowledged batch is stored where its answer says.

Each event carries its writer's token ({"writer": w, "batch": b, "i": i}), so reading the run back
shows not only that the seqs are contiguous but that no acknowledged batch was lost, moved,
interleaved with another or overwritten (docs/architecture.md, hazard 2).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2, event_stream_pb2_grpc, run_ledger_pb2_grpc
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from google.protobuf import json_format

from aivcs_ledgerd.ledger import Ledger
from aivcs_ledgerd.ledger.errors import Aborted
from aivcs_ledgerd.ledger.runs import NewRun
from aivcs_ledgerd.ledger.writer import _Room
from aivcs_ledgerd.model import Evaluation, NewEvent
from aivcs_ledgerd.store import Database, init_schema
from harness.daemon import DaemonProcess
from harness.data import SPEC


@dataclass(frozen=True)
class Ack:
    """What one append was told: its seqs, and the payloads it sent, in order."""

    first_seq: int
    last_seq: int
    sent: list[dict[str, Any]]


def check_stored(stored: list[tuple[int, dict[str, Any]]], acks: list[Ack], expected_total: int) -> None:
    """Seqs are exactly 1..expected_total and each ack's range holds exactly its own payloads, in order."""
    assert [seq for seq, _ in stored] == list(range(1, expected_total + 1))
    assert sum(len(ack.sent) for ack in acks) == expected_total
    payloads = [payload for _, payload in stored]
    for ack in acks:
        assert ack.last_seq - ack.first_seq + 1 == len(ack.sent), ack
        where = f"batch acknowledged as {ack.first_seq}..{ack.last_seq}"
        assert payloads[ack.first_seq - 1 : ack.last_seq] == ack.sent, where
    covered = sorted(seq for ack in acks for seq in range(ack.first_seq, ack.last_seq + 1))
    assert covered == list(range(1, expected_total + 1)), "acknowledged ranges overlap or leave holes"


# 32 unary writers of 100 single events, and 4 batch writers of 450 events each in batches of mixed size.
UNARY_WRITERS, UNARY_EACH = 32, 100
BATCH_SIZES = [1, 7, 50, 3, 120, 19, 1, 7, 50, 3, 120, 19, 50]
BATCH_WRITERS = 4
TOTAL = UNARY_WRITERS * UNARY_EACH + BATCH_WRITERS * sum(BATCH_SIZES)


async def test_32_unary_and_4_batch_writers_on_one_run(daemon: DaemonProcess) -> None:
    assert TOTAL == 5000
    async with grpc.aio.insecure_channel(daemon.target) as channel:
        runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
        events = event_stream_pb2_grpc.EventStreamStub(channel)
        run_id = (await runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="crowd"))).run.run_id
        acks: list[Ack] = []

        async def send(sent: list[dict[str, Any]]) -> None:
            batch = []
            for payload in sent:
                item = event_pb2.EventInput(kind="e")
                item.payload.update(payload)
                batch.append(item)
            answer = await events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=batch))
            acks.append(Ack(answer.first_seq, answer.last_seq, sent))

        async def unary_writer(writer: str) -> None:
            for i in range(UNARY_EACH):
                await send([{"writer": writer, "batch": i, "i": 0}])

        async def batch_writer(writer: str, rotation: int) -> None:
            sizes = BATCH_SIZES[rotation:] + BATCH_SIZES[:rotation]
            for number, size in enumerate(sizes):
                await send([{"writer": writer, "batch": number, "i": i} for i in range(size)])

        await asyncio.gather(
            *(unary_writer(f"u{w}") for w in range(UNARY_WRITERS)),
            *(batch_writer(f"b{w}", w * 3) for w in range(BATCH_WRITERS)),
        )

        stored = [
            (item.seq, json_format.MessageToDict(item.payload))
            async for message in events.ReadEvents(es.ReadEventsRequest(run_id=run_id))
            for item in message.events
        ]
        check_stored(stored, acks, TOTAL)
        assert (await runs.GetRun(rl.GetRunRequest(run_id=run_id))).run.total_events == TOTAL
        verdict = await runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id))
        assert (verdict.ok, verdict.verified_events) == (True, TOTAL)
        # Every writer's own appends were acknowledged in the order it made them.
        for writer in [f"u{w}" for w in range(UNARY_WRITERS)] + [f"b{w}" for w in range(BATCH_WRITERS)]:
            mine = [ack.first_seq for ack in acks if ack.sent[0]["writer"] == writer]
            assert mine == sorted(mine)


async def test_concurrent_streams_and_unary_writers_share_one_sequence(daemon: DaemonProcess) -> None:
    """IngestEvents streams and AppendEvents callers on one run also leave no gap and lose nothing."""
    async with grpc.aio.insecure_channel(daemon.target) as channel:
        runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
        events = event_stream_pb2_grpc.EventStreamStub(channel)
        run_id = (await runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="streams"))).run.run_id
        acks: list[Ack] = []

        def batch_of(sent: list[dict[str, Any]]) -> list[event_pb2.EventInput]:
            batch = []
            for payload in sent:
                item = event_pb2.EventInput(kind="e")
                item.payload.update(payload)
                batch.append(item)
            return batch

        async def streamer(writer: str) -> None:
            plans = {n: [{"writer": writer, "batch": n, "i": i} for i in range(1 + n % 9)] for n in range(60)}
            requests = (
                es.IngestEventsRequest(batch_id=n, run_id=run_id, events=batch_of(sent)) for n, sent in plans.items()
            )
            expected_ids = iter(plans)
            async for answer in events.IngestEvents(requests):
                assert answer.batch_id == next(expected_ids)
                assert not answer.HasField("error"), answer.error
                acks.append(Ack(answer.first_seq, answer.last_seq, plans[answer.batch_id]))

        async def unary(writer: str) -> None:
            for n in range(40):
                sent = [{"writer": writer, "batch": n, "i": 0}]
                answer = await events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=batch_of(sent)))
                acks.append(Ack(answer.first_seq, answer.last_seq, sent))

        await asyncio.gather(*(streamer(f"s{w}") for w in range(3)), *(unary(f"u{w}") for w in range(8)))
        expected_total = 3 * sum(1 + n % 9 for n in range(60)) + 8 * 40
        stored = [
            (item.seq, json_format.MessageToDict(item.payload))
            async for message in events.ReadEvents(es.ReadEventsRequest(run_id=run_id))
            for item in message.events
        ]
        check_stored(stored, acks, expected_total)


async def test_run_queue_places_go_in_line_order() -> None:
    """The writer's places for a run's batches (ledger/writer.py `_Room`): a place handed to a waiter is
    its own until it resumes, so a batch asking meanwhile, with or without waiting, queues behind it;
    a waiter cancelled after it was handed a place passes the place on."""
    room = _Room(1)
    assert room.try_take()
    order: list[str] = []

    async def taker(name: str) -> None:
        await room.take()
        order.append(name)

    first = asyncio.create_task(taker("first"))
    await asyncio.sleep(0)  # in line
    room.give()  # handed to `first`, which has not resumed yet
    room.give()  # a second place, free
    assert not room.try_take(), "a newcomer took a place ahead of a waiter that was handed one"
    later = asyncio.create_task(taker("later"))
    await asyncio.gather(first, later)
    assert order == ["first", "later"]

    # Both places are taken again; a waiter handed a place and cancelled before it resumes passes it on.
    gone, next_in_line = asyncio.create_task(taker("gone")), asyncio.create_task(taker("next"))
    await asyncio.sleep(0)
    room.give()  # handed to `gone`
    gone.cancel()
    await next_in_line
    assert order == ["first", "later", "next"] and gone.cancelled()
    assert not room.try_take()  # one place is `next`'s, the other still the first taker's


# More streams on one run than its writer queues (256 unanswered batches; each stream reads 64 ahead).
CROWD_STREAMS, CROWD_BATCHES = 6, 150


async def test_streams_crowding_one_run_keep_their_order_when_its_queue_is_full(daemon: DaemonProcess) -> None:
    """Six streams keep more batches unanswered on one run than its queue holds, so some batches wait for
    room (in tasks) while others are queued as they are read. Each stream's batches still get seqs in
    the order it sent them, and together they leave no gap."""
    async with grpc.aio.insecure_channel(daemon.target) as channel:
        runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
        events = event_stream_pb2_grpc.EventStreamStub(channel)
        run_id = (await runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="crowd"))).run.run_id
        acks: list[Ack] = []

        async def streamer(writer: str) -> list[int]:
            def request(n: int) -> es.IngestEventsRequest:
                item = event_pb2.EventInput(kind="e")
                item.payload.update({"writer": writer, "n": n})
                return es.IngestEventsRequest(batch_id=n, run_id=run_id, events=[item])

            firsts = []
            async for answer in events.IngestEvents(request(n) for n in range(CROWD_BATCHES)):
                assert not answer.HasField("error"), answer.error
                acks.append(Ack(answer.first_seq, answer.last_seq, [{"writer": writer, "n": answer.batch_id}]))
                firsts.append(answer.first_seq)
            return firsts

        orders = await asyncio.gather(*(streamer(f"s{w}") for w in range(CROWD_STREAMS)))
        for firsts in orders:
            bad = [(i, firsts[i - 1], firsts[i]) for i in range(1, len(firsts)) if firsts[i] < firsts[i - 1]]
            assert len(firsts) == CROWD_BATCHES and not bad, bad
        stored = [
            (item.seq, json_format.MessageToDict(item.payload))
            async for message in events.ReadEvents(es.ReadEventsRequest(run_id=run_id))
            for item in message.events
        ]
        check_stored(stored, acks, CROWD_STREAMS * CROWD_BATCHES)


# --- two ledger objects sharing one database handle, in this process ------------------------------


@pytest.fixture(params=["mem", "surrealkv"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "mem://" if request.param == "mem" else f"surrealkv://{tmp_path / 'ledger-db'}"


async def test_two_ledgers_on_one_handle_share_the_sequence(db_url: str) -> None:
    db = await Database.open(db_url)
    first, second = Ledger(db), Ledger(db)
    try:
        await init_schema(db)
        run = await first.runs.create(NewRun(SPEC, "twins", None, {}, Evaluation(), f"twins-{uuid.uuid4()}"))
        acks: list[Ack] = []

        async def writer(ledger: Ledger, name: str, sizes: list[int]) -> None:
            for number, size in enumerate(sizes):
                sent = [{"writer": name, "batch": number, "i": i} for i in range(size)]
                answer = await ledger.events.append(run.run_id, [NewEvent("e", payload, None) for payload in sent])
                assert not answer.replayed
                acks.append(Ack(answer.first_seq, answer.last_seq, sent))

        sizes = [1, 5, 1, 30, 2, 1, 11, 1, 60, 3]  # 115 per writer
        await asyncio.gather(
            *(
                writer(ledger, f"{side}{w}", sizes[w % len(sizes) :] + sizes[: w % len(sizes)])
                for side, ledger in (("a", first), ("b", second))
                for w in range(8)
            )
        )
        expected_total = 16 * sum(sizes)
        for reader in (first, second):
            stored = [(e.seq, e.payload) async for window in reader.events.read(run.run_id) for e in window]
            check_stored(stored, acks, expected_total)
            assert (await reader.runs.get(run.run_id)).total_events == expected_total
            verdict = await reader.events.verify(run.run_id)
            assert (verdict.ok, verdict.verified_events) == (True, expected_total)
    finally:
        await first.close()
        await second.close()
        await db.close()


async def test_two_ledgers_with_optimistic_writers_never_both_win(db_url: str) -> None:
    """expected_last_seq through two ledgers on one handle: each seq position is won exactly once."""
    db = await Database.open(db_url)
    first, second = Ledger(db), Ledger(db)
    try:
        await init_schema(db)
        run = await first.runs.create(NewRun(SPEC, "optimists", None, {}, Evaluation(), None))
        wins: list[Ack] = []

        async def optimist(ledger: Ledger, name: str) -> None:
            while len(wins) < 40:
                head = (await ledger.runs.get(run.run_id)).total_events
                sent = [{"writer": name, "after": head, "i": i} for i in range(2)]
                try:
                    answer = await ledger.events.append(
                        run.run_id, [NewEvent("e", p, None) for p in sent], expected_last_seq=head
                    )
                except Aborted:
                    continue
                assert answer.first_seq == head + 1
                wins.append(Ack(answer.first_seq, answer.last_seq, sent))

        await asyncio.gather(
            *(optimist(ledger, f"{side}{w}") for side, ledger in (("a", first), ("b", second)) for w in range(4))
        )
        stored = [(e.seq, e.payload) async for window in first.events.read(run.run_id) for e in window]
        check_stored(stored, wins, 2 * len(wins))
        assert all(payload["after"] == seq - 1 - payload["i"] for seq, payload in stored)
    finally:
        await first.close()
        await second.close()
        await db.close()


def test_check_stored_catches_a_misplaced_batch() -> None:
    """The checker itself must fail when an acknowledged batch is not where its answer says."""
    stored = [(1, {"w": "a"}), (2, {"w": "b"}), (3, {"w": "b"})]
    check_stored(stored, [Ack(1, 1, [{"w": "a"}]), Ack(2, 3, [{"w": "b"}, {"w": "b"}])], 3)
    for wrong in (
        [Ack(1, 1, [{"w": "b"}]), Ack(2, 3, [{"w": "b"}, {"w": "b"}])],  # overwritten
        [Ack(1, 1, [{"w": "a"}]), Ack(2, 3, [{"w": "b"}, {"w": "c"}])],  # lost
        [Ack(1, 1, [{"w": "a"}]), Ack(1, 2, [{"w": "a"}, {"w": "b"}])],  # overlapping answers
    ):
        with pytest.raises(AssertionError):
            check_stored(stored, wrong, 3)
    with pytest.raises(AssertionError):
        check_stored([(1, {"w": "a"}), (3, {"w": "c"})], [Ack(1, 1, [{"w": "a"}]), Ack(3, 3, [{"w": "c"}])], 2)  # gap
