"""The buffered writer: batching, backpressure, refusals, and a daemon restart mid-stream."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aivcs.ledger import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    RunStatus,
    Unavailable,
    WriterClosed,
    WriterSettings,
)

from harness.daemon import DaemonProcess, free_port, start_daemon
from harness.data import digest, unique

# A short drain on SIGTERM keeps the restart tests fast.
FAST_DRAIN = {"AIVCS_LEDGER_GRACE_PERIOD": "1"}


class Restartable:
    """A durable daemon on a fixed port, so clients reconnect to the same address."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = f"surrealkv://{tmp / 'ledger'}"
        self.port = free_port()
        self.process = self._start()
        self.restarts = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self) -> DaemonProcess:
        # --listen in `extra` comes after start_daemon's own "--listen 127.0.0.1:0" and wins.
        return start_daemon(self.tmp, db=self.db, extra=["--listen", self.target], env=FAST_DRAIN)

    def restart(self, sig: int) -> None:
        self.process.stop(sig)
        time.sleep(0.3)  # the daemon is really gone for a moment: calls fail, the writer retries
        self.process = self._start()
        self.restarts += 1

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[Restartable]:
    daemon = Restartable(tmp_path)
    yield daemon
    daemon.stop()


def check_exactly(client: Client, run_id: str, total: int) -> None:
    """Seqs 1..total, each event carrying its index, nothing missing or doubled."""
    events = list(client.events.read(run_id))
    assert len(events) == total
    for position, event in enumerate(events):
        assert event.seq == position + 1
        assert event.payload["index"] == position, f"seq {event.seq} holds index {event.payload['index']}"
    run = client.runs.get(run_id)
    assert run.total_events == total
    verification = client.runs.verify(run_id)
    assert verification.ok, verification.reason


def test_restart_mid_stream_loses_and_doubles_nothing(durable: Restartable) -> None:
    total, kill_after = 20_000, 6_000
    with Client(durable.target) as client:
        run = client.runs.create(digest(), unique("restart"))
        writer = client.events.writer(run.run_id, retry_timeout=30)
        killed_at: list[int] = []

        def kill_when_half_way() -> None:
            while writer.acknowledged < kill_after:
                time.sleep(0.005)
            killed_at.append(writer.acknowledged)
            durable.restart(signal.SIGKILL)

        killer = threading.Thread(target=kill_when_half_way)
        killer.start()
        for index in range(total):
            writer.emit("step", {"index": index})
        writer.close()
        killer.join()

        assert durable.restarts == 1
        assert kill_after <= killed_at[0] < total
        assert writer.acknowledged == total and writer.last_seq == total
        check_exactly(client, run.run_id, total)
        assert client.runs.complete(run.run_id, expected_total_events=total).status is RunStatus.COMPLETED


async def test_async_writer_survives_a_graceful_restart(durable: Restartable) -> None:
    total = 3_000
    async with AsyncClient(durable.target) as client:
        run = await client.runs.create(digest(), unique("restart-async"))
        writer = client.events.writer(run.run_id, max_batch_events=250, retry_timeout=30)
        restart: asyncio.Task[None] | None = None
        for index in range(total):
            await writer.emit("step", {"index": index})
            if index == total // 2:  # batches in flight while the daemon drains and goes away
                restart = asyncio.create_task(asyncio.to_thread(durable.restart, signal.SIGTERM))
        assert restart is not None
        await restart
        await writer.close()
        assert writer.acknowledged == total
    with Client(durable.target) as sync_client:
        check_exactly(sync_client, run.run_id, total)


def test_backpressure_bounds_the_buffer(client: Client) -> None:
    run = client.runs.create(digest(), unique("pressure"))
    with client.events.writer(run.run_id, max_batch_events=20, max_buffered_events=50, max_in_flight=1) as writer:
        peak = 0
        for index in range(600):
            writer.emit("step", {"index": index})
            peak = max(peak, writer.pending)
        assert peak <= 50
    assert writer.acknowledged == 600 and client.runs.get(run.run_id).total_events == 600


def test_linger_sends_a_partial_batch_without_flush(client: Client) -> None:
    run = client.runs.create(digest(), unique("linger"))
    writer = client.events.writer(run.run_id, max_batch_events=1000, linger=0.05)
    try:
        for index in range(3):
            writer.emit("step", {"index": index})
        deadline = time.monotonic() + 5
        while writer.acknowledged < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.acknowledged == 3
        assert client.runs.get(run.run_id).total_events == 3
    finally:
        writer.close()


def test_refused_batches_surface_as_errors(client: Client) -> None:
    writer = client.events.writer(unique("no-such-run"))
    writer.emit("step")
    with pytest.raises(NotFound):
        writer.flush()
    with pytest.raises(NotFound):
        writer.emit("again")
    writer.abort()

    run = client.runs.create(digest(), unique("terminal"))
    client.runs.cancel(run.run_id, "stopped")
    writer = client.events.writer(run.run_id)
    writer.emit("late")
    with pytest.raises(FailedPrecondition):
        writer.close()


def test_emit_after_close_is_refused(client: Client) -> None:
    run = client.runs.create(digest(), unique("closed"))
    writer = client.events.writer(run.run_id)
    writer.emit("one")
    writer.close()
    with pytest.raises(WriterClosed):
        writer.emit("two")


def test_gives_up_when_the_daemon_stays_away() -> None:
    with Client(f"127.0.0.1:{free_port()}") as client:
        writer = client.events.writer("any-run", retry_timeout=1.0)
        writer.emit("lost")
        started = time.monotonic()
        with pytest.raises(Unavailable, match="gave up"):
            writer.close()
        assert 1.0 <= time.monotonic() - started < 10


def test_close_with_a_timeout_returns_even_if_the_daemon_is_away() -> None:
    with Client(f"127.0.0.1:{free_port()}") as client:
        writer = client.events.writer("any-run", retry_timeout=60)
        writer.emit("stuck")
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            writer.close(timeout=0.5)
        assert time.monotonic() - started < 5
        with pytest.raises(WriterClosed):
            writer.emit("after")


@pytest.mark.parametrize("pause", [0.0, 0.4])
def test_idle_writer_lets_its_stream_go_and_opens_another_when_needed(client: Client, pause: float) -> None:
    run = client.runs.create(digest(), unique("idle"))
    with client.events.writer(run.run_id, idle_stream_timeout=0.2) as writer:
        writer.emit("first")
        writer.flush()
        time.sleep(pause)
        if pause:
            assert writer._call is None  # no stream pins the daemon while nothing is written
        writer.emit("second")
        writer.flush()
    assert [e.kind for e in client.events.read(run.run_id)] == ["first", "second"]


def test_settings_object_and_keyword_overrides(client: Client) -> None:
    base = WriterSettings(max_batch_events=20, max_buffered_events=50, when_full="block")
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.linger = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="max_buffered_events"):
        WriterSettings(max_batch_events=100, max_buffered_events=50)
    run = client.runs.create(digest(), unique("settings"))
    with client.events.writer(run.run_id, settings=base, max_in_flight=1) as writer:
        assert (writer._settings.max_batch_events, writer._settings.max_in_flight) == (20, 1)
        peak = 0
        for index in range(300):
            writer.emit("step", {"index": index})
            peak = max(peak, writer.pending)
        assert peak <= 50
    assert client.runs.get(run.run_id).total_events == 300
    with client.start_run(digest(), unique("settings"), writer_settings=base, linger=0.2) as session:
        assert (session.writer._settings.max_batch_events, session.writer._settings.linger) == (20, 0.2)
        session.emit("one")
    assert session.run is not None and session.run.total_events == 1
