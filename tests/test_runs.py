"""RunLedger against the real daemon: lifecycle, errors, and ListRuns' filters and keyset pages."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2, run_ledger_pb2_grpc, run_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1.event_stream_pb2_grpc import EventStreamStub
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub
from google.protobuf import json_format, timestamp_pb2

from harness.daemon import start_daemon
from harness.data import SPEC, digest, unique
from harness.expect import fails

Code = grpc.StatusCode
RUNNING, COMPLETED, FAILED, CANCELLED = (
    run_pb2.RUN_STATUS_RUNNING,
    run_pb2.RUN_STATUS_COMPLETED,
    run_pb2.RUN_STATUS_FAILED,
    run_pb2.RUN_STATUS_CANCELLED,
)
TERMINAL = (COMPLETED, FAILED, CANCELLED)


def create(runs: RunLedgerStub, **fields: Any) -> run_pb2.Run:
    fields.setdefault("spec_digest", SPEC)
    fields.setdefault("agent_name", unique("agent"))
    tags = fields.pop("tags", None)
    request = rl.CreateRunRequest(**fields)
    if tags is not None:
        request.tags.update(tags)
    return runs.CreateRun(request).run


def get(runs: RunLedgerStub, run_id: str) -> run_pb2.Run:
    return runs.GetRun(rl.GetRunRequest(run_id=run_id)).run


def finish(runs: RunLedgerStub, status: int, run_id: str, **fields: Any) -> run_pb2.Run:
    if status == COMPLETED:
        return runs.CompleteRun(rl.CompleteRunRequest(run_id=run_id, **fields)).run
    if status == FAILED:
        return runs.FailRun(rl.FailRunRequest(run_id=run_id, **fields)).run
    fields.pop("expected_total_events", None)
    return runs.CancelRun(rl.CancelRunRequest(run_id=run_id, **fields)).run


def append(events: EventStreamStub, run_id: str, count: int = 1) -> es.AppendEventsResponse:
    batch = [event_pb2.EventInput(kind="step") for _ in range(count)]
    return events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=batch))


def list_all(runs: RunLedgerStub, page_size: int = 1000, **filters: Any) -> list[run_pb2.Run]:
    """Every page of ListRuns with these filters, concatenated."""
    found: list[run_pb2.Run] = []
    token = ""
    while True:
        page = runs.ListRuns(rl.ListRunsRequest(page_size=page_size, page_token=token, **filters))
        found.extend(page.runs)
        token = page.next_page_token
        if not token:
            return found


def ns(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


def timestamp(nanos: int) -> timestamp_pb2.Timestamp:
    seconds, rest = divmod(nanos, 1_000_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=rest)


# --- creation and reading back ------------------------------------------------------------------


def test_create_run_starts_running_and_get_returns_it(runs: RunLedgerStub) -> None:
    agent = unique("agent")
    tags = {"team": "evals", "attempt": 3, "nested": {"ok": True, "list": [1, "two", None]}}
    run = create(
        runs,
        agent_name=agent,
        git_sha="deadbeef",
        tags=tags,
        evaluation=run_pb2.EvaluationMetadata(rubric_path="rubrics/a.yaml", is_promotion_gate=True, agent_phase=2),
    )
    assert uuid.UUID(run.run_id)
    assert run.status == RUNNING
    assert run.total_events == 0
    assert run.events_digest == ""
    assert run.spec_digest == SPEC and run.agent_name == agent and run.git_sha == "deadbeef"
    assert json_format.MessageToDict(run.tags) == tags
    assert run.evaluation == run_pb2.EvaluationMetadata(
        rubric_path="rubrics/a.yaml", is_promotion_gate=True, agent_phase=2
    )
    assert not run.success and run.duration_ms == 0
    assert run.HasField("created_at") and not run.HasField("completed_at")
    assert not run.HasField("final_state_digest")
    assert get(runs, run.run_id) == run


def test_null_values_in_tags_are_stored_verbatim(runs: RunLedgerStub) -> None:
    tags = {"owner": None, "labels": {"reviewed": None, "n": 1}, "list": [None, "x"]}
    run = create(runs, tags=tags)
    assert json_format.MessageToDict(run.tags) == tags
    assert json_format.MessageToDict(get(runs, run.run_id).tags) == tags


def test_git_sha_unset_stays_unset(runs: RunLedgerStub) -> None:
    run = create(runs)
    assert not run.HasField("git_sha")
    assert not get(runs, run.run_id).HasField("git_sha")


def test_server_made_run_ids_are_unique_uuids(runs: RunLedgerStub) -> None:
    ids = [create(runs).run_id for _ in range(50)]
    assert len(set(ids)) == 50
    for run_id in ids:
        assert str(uuid.UUID(run_id)) == run_id


def test_client_run_id_is_stored_verbatim(runs: RunLedgerStub) -> None:
    for run_id in [unique(" Ünïcode ✓ spaces/slashes:colons "), unique("CaSe"), unique("⟨angle⟩ [brackets]")]:
        run = create(runs, run_id=run_id)
        assert run.run_id == run_id
        assert get(runs, run_id).run_id == run_id


def test_run_id_of_256_multibyte_bytes_is_accepted_and_257_is_not(runs: RunLedgerStub) -> None:
    stem = uuid.uuid4().hex  # 32 bytes
    exact = stem + "é" * 112  # 32 + 224 = 256 bytes
    assert len(exact.encode()) == 256
    assert create(runs, run_id=exact).run_id == exact
    with fails(Code.INVALID_ARGUMENT, "run_id"):
        create(runs, run_id=exact + "x")
    with fails(Code.INVALID_ARGUMENT, "run_id"):
        create(runs, run_id=stem + "é" * 113)  # 258 bytes


def test_upper_case_digests_are_accepted_and_stored_lower_case(runs: RunLedgerStub) -> None:
    spec = digest(unique())
    run = create(runs, spec_digest=spec.upper())
    assert run.spec_digest == spec
    assert get(runs, run.run_id).spec_digest == spec
    assert [r.run_id for r in list_all(runs, spec_digest=spec.upper())] == [run.run_id]
    state = digest("state")
    done = runs.CompleteRun(rl.CompleteRunRequest(run_id=run.run_id, final_state_digest=state.upper())).run
    assert done.final_state_digest == state
    assert get(runs, run.run_id).final_state_digest == state


BAD_DIGESTS = [
    "",
    "abc",
    SPEC[:-1],  # 63
    SPEC + "0",  # 65
    "g" * 64,
    SPEC[:-1] + "z",
    " " + SPEC[1:],
    "sha256:" + SPEC[:57],
]


@pytest.mark.parametrize("bad", BAD_DIGESTS)
def test_malformed_digests_are_invalid_argument_naming_the_field(runs: RunLedgerStub, bad: str) -> None:
    with fails(Code.INVALID_ARGUMENT, "spec_digest"):
        create(runs, spec_digest=bad)
    with fails(Code.INVALID_ARGUMENT, "spec_digest"):
        runs.ListRuns(rl.ListRunsRequest(spec_digest=bad))
    run = create(runs)
    with fails(Code.INVALID_ARGUMENT, "final_state_digest"):
        runs.CompleteRun(rl.CompleteRunRequest(run_id=run.run_id, final_state_digest=bad))
    assert get(runs, run.run_id).status == RUNNING


def test_empty_agent_name_is_invalid_argument(runs: RunLedgerStub) -> None:
    with fails(Code.INVALID_ARGUMENT, "agent_name"):
        runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name=""))


def test_empty_client_run_id_is_invalid_argument(runs: RunLedgerStub) -> None:
    with fails(Code.INVALID_ARGUMENT, "run_id"):
        create(runs, run_id="")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_in_tags_are_invalid_argument(runs: RunLedgerStub, bad: float) -> None:
    agent = unique("agent")
    with fails(Code.INVALID_ARGUMENT, "tags"):
        create(runs, agent_name=agent, tags={"score": bad})
    with fails(Code.INVALID_ARGUMENT, "tags"):
        create(runs, agent_name=agent, tags={"deep": {"list": [1, bad]}})
    assert list_all(runs, agent_name=agent) == []


def run_rpcs(runs: RunLedgerStub, events: EventStreamStub) -> dict[str, Callable[[str], object]]:
    """Every RPC that takes a run_id, called with just that run_id (plus a valid minimum)."""
    return {
        "GetRun": lambda r: runs.GetRun(rl.GetRunRequest(run_id=r)),
        "CompleteRun": lambda r: runs.CompleteRun(rl.CompleteRunRequest(run_id=r)),
        "FailRun": lambda r: runs.FailRun(rl.FailRunRequest(run_id=r)),
        "CancelRun": lambda r: runs.CancelRun(rl.CancelRunRequest(run_id=r)),
        "VerifyRun": lambda r: runs.VerifyRun(rl.VerifyRunRequest(run_id=r)),
        "AppendEvents": lambda r: append(events, r),
        "ReadEvents": lambda r: list(events.ReadEvents(es.ReadEventsRequest(run_id=r))),
        "SubscribeEvents": lambda r: list(events.SubscribeEvents(es.SubscribeEventsRequest(run_id=r), timeout=10)),
        "IngestEvents": lambda r: _ingest_status(events, r),
    }


def _ingest_status(events: EventStreamStub, run_id: str) -> None:
    """IngestEvents answers a refused batch with `error`; raise it as the status AppendEvents would give."""
    request = es.IngestEventsRequest(batch_id=7, run_id=run_id, events=[event_pb2.EventInput(kind="step")])
    [answer] = list(events.IngestEvents(iter([request]), timeout=10))
    assert answer.batch_id == 7
    if answer.HasField("error"):
        code = next(c for c in grpc.StatusCode if c.value[0] == answer.error.code)
        raise _Refused(code, answer.error.message)


class _Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


RUN_RPCS = [
    "GetRun",
    "CompleteRun",
    "FailRun",
    "CancelRun",
    "VerifyRun",
    "AppendEvents",
    "ReadEvents",
    "SubscribeEvents",
    "IngestEvents",
]


@pytest.mark.parametrize("rpc", RUN_RPCS)
def test_unknown_run_is_not_found_on_every_rpc(runs: RunLedgerStub, events: EventStreamStub, rpc: str) -> None:
    missing = unique("missing")
    with fails(Code.NOT_FOUND):
        run_rpcs(runs, events)[rpc](missing)
    with fails(Code.NOT_FOUND):
        get(runs, missing)  # and nothing was created on the way


@pytest.mark.parametrize("rpc", RUN_RPCS)
def test_empty_or_oversized_run_id_is_invalid_argument_on_every_rpc(
    runs: RunLedgerStub, events: EventStreamStub, rpc: str
) -> None:
    call = run_rpcs(runs, events)[rpc]
    with fails(Code.INVALID_ARGUMENT, "run_id"):
        call("")
    with fails(Code.INVALID_ARGUMENT, "run_id"):
        call("r" * 257)


# --- safe retries of CreateRun ------------------------------------------------------------------


def test_create_with_same_client_id_spec_and_agent_returns_the_existing_run(
    runs: RunLedgerStub, events: EventStreamStub
) -> None:
    run_id, agent = unique(), unique("agent")
    first = create(runs, run_id=run_id, agent_name=agent, tags={"try": 1})
    append(events, run_id, 2)
    again = create(runs, run_id=run_id, agent_name=agent, spec_digest=SPEC.upper(), tags={"try": 2})
    assert again.run_id == run_id
    assert again.created_at == first.created_at
    assert json_format.MessageToDict(again.tags) == {"try": 1}
    assert again.total_events == 2  # the stored run, not a fresh one
    assert [r.run_id for r in list_all(runs, agent_name=agent)] == [run_id]


@pytest.mark.parametrize("change", ["spec_digest", "agent_name", "both"])
def test_create_with_client_id_reused_for_another_run_is_already_exists(runs: RunLedgerStub, change: str) -> None:
    run_id, agent = unique(), unique("agent")
    original = create(runs, run_id=run_id, agent_name=agent)
    other = {
        "spec_digest": {"spec_digest": digest("other")},
        "agent_name": {"agent_name": unique("agent")},
        "both": {"spec_digest": digest("other"), "agent_name": unique("agent")},
    }[change]
    with fails(Code.ALREADY_EXISTS):
        create(runs, run_id=run_id, **{"agent_name": agent, **other})
    assert get(runs, run_id) == original


def test_concurrent_creates_with_one_client_id_make_one_run(runs: RunLedgerStub) -> None:
    run_id, agent = unique(), unique("agent")
    request = rl.CreateRunRequest(run_id=run_id, spec_digest=SPEC, agent_name=agent)
    calls = [runs.CreateRun.future(request) for _ in range(16)]
    created = {call.result().run.created_at.SerializeToString() for call in calls}
    assert len(created) == 1
    assert [r.run_id for r in list_all(runs, agent_name=agent)] == [run_id]


# --- terminal transitions -----------------------------------------------------------------------


def test_complete_sets_status_success_and_completed_at(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run = create(runs)
    append(events, run.run_id, 3)
    done = runs.CompleteRun(
        rl.CompleteRunRequest(
            run_id=run.run_id, final_state_digest=digest("final"), duration_ms=1234, expected_total_events=3
        )
    ).run
    assert done.status == COMPLETED and done.success
    assert done.duration_ms == 1234
    assert done.final_state_digest == digest("final")
    assert done.total_events == 3
    assert ns(done.completed_at) >= ns(done.created_at)
    assert done.status_reason == ""
    assert get(runs, run.run_id) == done


def test_fail_sets_status_reason_and_no_success(runs: RunLedgerStub) -> None:
    run = create(runs)
    failed = runs.FailRun(rl.FailRunRequest(run_id=run.run_id, duration_ms=7, reason="tool crashed")).run
    assert failed.status == FAILED and not failed.success
    assert failed.duration_ms == 7 and failed.status_reason == "tool crashed"
    assert failed.HasField("completed_at") and ns(failed.completed_at) >= ns(failed.created_at)
    assert not failed.HasField("final_state_digest")
    assert get(runs, run.run_id) == failed


def test_cancel_sets_status_reason_and_no_success(runs: RunLedgerStub) -> None:
    run = create(runs)
    cancelled = runs.CancelRun(rl.CancelRunRequest(run_id=run.run_id, duration_ms=9, reason="operator")).run
    assert cancelled.status == CANCELLED and not cancelled.success
    assert cancelled.duration_ms == 9 and cancelled.status_reason == "operator"
    assert cancelled.HasField("completed_at")
    assert get(runs, run.run_id) == cancelled


@pytest.mark.parametrize(
    ("first", "second"),
    list(itertools.product(TERMINAL, TERMINAL)),
    ids=[f"{a}-then-{b}" for a, b in itertools.product(["complete", "fail", "cancel"], repeat=2)],
)
def test_terminal_run_never_changes_again(
    runs: RunLedgerStub, events: EventStreamStub, first: int, second: int
) -> None:
    run = create(runs)
    append(events, run.run_id, 2)
    done = finish(runs, first, run.run_id, duration_ms=5, **({"reason": "r"} if first != COMPLETED else {}))
    extra: dict[str, Any] = {"duration_ms": 99}
    if second == COMPLETED:
        extra["final_state_digest"] = digest("later")
    else:
        extra["reason"] = "later"
    with fails(Code.FAILED_PRECONDITION):
        finish(runs, second, run.run_id, **extra)
    with fails(Code.FAILED_PRECONDITION):
        append(events, run.run_id)
    assert get(runs, run.run_id) == done
    assert done.total_events == 2


@pytest.mark.parametrize("status", [COMPLETED, FAILED], ids=["complete", "fail"])
def test_expected_total_events_mismatch_leaves_the_run_running(
    runs: RunLedgerStub, events: EventStreamStub, status: int
) -> None:
    run = create(runs)
    append(events, run.run_id, 3)
    for wrong in (0, 2, 4):
        with fails(Code.FAILED_PRECONDITION, "expected_total_events"):
            finish(runs, status, run.run_id, expected_total_events=wrong, duration_ms=1)
        after = get(runs, run.run_id)
        assert after.status == RUNNING and not after.HasField("completed_at") and after.duration_ms == 0
    assert append(events, run.run_id).first_seq == 4  # still takes events
    done = finish(runs, status, run.run_id, expected_total_events=4)
    assert done.status == status and done.total_events == 4


def test_expected_total_events_zero_matches_an_empty_run(runs: RunLedgerStub) -> None:
    run = create(runs)
    assert runs.CompleteRun(rl.CompleteRunRequest(run_id=run.run_id, expected_total_events=0)).run.success


def test_oversized_reason_is_invalid_argument(runs: RunLedgerStub) -> None:
    run = create(runs)
    with fails(Code.INVALID_ARGUMENT, "reason"):
        runs.FailRun(rl.FailRunRequest(run_id=run.run_id, reason="x" * 4097))
    with fails(Code.INVALID_ARGUMENT, "reason"):
        runs.CancelRun(rl.CancelRunRequest(run_id=run.run_id, reason="x" * 4097))
    assert get(runs, run.run_id).status == RUNNING


# --- ListRuns on the shared daemon: list all, by spec, by agent ---------------------------------


def test_list_all_runs_of_an_agent_and_by_spec_digest(runs: RunLedgerStub) -> None:
    agent = unique("agent")
    spec_a, spec_b = digest(unique()), digest(unique())
    made = [create(runs, agent_name=agent, spec_digest=spec_a if i % 3 else spec_b).run_id for i in range(12)]
    assert [r.run_id for r in list_all(runs, agent_name=agent)] == made[::-1]
    assert [r.run_id for r in list_all(runs, spec_digest=spec_a)] == [r for i, r in enumerate(made) if i % 3][::-1]
    assert [r.run_id for r in list_all(runs, spec_digest=spec_b)] == [r for i, r in enumerate(made) if not i % 3][::-1]
    assert list_all(runs, spec_digest=digest(unique())) == []
    everyone = {r.run_id for r in list_all(runs)}
    assert set(made) <= everyone


def test_list_orders_newest_first_even_within_one_millisecond(runs: RunLedgerStub) -> None:
    """Eight clients create runs at once; each client's runs must come back in its own order, reversed."""
    agent = unique("agent")
    made: dict[int, list[str]] = {}
    start = threading.Barrier(8)

    def client(number: int) -> None:
        start.wait()
        made[number] = [create(runs, agent_name=agent, tags={"client": number}).run_id for _ in range(30)]

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    listed = list_all(runs, agent_name=agent, page_size=7)
    assert sorted(r.run_id for r in listed) == sorted(itertools.chain(*made.values()))
    stamps = [ns(r.created_at) for r in listed]
    assert all(a > b for a, b in itertools.pairwise(stamps)), "created_at must strictly decrease down the list"
    millis = [s // 1_000_000 for s in stamps]
    assert len(set(millis)) < len(millis), "precondition: some runs were created within the same millisecond"
    for number, ids in made.items():
        assert [r.run_id for r in listed if r.tags["client"] == number] == ids[::-1]


def test_list_with_unknown_status_value_is_invalid_argument(runs: RunLedgerStub) -> None:
    with fails(Code.INVALID_ARGUMENT, "status"):
        runs.ListRuns(rl.ListRunsRequest(status=99))  # type: ignore[arg-type]


def test_list_created_bounds_are_exact_to_the_nanosecond(runs: RunLedgerStub) -> None:
    """created_after is inclusive and created_before exclusive, at the nanosecond created_at reports."""
    agent = unique("agent")
    made = [create(runs, agent_name=agent) for _ in range(6)]
    # A run whose creation time is not the last nanosecond of its microsecond, so +1 ns stays in it.
    pivot = next(r for r in made[1:-1] if ns(r.created_at) % 1000 != 999)
    at = ns(pivot.created_at)
    newer = [r.run_id for r in made if ns(r.created_at) > at][::-1]
    older = [r.run_id for r in made if ns(r.created_at) < at][::-1]

    def ids(**bounds: timestamp_pb2.Timestamp) -> list[str]:
        return [r.run_id for r in list_all(runs, agent_name=agent, **bounds)]

    assert ids(created_after=timestamp(at)) == [*newer, pivot.run_id]
    assert ids(created_after=timestamp(at + 1)) == newer
    assert ids(created_before=timestamp(at)) == older
    assert ids(created_before=timestamp(at + 1)) == [pivot.run_id, *older]
    assert ids(created_after=timestamp(at), created_before=timestamp(at + 1)) == [pivot.run_id]


# --- ListRuns on a daemon of its own: every filter, alone and combined ---------------------------


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunLedgerStub, list[run_pb2.Run]]]:
    """A fresh daemon holding 48 runs: 2 specs x 2 agents x 3 git_shas x 4 statuses, interleaved."""
    daemon = start_daemon(tmp_path_factory.mktemp("matrix"))
    try:
        with daemon.channel() as channel:
            stub = run_ledger_pb2_grpc.RunLedgerStub(channel)
            combos = list(itertools.product(["s1", "s2"], ["agent-a", "agent-b"], ["g1", "g2", None], range(4)))
            # Interleave so that no filter selects a contiguous stretch of history.
            combos = (
                combos[::7] + combos[1::7] + combos[2::7] + combos[3::7] + combos[4::7] + combos[5::7] + combos[6::7]
            )
            made = []
            for spec, agent, sha, status_index in combos:
                fields: dict[str, Any] = {"spec_digest": digest(spec), "agent_name": agent}
                if sha is not None:
                    fields["git_sha"] = sha
                run = create(stub, **fields)
                status = (RUNNING, *TERMINAL)[status_index]
                if status != RUNNING:
                    finish(stub, status, run.run_id)
                made.append(get(stub, run.run_id))
            yield stub, made
    finally:
        daemon.stop()


