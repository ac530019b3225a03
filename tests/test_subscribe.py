"""SubscribeEvents against the real daemon.

A subscriber must see seq from_seq, from_seq+1, ... exactly once and in
order, whether the events were stored before it came (catch-up) or arrive
while it listens (live), and its stream must end with OK once the run is
terminal. A subscriber too slow to keep up must not slow the writers, and a
subscription that ends early (cancel, deadline) must release what it held.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1.event_stream_pb2_grpc import EventStreamStub
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub

from harness import proc
from harness.daemon import DaemonProcess, assert_serving, start_daemon
from harness.data import new_run

Code = grpc.StatusCode
WAIT = 60  # seconds: the longest any single step may take before the test fails instead of hanging


def tokens(first: int, count: int) -> list[str]:
    return [f"t{seq}" for seq in range(first, first + count)]


def append(events: EventStreamStub, run_id: str, first: int, count: int, pad: str = "") -> None:
    """Append the events meant for seqs first..first+count-1 and check they got exactly those."""
    batch = []
    for token in tokens(first, count):
        message = event_pb2.EventInput(kind="step")
        message.payload.update({"token": token, **({"pad": pad} if pad else {})})
        batch.append(message)
    answer = events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=batch), timeout=WAIT)
    assert (answer.first_seq, answer.last_seq) == (first, first + count - 1)


def ingest(events: EventStreamStub, run_id: str, first: int, sizes: list[int]) -> None:
    """One IngestEvents stream of batches of `sizes`, for seqs first, first+1, ..."""
    requests = []
    seq = first
    for batch_id, size in enumerate(sizes):
        request = es.IngestEventsRequest(batch_id=batch_id, run_id=run_id)
        for token in tokens(seq, size):
            request.events.add(kind="step").payload.update({"token": token})
        requests.append(request)
        seq += size
    for answer in events.IngestEvents(iter(requests), timeout=WAIT):
        assert not answer.HasField("error"), answer.error


def read(events: EventStreamStub, run_id: str) -> list[tuple[int, str]]:
    """(seq, token) of every stored event of the run."""
    return [
        (e.seq, e.payload["token"])
        for chunk in events.ReadEvents(es.ReadEventsRequest(run_id=run_id), timeout=WAIT)
        for e in chunk.events
    ]


def complete(runs: RunLedgerStub, run_id: str) -> None:
    runs.CompleteRun(rl.CompleteRunRequest(run_id=run_id, duration_ms=1), timeout=WAIT)


class Subscriber(threading.Thread):
    """Follows one run on a thread and keeps (seq, token) of every event received.

    `delay` makes it deliberately slow: it sleeps that long after each
    message until `hurry` is set.
    """

    def __init__(
        self, events: EventStreamStub, run_id: str, from_seq: int = 0, delay: float = 0.0, timeout: float = WAIT
    ) -> None:
        super().__init__(daemon=True)
        self.request = es.SubscribeEventsRequest(run_id=run_id, from_seq=from_seq)
        self.stub, self.delay, self.timeout = events, delay, timeout
        self.received: list[tuple[int, str]] = []
        self.messages = 0
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.hurry = threading.Event()
        self.ended = False
        self._progress = threading.Condition()

    def run(self) -> None:
        call = self.stub.SubscribeEvents(self.request, timeout=self.timeout)
        try:
            for message in call:
                with self._progress:
                    self.received.extend((e.seq, e.payload["token"]) for e in message.events)
                    self.messages += 1
                    self._progress.notify_all()
                if self.delay and not self.hurry.is_set():
                    time.sleep(self.delay)  # a slow consumer, not synchronisation
            self.code = call.code()
        except grpc.RpcError as error:
            self.code, self.details = error.code(), str(error.details())
        finally:
            with self._progress:
                self.ended = True
                self._progress.notify_all()

    @property
    def last_seq(self) -> int:
        with self._progress:
            return self.received[-1][0] if self.received else 0

    def wait_for_seq(self, seq: int, timeout: float = WAIT) -> bool:
        """Until an event with this seq (or later) has arrived, or the stream ended."""
        with self._progress:
            return (
                self._progress.wait_for(lambda: (self.received and self.received[-1][0] >= seq) or self.ended, timeout)
                and bool(self.received)
                and self.received[-1][0] >= seq
            )

    def finish(self, timeout: float = WAIT) -> None:
        self.hurry.set()
        self.join(timeout)
        assert not self.is_alive(), f"subscription to {self.request.run_id} did not end"

    def assert_got(self, first: int, last: int, stored: list[tuple[int, str]] | None = None) -> None:
        """Received exactly seqs first..last, once each, in order, as stored, and the stream ended with OK.

        `stored` is (seq, token) of the run's events from seq 1; by default the tokens `append` writes.
        """
        assert self.code == Code.OK, f"stream ended with {self.code}: {self.details}"
        seqs = [seq for seq, _ in self.received]
        expected = list(range(first, last + 1))
        if seqs != expected:
            pairs = zip(seqs, expected, strict=False)
            at = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(seqs), len(expected)))
            raise AssertionError(
                f"expected seqs {first}..{last}; got {len(seqs)} events ({len(seqs) - len(set(seqs))} duplicates), "
                f"first difference at index {at}: {seqs[max(at - 2, 0) : at + 3]}"
            )
        if stored is None:
            assert [token for _, token in self.received] == tokens(first, last - first + 1)
        else:
            assert self.received == stored[first - 1 : last]


def subscribe_all(events: EventStreamStub, run_id: str, from_seq: int = 0) -> Subscriber:
    subscriber = Subscriber(events, run_id, from_seq)
    subscriber.start()
    subscriber.finish()
    return subscriber


# --- who subscribes when -----------------------------------------------------------------------------------


def test_subscribers_before_during_and_after_the_run_each_get_every_event_once(
    runs: RunLedgerStub, events: EventStreamStub
) -> None:
    run_id = new_run(runs, "timeline")
    early = Subscriber(events, run_id)
    early.start()
    middle = None
    step, steps = 150, 10
    latencies = []
    for n in range(steps):
        first = n * step + 1
        started = time.monotonic()
        append(events, run_id, first, step)
        # Lock-step with the early subscriber: each step reaches it while the run is still RUNNING.
        assert early.wait_for_seq(first + step - 1), f"live events {first}.. never reached the subscriber"
        latencies.append(time.monotonic() - started)
        if n == steps // 2:
            middle = Subscriber(events, run_id)
            middle.start()
    assert middle is not None
    total = step * steps
    assert middle.wait_for_seq(total)
    complete(runs, run_id)
    early.finish()
    middle.finish()
    late = subscribe_all(events, run_id)

    for subscriber in (early, middle, late):
        subscriber.assert_got(1, total)
    # Live delivery is a push, not the fallback re-read of storage (once a second when idle).
    assert statistics.median(latencies[1:]) < 0.5, latencies


def test_from_seq_starts_there(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs, "from-seq")
    ingest(events, run_id, 1, [40, 1, 200, 59])
    complete(runs, run_id)
    subscribe_all(events, run_id, from_seq=1).assert_got(1, 300)
    subscribe_all(events, run_id, from_seq=42).assert_got(42, 300)
    subscribe_all(events, run_id, from_seq=300).assert_got(300, 300)
    subscribe_all(events, run_id, from_seq=301).assert_got(301, 300)  # nothing left: ends OK at once


def test_from_seq_beyond_the_stored_events_waits_for_them(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs, "from-ahead")
    append(events, run_id, 1, 10)
    ahead = Subscriber(events, run_id, from_seq=15)
    ahead.start()
    append(events, run_id, 11, 3)  # 11..13: none of them for this subscriber
    append(events, run_id, 14, 10)
    assert ahead.wait_for_seq(23)
    complete(runs, run_id)
    ahead.finish()
    ahead.assert_got(15, 23)


@pytest.mark.parametrize("finish", ["complete", "fail", "cancel"])
def test_stream_ends_with_ok_whichever_way_the_run_ends(
    runs: RunLedgerStub, events: EventStreamStub, finish: str
) -> None:
    run_id = new_run(runs, f"ends-{finish}")
    subscriber = Subscriber(events, run_id)
    subscriber.start()
    append(events, run_id, 1, 25)
    assert subscriber.wait_for_seq(25)
    if finish == "complete":
        complete(runs, run_id)
    elif finish == "fail":
        runs.FailRun(rl.FailRunRequest(run_id=run_id, duration_ms=1, reason="test"), timeout=WAIT)
    else:
        runs.CancelRun(rl.CancelRunRequest(run_id=run_id, duration_ms=1, reason="test"), timeout=WAIT)
    subscriber.finish()
    subscriber.assert_got(1, 25)


def test_unknown_or_missing_run_is_refused(events: EventStreamStub) -> None:
    for run_id, code in [(f"no-such-run-{uuid.uuid4()}", Code.NOT_FOUND), ("", Code.INVALID_ARGUMENT)]:
        with pytest.raises(grpc.RpcError) as info:
            list(events.SubscribeEvents(es.SubscribeEventsRequest(run_id=run_id), timeout=WAIT))
        assert info.value.code() == code, info.value.details()
        assert "run_id" in info.value.details()


def test_many_subscribers_on_one_run(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs, "crowd")
    sizes = [(n * 37) % 100 + 1 for n in range(40)]  # 1..100 events per batch, 2,020 in all
    total = sum(sizes)
    crowd = [Subscriber(events, run_id) for _ in range(20)]
    for subscriber in crowd:
        subscriber.start()
    ingest(events, run_id, 1, sizes[:20])
    latecomers = [Subscriber(events, run_id) for _ in range(10)]
    for subscriber in latecomers:
        subscriber.start()
    ingest(events, run_id, sum(sizes[:20]) + 1, sizes[20:])
    complete(runs, run_id)
    for subscriber in crowd + latecomers:
        subscriber.finish()
        subscriber.assert_got(1, total)


def test_subscriber_that_fell_behind_catches_up_as_soon_as_it_reads_again(
    daemon: DaemonProcess, runs: RunLedgerStub, events: EventStreamStub
) -> None:
    """While the client reads nothing, 200 commits arrive: more than its transport window and the daemon's
    mailbox for it hold, so the daemon must drop the live feed and go back to storage. When the client reads
    again, the rest must follow at once, not after an idle poll of storage (once a second)."""
    run_id = new_run(runs, "fell-behind")
    append(events, run_id, 1, 1)
    with grpc.insecure_channel(daemon.target, options=[("grpc.http2.bdp_probe", 0)]) as channel:
        call = EventStreamStub(channel).SubscribeEvents(es.SubscribeEventsRequest(run_id=run_id), timeout=WAIT)
        received = [e.seq for e in next(call).events]  # the subscription is live
        for first in range(2, 1_002, 5):
            append(events, run_id, first, 5, pad="x" * 1_000)  # one commit, one live notice each
        resumed = time.monotonic()
        for message in call:
            received.extend(e.seq for e in message.events)
            if received[-1] >= 1_001:
                break
        caught_up = time.monotonic() - resumed
        call.cancel()
    print(f"caught up {caught_up:.3f} s after reading again")
    assert received == list(range(1, 1_002))
    assert caught_up < 0.75, f"{caught_up:.2f} s to deliver events that were all stored when the client read again"


# --- a slow subscriber must not slow the writers -------------------------------------------------------------


@pytest.fixture(scope="module")
def durable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon on surrealkv://, whose commit cost grows linearly with batch size, for throughput figures."""
    tmp = tmp_path_factory.mktemp("durable")
    daemon = start_daemon(tmp, db=f"surrealkv://{tmp / 'data'}")
    yield daemon
    daemon.stop()


