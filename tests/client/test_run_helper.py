"""The run helper completes a run on a normal exit and fails it, with the reason, on an exception."""

from __future__ import annotations

import pytest
from aivcs.ledger import AsyncClient, Client, FailedPrecondition, RunStatus

from harness.daemon import DaemonProcess
from harness.data import digest, unique


def test_normal_exit_completes_with_the_acknowledged_total(client: Client) -> None:
    agent = unique("helper")
    with client.start_run(spec_digest=digest(), agent_name=agent, tags={"suite": "client"}) as run:
        assert client.runs.get(run.run_id).status is RunStatus.RUNNING
        for index in range(1234):
            run.emit("step", {"index": index})
    assert run.run is not None and run.run.status is RunStatus.COMPLETED
    assert run.run.success
    assert run.run.total_events == 1234
    assert run.writer.acknowledged == 1234
    stored = client.runs.get(run.run_id)
    assert stored.status is RunStatus.COMPLETED and stored.total_events == 1234
    assert stored.tags == {"suite": "client"}
    assert [event.payload["index"] for event in client.events.read(run.run_id)] == list(range(1234))


def test_exception_fails_the_run_with_the_reason_and_propagates(client: Client) -> None:
    with (
        pytest.raises(ValueError, match="model returned garbage"),
        client.start_run(spec_digest=digest(), agent_name=unique("helper")) as run,
    ):
        run.emit("step", {"index": 0})
        run.emit("step", {"index": 1})
        raise ValueError("model returned garbage")
    stored = client.runs.get(run.run_id)
    assert stored.status is RunStatus.FAILED
    assert not stored.success
    assert stored.status_reason == "ValueError: model returned garbage"
    assert stored.total_events == 2  # what was emitted before the failure is kept


def test_keyboard_interrupt_cancels_the_run(client: Client) -> None:
    with pytest.raises(KeyboardInterrupt), client.start_run(spec_digest=digest(), agent_name=unique("h")) as run:
        run.emit("step")
        raise KeyboardInterrupt
    stored = client.runs.get(run.run_id)
    assert stored.status is RunStatus.CANCELLED
    assert stored.status_reason == "KeyboardInterrupt"


def test_final_state_digest_and_client_run_id(client: Client) -> None:
    run_id, final = unique("run"), digest("final")
    with client.start_run(spec_digest=digest(), agent_name=unique("h"), run_id=run_id, git_sha="abc") as run:
        run.emit("only")
        run.final_state_digest = final
    assert run.run_id == run_id
    stored = client.runs.get(run_id)
    assert stored.final_state_digest == final and stored.git_sha == "abc" and stored.total_events == 1


def test_completion_is_refused_when_someone_else_wrote_to_the_run(client: Client) -> None:
    """expected_total_events guards the completion: the helper counts only its own events."""
    with pytest.raises(FailedPrecondition), client.start_run(spec_digest=digest(), agent_name=unique("h")) as run:
        run.emit("mine")
        client.events.append(run.run_id, [("theirs", {})])
    assert client.runs.get(run.run_id).status is RunStatus.RUNNING


async def test_async_normal_exit_completes(daemon: DaemonProcess) -> None:
    async with AsyncClient(daemon.target) as client:
        async with client.start_run(spec_digest=digest(), agent_name=unique("async")) as run:
            for index in range(777):
                await run.emit("step", {"index": index})
        assert run.run is not None
        assert run.run.status is RunStatus.COMPLETED and run.run.total_events == 777
        seen = [event.payload["index"] async for event in client.events.read(run.run_id)]
        assert seen == list(range(777))


async def test_async_exception_fails_the_run(daemon: DaemonProcess) -> None:
    async with AsyncClient(daemon.target) as client:
        with pytest.raises(RuntimeError, match="tool crashed"):
            async with client.start_run(spec_digest=digest(), agent_name=unique("async")) as run:
                await run.emit("step", {"index": 0})
                raise RuntimeError("tool crashed")
        stored = await client.runs.get(run.run_id)
        assert stored.status is RunStatus.FAILED
        assert stored.status_reason == "RuntimeError: tool crashed"
        assert stored.total_events == 1