def test_every_filter_alone_and_combined(matrix: tuple[RunLedgerStub, list[run_pb2.Run]]) -> None:
    stub, made = matrix
    assert len(made) == 48
    after = made[10].created_at
    before = made[40].created_at
    options: dict[str, list[Any]] = {
        "spec_digest": [None, digest("s2")],
        "agent_name": [None, "agent-a"],
        "git_sha": [None, "g1"],
        "status": [None, FAILED],
        "created_after": [None, after],
        "created_before": [None, before],
    }
    checked = 0
    for values in itertools.product(*options.values()):
        filters = {name: value for name, value in zip(options, values, strict=True) if value is not None}

        def matches(run: run_pb2.Run, filters: dict[str, Any] = filters) -> bool:
            for name, value in filters.items():
                if name == "created_after" and ns(run.created_at) < ns(value):
                    return False
                if name == "created_before" and ns(run.created_at) >= ns(value):
                    return False
                if name == "git_sha" and (not run.HasField("git_sha") or run.git_sha != value):
                    return False
                if name in ("spec_digest", "agent_name", "status") and getattr(run, name) != value:
                    return False
            return True

        expected = [r.run_id for r in reversed(made) if matches(r)]
        assert [r.run_id for r in list_all(stub, **filters)] == expected, filters
        # The same through small pages.
        assert [r.run_id for r in list_all(stub, page_size=3, **filters)] == expected, filters
        checked += 1
    assert checked == 64


