"""The buffered writer while the ledger is down: rate-limited retry logs, and the non-blocking mode."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aivcs.ledger import AsyncClient, Client, Unavailable

from harness.daemon import DaemonProcess, free_port, start_daemon
from harness.data import digest, unique

WRITER_LOG = "aivcs.ledger.writer"


class LateDaemon:
    """A port nobody listens on, until `start()` puts a daemon there."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.target = f"127.0.0.1:{free_port()}"
        self.process: DaemonProcess | None = None

    def start(self, run_id: str) -> None:
        """Start the daemon and create the run the writer has been waiting to write to."""
        self.process = start_daemon(self.tmp, extra=["--listen", self.target])
        # gRPC shares connections between channels; this one must not wait out the writer's reconnect backoff
        with Client(self.target, options=[("grpc.use_local_subchannel_pool", 1)]) as client:
            client.runs.create(digest(), unique("agent"), run_id=run_id)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture
def late(tmp_path: Path) -> Iterator[LateDaemon]:
    daemon = LateDaemon(tmp_path)
    yield daemon
    daemon.stop()


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == WRITER_LOG and text in r.getMessage()]


def test_retries_are_logged_first_then_rate_limited_then_the_recovery(
    late: LateDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=WRITER_LOG)
    run_id = unique("outage")
    with Client(late.target) as client:
        writer = client.events.writer(run_id, retry_timeout=60, log_interval=1.0, heartbeat_interval=None)
        for index in range(5):
            writer.emit("step", {"index": index})
        deadline = time.monotonic() + 20
        while not lines(caplog, "still retrying") and time.monotonic() < deadline:
            time.sleep(0.05)
        first = lines(caplog, "cannot send events")
        assert len(first) == 1 and run_id in first[0] and "UNAVAILABLE" in first[0] and "5 events" in first[0]
        still = lines(caplog, "still retrying")
        assert still and "failed attempts" in still[0]
        assert writer._retries.failures > len(first) + len(still)  # not one line per attempt

        late.start(run_id)
        writer.close()
        assert writer.acknowledged == 5
        assert lines(caplog, "sending again after")
        assert client.runs.get(run_id).total_events == 5


def test_giving_up_is_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=WRITER_LOG)
    with Client(f"127.0.0.1:{free_port()}") as client:
        writer = client.events.writer("any-run", retry_timeout=1.0, log_interval=60, heartbeat_interval=None)
        writer.emit("lost")
        with pytest.raises(Unavailable, match="gave up"):
            writer.close()
    assert len(lines(caplog, "cannot send events")) == 1 and not lines(caplog, "still retrying")
    [gave_up] = [r for r in caplog.records if r.name == WRITER_LOG and "gave up" in r.getMessage()]
    assert gave_up.levelno == logging.ERROR and "failed attempts" in gave_up.getMessage()


def test_drop_mode_never_blocks_counts_and_warns_and_keeps_what_it_queued(
    late: LateDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=WRITER_LOG)
    run_id = unique("drop")
    with Client(late.target) as client:
        writer = client.events.writer(
            run_id,
            when_full="drop",
            max_batch_events=10,
            max_buffered_events=20,
            retry_timeout=0.5,
            log_interval=60,
            heartbeat_interval=None,
        )
        # The daemon is away: a blocking writer would wait forever at the 21st event.
        queued = [writer.emit("step", {"index": index}) for index in range(100)]
        assert queued == [True] * 20 + [False] * 80
        assert writer.dropped == 80 and writer.pending == 20
        [warning] = lines(caplog, "buffer full")
        assert "dropped 1 events (1 in all)" in warning and run_id in warning
        time.sleep(1.5)  # past retry_timeout: a dropping writer does not give up while open
        assert writer.error is None and writer.emit("late") is False and writer.dropped == 81

        late.start(run_id)
        deadline = time.monotonic() + 30
        while writer.pending and time.monotonic() < deadline:  # it delivers on its own once the daemon is back
            time.sleep(0.05)
        writer.close()
        assert writer.acknowledged == 20 and writer.dropped == 81
        assert [e.payload["index"] for e in client.events.read(run_id)] == list(range(20))
        assert lines(caplog, "closed having dropped 81 events")


def test_a_dropping_writer_gives_up_once_closed(caplog: pytest.LogCaptureFixture) -> None:
    with Client(f"127.0.0.1:{free_port()}") as client:
        writer = client.events.writer("any-run", when_full="drop", retry_timeout=0.5, heartbeat_interval=None)
        writer.emit("lost")
        time.sleep(1.0)
        assert writer.error is None
        with pytest.raises(Unavailable, match="gave up"):
            writer.close()


def test_blocking_is_the_default_and_unknown_modes_are_refused(client: Client) -> None:
    run = client.runs.create(digest(), unique("mode"))
    with client.events.writer(run.run_id) as writer:
        assert writer._settings.when_full == "block"
    with pytest.raises(ValueError, match="when_full"):
        client.events.writer(run.run_id, when_full="discard")  # type: ignore[arg-type]


async def test_async_drop_mode_and_retry_log(late: LateDaemon, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=WRITER_LOG)
    run_id = unique("drop-async")
    async with AsyncClient(late.target) as client:
        writer = client.events.writer(
            run_id,
            when_full="drop",
            max_batch_events=5,
            max_buffered_events=10,
            log_interval=60,
            heartbeat_interval=None,
        )
        queued = [await writer.emit("step", {"index": index}) for index in range(30)]
        assert queued == [True] * 10 + [False] * 20 and writer.dropped == 20
        assert len(lines(caplog, "buffer full")) == 1
        for _ in range(400):  # up to 20 s
            if lines(caplog, "cannot send events"):
                break
            await asyncio.sleep(0.05)
        assert len(lines(caplog, "cannot send events")) == 1

        await asyncio.to_thread(late.start, run_id)
        await writer.close()
        assert writer.acknowledged == 10
        assert lines(caplog, "sending again after")
