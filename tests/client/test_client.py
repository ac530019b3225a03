"""The library over the real daemon: errors, iterators, paging, releases, and what every call carries."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest
from aivcs.ledger import (
    Aborted,
    AlreadyExists,
    AsyncClient,
    Client,
    Event,
    FailedPrecondition,
    InvalidArgument,
    LedgerError,
    NewEvent,
    NotFound,
    RunStatus,
    Unavailable,
)

from harness.daemon import DaemonProcess, free_port
from harness.data import digest, unique


def test_errors_carry_the_code_and_the_daemons_message(client: Client) -> None:
    with pytest.raises(NotFound) as missing:
        client.runs.get("no-such-run")
    assert missing.value.code is grpc.StatusCode.NOT_FOUND
    assert "no-such-run" in missing.value.message
    assert isinstance(missing.value, LedgerError)

    with pytest.raises(InvalidArgument) as bad:
        client.runs.create("not-a-digest", "agent")
    assert "spec_digest" in bad.value.message

    run = client.runs.create(digest(), unique("errors"), run_id=unique("id"))
    assert client.runs.create(run.spec_digest, run.agent_name, run_id=run.run_id).run_id == run.run_id
    with pytest.raises(AlreadyExists):
        client.runs.create(digest(), "someone-else", run_id=run.run_id)

    client.events.append(run.run_id, [("a", {})])
    with pytest.raises(Aborted):
        client.events.append(run.run_id, [("b", {})], expected_last_seq=0)
    client.runs.complete(run.run_id)
    with pytest.raises(FailedPrecondition):
        client.runs.complete(run.run_id)


def test_refusals_carry_the_facts_a_caller_acts_on(client: Client) -> None:
    run = client.runs.create(digest(), unique("facts"))
    client.events.append(run.run_id, [("a", {}), ("b", {})])
    with pytest.raises(Aborted) as stale:
        client.events.append(run.run_id, [("c", {})], expected_last_seq=0)
    assert stale.value.reason == "ERROR_REASON_LAST_SEQ_MISMATCH"
    assert (stale.value.run_id, stale.value.last_seq) == (run.run_id, 2)
    client.events.append(run.run_id, [("c", {})], expected_last_seq=stale.value.last_seq)  # the retry it allows
    client.runs.cancel(run.run_id, "stopped")
    with pytest.raises(FailedPrecondition) as terminal:
        client.events.append(run.run_id, [("d", {})])
    assert terminal.value.reason == "ERROR_REASON_RUN_TERMINAL"
    assert terminal.value.run_status is RunStatus.CANCELLED
    writer = client.events.writer(run.run_id)  # IngestEvents: the same details per batch
    writer.emit("late")
    with pytest.raises(FailedPrecondition) as refused:
        writer.close()
    assert (refused.value.reason, refused.value.run_status) == ("ERROR_REASON_RUN_TERMINAL", RunStatus.CANCELLED)
    with pytest.raises(NotFound) as missing:
        client.runs.get("no-such-run")
    assert (missing.value.reason, missing.value.run_id, missing.value.last_seq) == (
        "ERROR_REASON_RUN_NOT_FOUND",
        "no-such-run",
        None,
    )


def test_client_side_validation_refuses_what_the_daemon_would(client: Client) -> None:
    with pytest.raises(InvalidArgument, match="kind"):
        client.events.append("any", [("", {})])
    with pytest.raises(InvalidArgument, match=r"payload\.x"):
        client.events.append("any", [("k", {"x": float("nan")})])


def test_integers_beyond_2_to_the_53_are_refused_with_their_path(client: Client) -> None:
    run = client.runs.create(digest(), unique("precision"))
    tokens = [1, 2, 3, 2**53 + 1]
    with pytest.raises(InvalidArgument, match=r"payload\.usage\.tokens\[3\]: 9007199254740993 is beyond 2\*\*53"):
        client.events.append(run.run_id, [("usage", {"usage": {"tokens": tokens}})])
    with pytest.raises(InvalidArgument, match=r"tags\.budget"):
        client.runs.create(digest(), unique("precision"), tags={"budget": -(2**60)})
    writer = client.events.writer(run.run_id)
    with pytest.raises(InvalidArgument, match=r"payload\.big"):
        writer.emit("usage", {"big": 2**64})
    writer.close()
    assert client.runs.get(run.run_id).total_events == 0  # nothing was stored rounded

    # the largest exact integers still round-trip exactly
    client.events.append(run.run_id, [("usage", {"max": 2**53, "min": -(2**53)})])
    assert [e.payload for e in client.events.read(run.run_id)] == [{"max": 2**53, "min": -(2**53)}]


def test_append_is_idempotent_with_a_key(client: Client) -> None:
    run = client.runs.create(digest(), unique("idem"))
    batch = [NewEvent("a", {"n": 1}, timestamp=1_700_000_000_000_000_000), NewEvent("b", None, timestamp=1)]
    first = client.events.append(run.run_id, batch, idempotency_key="k1")
    again = client.events.append(run.run_id, batch, idempotency_key="k1")
    assert (first.first_seq, first.last_seq, first.replayed) == (1, 2, False)
    assert (again.first_seq, again.last_seq, again.replayed) == (1, 2, True)
    events = list(client.events.read(run.run_id))
    assert [e.kind for e in events] == ["a", "b"]
    assert events[0].timestamp_ns == 1_700_000_000_000_000_000
    assert events[0].payload == {"n": 1} and isinstance(events[0].payload["n"], int)


def test_read_yields_events_across_chunks_with_filters(client: Client) -> None:
    run = client.runs.create(digest(), unique("read"))
    for start in range(0, 1500, 500):
        batch = [("even" if i % 2 == 0 else "odd", {"i": i}) for i in range(start, start + 500)]
        client.events.append(run.run_id, batch)
    everything = list(client.events.read(run.run_id))
    assert [e.seq for e in everything] == list(range(1, 1501))
    assert all(isinstance(e, Event) for e in everything)
    window = list(client.events.read(run.run_id, from_seq=10, to_seq=19))
    assert [e.seq for e in window] == list(range(10, 20))
    odd = list(client.events.read(run.run_id, kinds=["odd"], limit=5))
    assert [e.payload["i"] for e in odd] == [1, 3, 5, 7, 9]
    with pytest.raises(NotFound):
        list(client.events.read("no-such-run"))


def test_subscribe_yields_stored_then_live_events_and_ends_with_the_run(client: Client) -> None:
    run = client.runs.create(digest(), unique("follow"))
    client.events.append(run.run_id, [("stored", {"i": 0}), ("stored", {"i": 1})])
    seen: list[Event] = []

    def follow() -> None:
        seen.extend(client.events.subscribe(run.run_id))

    follower = threading.Thread(target=follow)
    follower.start()
    for i in range(2, 5):
        time.sleep(0.05)
        client.events.append(run.run_id, [("live", {"i": i})])
    client.runs.complete(run.run_id, expected_total_events=5)
    follower.join(timeout=15)
    assert not follower.is_alive()
    assert [e.seq for e in seen] == [1, 2, 3, 4, 5]
    assert [e.kind for e in seen] == ["stored", "stored", "live", "live", "live"]

    partial = list(client.events.subscribe(run.run_id, from_seq=4))
    assert [e.seq for e in partial] == [4, 5]


def test_list_pages_through_runs_newest_first(client: Client) -> None:
    agent = unique("lister")
    made = [client.runs.create(digest(), agent).run_id for _ in range(7)]
    client.runs.fail(made[0], "broken")
    listed = [run.run_id for run in client.runs.list(agent_name=agent, page_size=3)]
    assert listed == made[::-1]
    assert [run.run_id for run in client.runs.list(agent_name=agent, limit=4, page_size=3)] == made[:2:-1]
    failed = list(client.runs.list(agent_name=agent, status=RunStatus.FAILED))
    assert [run.run_id for run in failed] == [made[0]]
    assert [run.run_id for run in client.runs.list(agent_name=agent, status="failed")] == [made[0]]


def test_release_helpers(client: Client) -> None:
    agent = unique("releaser")
    v1, v2 = digest("v1"), digest("v2")
    with pytest.raises(NotFound):
        client.releases.current(agent)
    assert list(client.releases.history(agent)) == []
    first = client.releases.promote(agent, v1, promoted_by="ci", version_label="v1")
    assert (first.sequence, first.spec_digest, first.version_label) == (1, v1, "v1")
    client.releases.promote(agent, v2, promoted_by="ci", notes="faster", expected_current_spec_digest=v1)
    with pytest.raises(Aborted):
        client.releases.promote(agent, v1, promoted_by="ci", expected_current_spec_digest=v1)
    back = client.releases.rollback(agent, promoted_by="oncall")
    assert back.spec_digest == v1 and back.rollback_of == 1 and back.promoted_by == "oncall"
    assert client.releases.current(agent) == back
    history = list(client.releases.history(agent, page_size=2))
    assert [r.sequence for r in history] == [3, 2, 1]
    assert [r.sequence for r in client.releases.history(agent, limit=2, page_size=1)] == [3, 2]


async def test_async_iterators_and_errors(daemon: DaemonProcess) -> None:
    async with AsyncClient(daemon.target) as client:
        run = await client.runs.create(digest(), unique("async"))
        await client.events.append(run.run_id, [("a", {"i": i}) for i in range(3)])
        assert [e.seq async for e in client.events.read(run.run_id)] == [1, 2, 3]
        await client.runs.complete(run.run_id)
        assert [e.seq async for e in client.events.subscribe(run.run_id)] == [1, 2, 3]
        assert [r.run_id async for r in client.runs.list(agent_name=run.agent_name)] == [run.run_id]
        with pytest.raises(NotFound):
            await client.runs.get("no-such-run")


def test_unreachable_daemon_is_unavailable() -> None:
    with Client(f"127.0.0.1:{free_port()}", timeout=5) as client, pytest.raises(Unavailable):
        client.runs.get("anything")


def test_token_is_sent_as_bearer_metadata(echo_server: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIVCS_LEDGER_TOKEN", raising=False)
    monkeypatch.delenv("AIVCS_LEDGER_TOKEN_FILE", raising=False)
    with Client(echo_server) as client:
        assert client.runs.get("x").run_id == "<none>"
    with Client(echo_server, token="s3cret") as client:
        assert client.runs.get("x").run_id == "Bearer s3cret"
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    with Client(echo_server, token_file=secret) as client:
        assert client.runs.get("x").run_id == "Bearer from-file"
    monkeypatch.setenv("AIVCS_LEDGER_TOKEN", "from-env")
    with Client(echo_server) as client:
        assert client.runs.get("x").run_id == "Bearer from-env"