def test_each_status_filter_selects_exactly_that_status(matrix: tuple[RunLedgerStub, list[run_pb2.Run]]) -> None:
    stub, made = matrix
    for status in (RUNNING, *TERMINAL):
        listed = list_all(stub, status=status)
        assert [r.run_id for r in listed] == [r.run_id for r in reversed(made) if r.status == status]
        assert len(listed) == 12


def test_listed_runs_equal_what_get_returns(matrix: tuple[RunLedgerStub, list[run_pb2.Run]]) -> None:
    stub, made = matrix
    assert list_all(stub) == made[::-1]


# --- ListRuns keyset pages over a long history ---------------------------------------------------

HISTORY = 1_250


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunLedgerStub, list[str]]]:
    """A fresh daemon with 1,250 runs created one after another; ids in creation order."""
    daemon = start_daemon(tmp_path_factory.mktemp("history"))
    try:
        with daemon.channel() as channel:
            stub = run_ledger_pb2_grpc.RunLedgerStub(channel)
            made = [
                stub.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name=f"agent-{i % 5}")).run.run_id
                for i in range(HISTORY)
            ]
            yield stub, made
    finally:
        daemon.stop()


def test_pages_of_50_return_every_run_once_newest_first(history: tuple[RunLedgerStub, list[str]]) -> None:
    stub, made = history
    seen: list[str] = []
    token, pages = "", 0
    while True:
        page = stub.ListRuns(rl.ListRunsRequest(page_size=50, page_token=token))
        pages += 1
        assert len(page.runs) == 50 or not page.next_page_token
        seen.extend(r.run_id for r in page.runs)
        token = page.next_page_token
        if not token:
            break
        assert pages < 100, "pagination does not end"
    assert seen == made[::-1]
    assert pages == HISTORY // 50  # 1,250 is a multiple of 50: the last page is full and says so


