"""Heartbeats against the real daemon's inactivity timeout: an open, quiet writer keeps its run alive."""

from __future__ import annotations

import asyncio
import time

import pytest
from aivcs.ledger import AsyncClient, Client, FailedPrecondition, NotFound, RunStatus

from harness.daemon import DaemonProcess
from harness.data import digest, unique

# The daemon sweeps about once a second; the quiet spells below last several timeouts.
TIMEOUT = 1.5


def wait_for_status(client: Client, run_id: str, status: RunStatus, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while client.runs.get(run_id).status is not status:
        assert time.monotonic() < deadline, f"run {run_id} is still {client.runs.get(run_id).status}"
        time.sleep(0.1)


def test_heartbeat_call_moves_last_activity_and_is_refused_on_an_ended_run(client: Client) -> None:
    run = client.runs.create(digest(), unique("beat"), inactivity_timeout=60)
    assert run.inactivity_timeout_ms == 60_000 and run.last_activity_at is not None
    time.sleep(0.05)
    beaten = client.runs.heartbeat(run.run_id)
    assert beaten.status is RunStatus.RUNNING
    assert beaten.last_activity_at is not None and beaten.last_activity_at > run.last_activity_at
    client.runs.cancel(run.run_id)
    with pytest.raises(FailedPrecondition):
        client.runs.heartbeat(run.run_id)
    with pytest.raises(NotFound):
        client.runs.heartbeat(unique("no-such-run"))


def test_an_open_quiet_writer_keeps_its_run_running_past_the_timeout(client: Client) -> None:
    agent = unique("quiet")
    abandoned = client.runs.create(digest(), agent, inactivity_timeout=TIMEOUT)
    with client.start_run(digest(), agent, inactivity_timeout=TIMEOUT) as session:
        session.emit("started")
        session.flush()
        time.sleep(TIMEOUT * 3.5)  # a long tool call: nothing to append
        assert client.runs.get(session.run_id).status is RunStatus.RUNNING
        assert session.writer.heartbeats >= 2
        wait_for_status(client, abandoned.run_id, RunStatus.FAILED)  # without a writer, the timeout strikes
        session.emit("finished")
    assert session.run is not None and session.run.status is RunStatus.COMPLETED
    assert session.run.total_events == 2
    assert "inactivity timeout" in client.runs.get(abandoned.run_id).status_reason


def test_a_plain_writer_learns_the_interval_and_a_run_without_timeout_gets_no_heartbeats(client: Client) -> None:
    run = client.runs.create(digest(), unique("auto"), inactivity_timeout=TIMEOUT)
    with client.events.writer(run.run_id) as writer:  # heartbeat_interval="auto": asks with a first heartbeat
        time.sleep(TIMEOUT * 3)
        assert client.runs.get(run.run_id).status is RunStatus.RUNNING
        assert writer.heartbeats >= 3
    untimed = client.runs.create(digest(), unique("auto"), inactivity_timeout=0)
    with client.events.writer(untimed.run_id) as writer:
        time.sleep(0.5)
        assert writer.heartbeats == 1  # the first one, which said the run has no timeout: no more
    with client.start_run(digest(), unique("untimed"), inactivity_timeout=0) as session:
        time.sleep(0.3)
        assert session.writer.heartbeats == 0  # start_run knows the run has none: not even one


async def test_async_writer_heartbeats_too(daemon: DaemonProcess) -> None:
    async with AsyncClient(daemon.target) as client:
        agent = unique("quiet-async")
        async with client.start_run(digest(), agent, inactivity_timeout=TIMEOUT) as session:
            await asyncio.sleep(TIMEOUT * 3.5)  # not a single emit
            assert (await client.runs.get(session.run_id)).status is RunStatus.RUNNING
            assert session.writer.heartbeats >= 2
        assert session.run is not None and session.run.status is RunStatus.COMPLETED