WRITERS = 4
EVENTS_PER_WRITER = 2_500
BATCH = 50
PAD = "p" * 1_000  # ~1 KB events: 10 MB a trial, more than transport buffers can hide from the daemon
SLOW_DELAY = 0.5  # seconds between the slow subscriber's reads: ~1,000 events/s at most


def writers_throughput(daemon: DaemonProcess, slow: bool) -> tuple[float, int]:
    """Events per second of 4 concurrent IngestEvents streams into one run, with or without a slow subscriber,
    and how many events the slow subscriber had read when the writers were done."""
    with (
        daemon.channel() as channel,
        grpc.insecure_channel(
            daemon.target,
            options=[("grpc.http2.bdp_probe", 0)],  # keep the subscriber's receive window small
        ) as slow_channel,
    ):
        runs, events = RunLedgerStub(channel), EventStreamStub(channel)
        run_id = new_run(runs, "slow" if slow else "baseline")
        per_writer = []
        for writer in range(WRITERS):
            requests = []
            for batch_id in range(EVENTS_PER_WRITER // BATCH):
                request = es.IngestEventsRequest(batch_id=batch_id, run_id=run_id)
                for index in range(BATCH):
                    token = f"w{writer}/{batch_id}/{index}"
                    request.events.add(kind="step").payload.update({"token": token, "pad": PAD})
                requests.append(request)
            per_writer.append(requests)
        subscriber = None
        if slow:
            subscriber = Subscriber(EventStreamStub(slow_channel), run_id, delay=SLOW_DELAY, timeout=2 * WAIT)
            subscriber.start()
        start = threading.Barrier(WRITERS + 1)
        failures: list[BaseException] = []

        def write(requests: list[es.IngestEventsRequest]) -> None:
            try:
                start.wait()
                for answer in events.IngestEvents(iter(requests), timeout=WAIT):
                    assert not answer.HasField("error"), answer.error
            except BaseException as error:
                failures.append(error)

        threads = [threading.Thread(target=write, args=(requests,)) for requests in per_writer]
        for thread in threads:
            thread.start()
        start.wait()
        started = time.monotonic()
        for thread in threads:
            thread.join(WAIT)
        seconds = time.monotonic() - started
        assert not failures, failures
        complete(runs, run_id)
        read_by_then = 0
        if subscriber is not None:
            read_by_then = subscriber.last_seq
            subscriber.finish(2 * WAIT)
            subscriber.assert_got(1, WRITERS * EVENTS_PER_WRITER, stored=read(events, run_id))
    return WRITERS * EVENTS_PER_WRITER / seconds, read_by_then


def test_slow_subscriber_does_not_slow_the_writers_and_still_gets_everything(durable: DaemonProcess) -> None:
    """Throughput on a shared 2-core machine is noisy, and noise only ever slows a trial down: so trials
    alternate, each side keeps its best, and more rounds are run (up to 4) only while the best with the
    slow subscriber is not yet within 20% of the best without. A writer that waited for the subscriber
    would be held to its pace (~1,000 events/s) however many rounds ran."""
    baseline: list[float] = []
    with_slow: list[float] = []
    read_by_then: list[int] = []
    for _round in range(4):
        baseline.append(writers_throughput(durable, slow=False)[0])
        rate, read = writers_throughput(durable, slow=True)
        with_slow.append(rate)
        read_by_then.append(read)
        if max(with_slow) >= 0.8 * max(baseline):
            break
    figures = f"events/s without: {baseline}, with a slow subscriber: {with_slow}"
    print(figures)
    assert max(with_slow) >= 0.8 * max(baseline), figures
    total = WRITERS * EVENTS_PER_WRITER
    assert min(read_by_then) < 0.9 * total, f"the subscriber kept up ({read_by_then} of {total}): nothing was tested"


def test_stalled_subscribers_do_not_make_the_daemon_hold_their_whole_read_window(durable: DaemonProcess) -> None:
    """150 events of 500 KB (75 MB). Four subscribers each read one message and stop: the daemon must hold
    no more than a few MB for each (a daemon reading storage ~1 MB ahead grows ~30 MB for all four), not a
    window of tens of events (32 MB each at 64 events) or the whole run."""
    with durable.channel() as channel:
        runs, events = RunLedgerStub(channel), EventStreamStub(channel)
        run_id = new_run(runs, "stalled")
        pad = "y" * 500_000
        for first in range(1, 151, 2):
            append(events, run_id, first, 2, pad=pad)
        assert len(read(events, run_id)) == 150  # the engine's caches are warm before measuring
        pid = durable.process.pid
        before = rss_mib(pid)
        stalled = []
        for _ in range(4):
            slow_channel = grpc.insecure_channel(durable.target, options=[("grpc.http2.bdp_probe", 0)])
            call = EventStreamStub(slow_channel).SubscribeEvents(es.SubscribeEventsRequest(run_id=run_id), timeout=WAIT)
            assert next(call).events[0].seq == 1  # and then it reads nothing more
            stalled.append((slow_channel, call))
        grown = rss_mib(pid) - before
        print(f"daemon RSS grew {grown:.0f} MB for 4 stalled subscribers")
        for slow_channel, call in stalled:
            call.cancel()
            slow_channel.close()
        assert_serving(durable)
    assert grown < 100, f"the daemon grew {grown:.0f} MB for 4 subscribers that stopped reading"


# --- deadlines and cancellation ------------------------------------------------------------------------------


def test_subscription_past_its_deadline_ends_with_deadline_exceeded(
    daemon: DaemonProcess, runs: RunLedgerStub, events: EventStreamStub
) -> None:
    run_id = new_run(runs, "deadline")
    append(events, run_id, 1, 50)
    started = time.monotonic()
    short = Subscriber(events, run_id, timeout=0.5)
    short.start()
    short.finish()
    assert short.code == Code.DEADLINE_EXCEEDED, short.code
    assert time.monotonic() - started < 10
    assert [seq for seq, _ in short.received] == list(range(1, 51))  # what was there came before the deadline

    assert_serving(daemon)
    follower = Subscriber(events, run_id)
    follower.start()
    append(events, run_id, 51, 5)
    complete(runs, run_id)
    follower.finish()
    follower.assert_got(1, 55)


def open_fds(pid: int) -> int:
    return proc.open_fds(pid, count_proc=False)


def rss_mib(pid: int) -> float:
    return proc.rss_bytes(pid) / 2**20


def test_cancelled_subscriptions_are_released(
    daemon: DaemonProcess, runs: RunLedgerStub, events: EventStreamStub
) -> None:
    """Each subscription is cancelled after its first message, mid catch-up (the daemon then holds a window
    of 1,000 events of ~2 KB) or in the live wait; if the daemon kept them, memory or descriptors would grow."""
    big = new_run(runs, "release-big")
    for first in range(1, 3_001, 100):
        append(events, big, first, 100, pad="x" * 2_000)
    live = new_run(runs, "release-live")
    append(events, live, 1, 1)

    def cycles(count: int) -> None:
        for n in range(count):
            with grpc.insecure_channel(daemon.target) as channel:  # a fresh connection each time
                stub = EventStreamStub(channel)
                request = (
                    es.SubscribeEventsRequest(run_id=big)
                    if n % 2
                    else es.SubscribeEventsRequest(run_id=live, from_seq=1)
                )
                call = stub.SubscribeEvents(request, timeout=WAIT)
                first = next(call)
                assert first.events[0].seq == 1
                call.cancel()
                with pytest.raises(grpc.RpcError) as info:
                    next(call)
                assert info.value.code() == Code.CANCELLED

    pid = daemon.process.pid
    cycles(20)  # warm up: allocator arenas, gRPC's per-connection buffers
    fds, rss = open_fds(pid), rss_mib(pid)
    cycles(100)
    assert_serving(daemon)
    figures = f"descriptors {fds} -> {open_fds(pid)}, RSS {rss:.0f} -> {rss_mib(pid):.0f} MB"
    print(f"after 100 cancelled subscriptions: {figures}")
    assert open_fds(pid) - fds <= 10, figures
    assert rss_mib(pid) - rss < 50, figures

    # Both runs are still followable to the end.
    complete(runs, live)
    subscribe_all(events, live).assert_got(1, 1)


def test_a_cancelled_subscription_is_recorded_as_cancelled_not_unknown(
    daemon: DaemonProcess, runs: RunLedgerStub, events: EventStreamStub
) -> None:
    """The client cancels while the daemon waits to send it more (a catch-up of ~2 MB): the daemon's call log
    and metrics must see a cancellation (not logged), never UNKNOWN, the status no call may end with."""
    run_id = new_run(runs, "cancel-recorded")
    for first in range(1, 1_001, 100):
        append(events, run_id, first, 100, pad="x" * 2_000)
    for _ in range(10):
        with grpc.insecure_channel(daemon.target) as channel:
            call = EventStreamStub(channel).SubscribeEvents(es.SubscribeEventsRequest(run_id=run_id), timeout=WAIT)
            assert next(call).events[0].seq == 1
            call.cancel()
    assert_serving(daemon)  # and by now the daemon has finished with the cancelled calls
    recorded = [line for line in daemon.log().splitlines() if run_id in line]
    assert not [line for line in recorded if "UNKNOWN" in line], recorded[:3]