def test_pages_with_a_filter_return_every_match_once(history: tuple[RunLedgerStub, list[str]]) -> None:
    stub, made = history
    assert [r.run_id for r in list_all(stub, page_size=50, agent_name="agent-3")] == made[3::5][::-1]


def test_page_size_zero_means_fifty(history: tuple[RunLedgerStub, list[str]]) -> None:
    stub, made = history
    page = stub.ListRuns(rl.ListRunsRequest(page_size=0))
    assert [r.run_id for r in page.runs] == made[::-1][:50]
    assert page.next_page_token
    following = stub.ListRuns(rl.ListRunsRequest(page_token=page.next_page_token))
    assert [r.run_id for r in following.runs] == made[::-1][50:100]


def test_page_size_above_1000_is_clamped_to_1000(history: tuple[RunLedgerStub, list[str]]) -> None:
    stub, made = history
    page = stub.ListRuns(rl.ListRunsRequest(page_size=5000))
    assert [r.run_id for r in page.runs] == made[::-1][:1000]
    assert page.next_page_token
    rest = stub.ListRuns(rl.ListRunsRequest(page_size=5000, page_token=page.next_page_token))
    assert [r.run_id for r in rest.runs] == made[::-1][1000:]
    assert rest.next_page_token == ""


def test_page_token_with_other_filters_is_invalid_argument(history: tuple[RunLedgerStub, list[str]]) -> None:
    stub, _ = history
    token = stub.ListRuns(rl.ListRunsRequest(page_size=10, agent_name="agent-1")).next_page_token
    assert token
    for other in (
        {},
        {"agent_name": "agent-2"},
        {"agent_name": "agent-1", "spec_digest": SPEC},
        {"agent_name": "agent-1", "status": RUNNING},
        {"agent_name": "agent-1", "git_sha": "x"},
        {"agent_name": "agent-1", "created_before": timestamp(2**62)},
    ):
        with fails(Code.INVALID_ARGUMENT, "page_token"):
            stub.ListRuns(rl.ListRunsRequest(page_size=10, page_token=token, **other))
    # With the same filters it is honoured (and a different page size is fine).
    assert len(stub.ListRuns(rl.ListRunsRequest(page_size=20, agent_name="agent-1", page_token=token)).runs) == 20


@pytest.mark.parametrize("token", ["not a token", "@@@", "e30", "W10", "eyJiZWZvcmUiOiAxfQ", "AAAA", "=" * 8])
def test_malformed_page_token_is_invalid_argument(runs: RunLedgerStub, token: str) -> None:
    with fails(Code.INVALID_ARGUMENT, "page_token"):
        runs.ListRuns(rl.ListRunsRequest(page_token=token))


# --- extreme values: a deliberate answer, never a "retry later" ----------------------------------

MAX_U64 = 2**64 - 1
YEAR_1 = timestamp_pb2.Timestamp(seconds=-62_135_596_800)
YEAR_9999 = timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999)


@pytest.mark.parametrize("status", [COMPLETED, FAILED], ids=["complete", "fail"])
def test_huge_expected_total_events_is_a_mismatch_not_an_outage(runs: RunLedgerStub, status: int) -> None:
    run = create(runs)
    with fails(Code.FAILED_PRECONDITION, "expected_total_events"):
        finish(runs, status, run.run_id, expected_total_events=MAX_U64)
    assert get(runs, run.run_id).status == RUNNING


@pytest.mark.parametrize("status", TERMINAL, ids=["complete", "fail", "cancel"])
def test_huge_duration_is_stored_or_refused_by_name(runs: RunLedgerStub, status: int) -> None:
    run = create(runs)
    try:
        done = finish(runs, status, run.run_id, duration_ms=MAX_U64)
    except grpc.RpcError as error:
        assert error.code() == Code.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"  # type: ignore[attr-defined]
        assert "duration_ms" in error.details()  # type: ignore[attr-defined]
        assert get(runs, run.run_id).status == RUNNING
        return
    assert done.duration_ms == MAX_U64
    assert get(runs, run.run_id) == done


def test_created_bounds_anywhere_in_the_timestamp_range_are_answered(runs: RunLedgerStub) -> None:
    """Bounds far in the past or future are valid filters: they match everything or nothing."""
    agent = unique("agent")
    made = [create(runs, agent_name=agent).run_id for _ in range(3)][::-1]
    assert [r.run_id for r in list_all(runs, agent_name=agent, created_after=YEAR_1)] == made
    assert [r.run_id for r in list_all(runs, agent_name=agent, created_before=YEAR_9999)] == made
    assert list_all(runs, agent_name=agent, created_after=YEAR_9999) == []
    assert list_all(runs, agent_name=agent, created_before=YEAR_1) == []
    assert list_all(runs, agent_name=agent, created_after=timestamp(-(2**63) - 1)) != []  # year 1677 and before


@pytest.mark.parametrize(
    ("rpc", "request_", "field"),
    [
        ("CreateRun", rl.CreateRunRequest(spec_digest=SPEC, agent_name="a\x00b"), "agent_name"),
        ("CreateRun", rl.CreateRunRequest(spec_digest=SPEC, agent_name="a" * 257), "agent_name"),
        ("CreateRun", rl.CreateRunRequest(spec_digest=SPEC, agent_name="a", run_id="a\x00b"), "run_id"),
        ("CreateRun", rl.CreateRunRequest(spec_digest=SPEC, agent_name="a", git_sha="g" * 257), "git_sha"),
        (
            "CreateRun",
            rl.CreateRunRequest(
                spec_digest=SPEC, agent_name="a", evaluation=run_pb2.EvaluationMetadata(rubric_path="r" * 5000)
            ),
            "rubric_path",
        ),
        ("GetRun", rl.GetRunRequest(run_id="a\x00b"), "run_id"),
        ("ListRuns", rl.ListRunsRequest(created_after=timestamp_pb2.Timestamp(seconds=2**62)), "created_after"),
        ("ListRuns", rl.ListRunsRequest(created_before=timestamp_pb2.Timestamp(nanos=-5)), "created_before"),
        ("ListRuns", rl.ListRunsRequest(page_token="x" * 10_000), "page_token"),
    ],
    ids=[
        "agent-nul",
        "agent-long",
        "run-id-nul",
        "git-sha-long",
        "rubric-long",
        "get-nul",
        "after-range",
        "before-nanos",
        "token-long",
    ],
)
def test_malformed_requests_are_invalid_argument_naming_the_field(
    runs: RunLedgerStub, rpc: str, request_: Any, field: str
) -> None:
    with fails(Code.INVALID_ARGUMENT, field):
        getattr(runs, rpc)(request_)
    assert runs.ListRuns(rl.ListRunsRequest(page_size=1)) is not None  # and the daemon still answers
