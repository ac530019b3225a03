"""ReleaseRegistry: the reference crate's contract, rollback semantics, compare-and-set,
keyset pages, validation and serialisation under concurrency.

Most tests talk to the real daemon (one per module, on mem://), so each uses
its own agent names. The `Ledger`-level tests at the end run in-process on
their own mem:// database, to place runs and entries directly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import pytest
from aivcs.ledger.v1 import release_pb2, release_registry_pb2_grpc, run_ledger_pb2, run_ledger_pb2_grpc
from aivcs.ledger.v1 import release_registry_pb2 as pb

from aivcs_ledgerd.ledger.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from aivcs_ledgerd.ledger.releases import Releases
from aivcs_ledgerd.model import Release
from aivcs_ledgerd.store import Database, init_schema

Stub = release_registry_pb2_grpc.ReleaseRegistryStub
T = TypeVar("T")


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


A, B, C, D, E = (digest(name) for name in "abcde")


def promote(stub: Stub, agent: str, spec_digest: str, **fields: Any) -> release_pb2.Release:
    fields.setdefault("promoted_by", "ci")
    reply = stub.Promote(pb.PromoteRequest(agent_name=agent, spec_digest=spec_digest, **fields))
    return reply.release


def rollback(stub: Stub, agent: str, **fields: Any) -> release_pb2.Release:
    fields.setdefault("promoted_by", "oncall")
    return stub.Rollback(pb.RollbackRequest(agent_name=agent, **fields)).release


def history(stub: Stub, agent: str, page_size: int = 1000) -> list[release_pb2.Release]:
    """The whole history, newest first, following next_page_token."""
    releases: list[release_pb2.Release] = []
    token = ""
    while True:
        reply = stub.GetHistory(pb.GetHistoryRequest(agent_name=agent, page_size=page_size, page_token=token))
        releases.extend(reply.releases)
        token = reply.next_page_token
        if not token:
            return releases


def refused(call: Callable[[], object], code: grpc.StatusCode) -> str:
    """Run `call`, check it fails with `code`, and return the status message."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    assert error.code() == code, error.details()
    details: str = error.details()
    return details


# --- the reference crate's contract behaviours -------------------------------------------


def test_promote_creates_a_release(releases: Stub) -> None:
    release = promote(releases, "promote-creates", A, version_label="v1.0.0", notes="first")
    assert (release.agent_name, release.spec_digest, release.promoted_by) == ("promote-creates", A, "ci")
    assert (release.version_label, release.notes, release.sequence) == ("v1.0.0", "first", 1)
    assert not release.HasField("rollback_of")
    assert release.created_at.seconds > 0
    assert releases.GetCurrent(pb.GetCurrentRequest(agent_name="promote-creates")).release == release


def test_optional_fields_stay_unset(releases: Stub) -> None:
    release = promote(releases, "promote-bare", A)
    assert not release.HasField("version_label") and not release.HasField("notes")
    assert history(releases, "promote-bare") == [release]


def test_current_is_the_latest(releases: Stub) -> None:
    for spec in (A, B, C):
        promote(releases, "current-latest", spec)
    current = releases.GetCurrent(pb.GetCurrentRequest(agent_name="current-latest")).release
    assert (current.spec_digest, current.sequence) == (C, 3)


def test_get_current_of_unknown_agent_is_not_found(releases: Stub) -> None:
    message = refused(lambda: releases.GetCurrent(pb.GetCurrentRequest(agent_name="nobody")), grpc.StatusCode.NOT_FOUND)
    assert "nobody" in message


def test_history_is_newest_first(releases: Stub) -> None:
    for spec in (A, B, C):
        promote(releases, "history-order", spec)
    entries = history(releases, "history-order")
    assert [(r.sequence, r.spec_digest) for r in entries] == [(3, C), (2, B), (1, A)]
    stamps = [(r.created_at.seconds, r.created_at.nanos) for r in entries]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == 3


def test_history_of_unknown_agent_is_empty(releases: Stub) -> None:
    reply = releases.GetHistory(pb.GetHistoryRequest(agent_name="never-released"))
    assert list(reply.releases) == [] and reply.next_page_token == ""


def test_rollback_restores_the_previous(releases: Stub) -> None:
    promote(releases, "rollback-previous", A, version_label="v1", notes="one")
    promote(releases, "rollback-previous", B, version_label="v2", notes="two")
    release = rollback(releases, "rollback-previous")
    assert (release.spec_digest, release.version_label, release.notes) == (A, "v1", "one")
    assert (release.sequence, release.rollback_of, release.promoted_by) == (3, 1, "oncall")
    assert releases.GetCurrent(pb.GetCurrentRequest(agent_name="rollback-previous")).release == release


def test_rollback_with_a_single_release_is_failed_precondition(releases: Stub) -> None:
    promote(releases, "rollback-single", A)
    refused(lambda: rollback(releases, "rollback-single"), grpc.StatusCode.FAILED_PRECONDITION)
    assert len(history(releases, "rollback-single")) == 1


def test_rollback_of_unknown_agent_is_not_found(releases: Stub) -> None:
    refused(lambda: rollback(releases, "rollback-nobody"), grpc.StatusCode.NOT_FOUND)
    assert history(releases, "rollback-nobody") == []


def test_rollback_reappends_so_history_keeps_every_entry(releases: Stub) -> None:
    promote(releases, "rollback-keeps", A)
    promote(releases, "rollback-keeps", B)
    rollback(releases, "rollback-keeps")
    entries = history(releases, "rollback-keeps")
    assert [(r.sequence, r.spec_digest) for r in entries] == [(3, A), (2, B), (1, A)]
    assert [r.HasField("rollback_of") for r in entries] == [True, False, False]


def test_agents_are_independent(releases: Stub) -> None:
    promote(releases, "independent-1", A)
    promote(releases, "independent-2", B)
    promote(releases, "independent-1", C)
    # A name that is a prefix of another shares nothing with it either.
    promote(releases, "independent-", D)
    assert [r.spec_digest for r in history(releases, "independent-1")] == [C, A]
    assert [r.spec_digest for r in history(releases, "independent-2")] == [B]
    assert [r.spec_digest for r in history(releases, "independent-")] == [D]
    rollback(releases, "independent-1")
    assert releases.GetCurrent(pb.GetCurrentRequest(agent_name="independent-2")).release.spec_digest == B


# --- rollback semantics ------------------------------------------------------------------


def test_second_rollback_returns_to_where_the_first_started(releases: Stub) -> None:
    promote(releases, "toggle", A)
    promote(releases, "toggle", B)
    first = rollback(releases, "toggle")
    second = rollback(releases, "toggle")
    third = rollback(releases, "toggle")
    assert [(r.spec_digest, r.sequence, r.rollback_of) for r in (first, second, third)] == [
        (A, 3, 1),
        (B, 4, 2),
        (A, 5, 3),
    ]


def test_rollback_to_spec_digest_reappends_the_newest_earlier_entry(releases: Stub) -> None:
    promote(releases, "to-digest", A, version_label="a1", notes="a first")
    promote(releases, "to-digest", B, version_label="b")
    promote(releases, "to-digest", A, version_label="a2", notes="a again")
    promote(releases, "to-digest", C, version_label="c")
    release = rollback(releases, "to-digest", to_spec_digest=A.upper(), notes="back to a")
    assert (release.spec_digest, release.rollback_of, release.version_label) == (A, 3, "a2")
    assert release.notes == "back to a"
    # Only an earlier entry counts: the current one (sequence 5, A) is not a target,
    # so rolling "to" A now picks sequence 3 again.
    again = rollback(releases, "to-digest", to_spec_digest=A)
    assert (again.sequence, again.rollback_of, again.notes) == (6, 3, "a again")


def test_rollback_to_unknown_digest_is_failed_precondition(releases: Stub) -> None:
    promote(releases, "to-digest-missing", A)
    promote(releases, "to-digest-missing", B)
    message = refused(
        lambda: rollback(releases, "to-digest-missing", to_spec_digest=C), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert message.startswith("to_spec_digest")
    # The current entry is not "earlier": rolling to it alone is refused too.
    refused(lambda: rollback(releases, "to-digest-missing", to_spec_digest=B), grpc.StatusCode.FAILED_PRECONDITION)
    assert len(history(releases, "to-digest-missing")) == 2


def test_rollback_notes_default_to_the_reappended_entrys(releases: Stub) -> None:
    promote(releases, "rollback-notes", A, notes="good one")
    promote(releases, "rollback-notes", B)
    assert rollback(releases, "rollback-notes").notes == "good one"
    back = rollback(releases, "rollback-notes")
    assert not back.HasField("notes") and not back.HasField("version_label")
    assert rollback(releases, "rollback-notes", notes="").notes == ""


# --- compare-and-set ---------------------------------------------------------------------


def test_promote_compare_and_set(releases: Stub) -> None:
    agent = "cas-promote"
    first = promote(releases, agent, A, expected_current_spec_digest="")
    message = refused(lambda: promote(releases, agent, B, expected_current_spec_digest=""), grpc.StatusCode.ABORTED)
    assert message.startswith("expected_current_spec_digest") and A in message
    refused(lambda: promote(releases, agent, B, expected_current_spec_digest=C), grpc.StatusCode.ABORTED)
    assert history(releases, agent) == [first]
    second = promote(releases, agent, B, expected_current_spec_digest=A.upper())
    assert second.sequence == 2
    # Unset means "no expectation".
    assert promote(releases, agent, C).sequence == 3


def test_rollback_compare_and_set(releases: Stub) -> None:
    agent = "cas-rollback"
    promote(releases, agent, A)
    promote(releases, agent, B)
    refused(lambda: rollback(releases, agent, expected_current_spec_digest=A), grpc.StatusCode.ABORTED)
    refused(lambda: rollback(releases, agent, expected_current_spec_digest=""), grpc.StatusCode.ABORTED)
    assert len(history(releases, agent)) == 2
    assert rollback(releases, agent, expected_current_spec_digest=B).spec_digest == A
    assert len(history(releases, agent)) == 3


# --- keyset pages ------------------------------------------------------------------------


def test_pages_hold_every_entry_once_in_order(releases: Stub) -> None:
    agent = "pages"
    for number in range(120):
        promote(releases, agent, digest(f"page-{number}"), version_label=str(number))
    seen: list[int] = []
    sizes: list[int] = []
    token = ""
    while True:
        reply = releases.GetHistory(pb.GetHistoryRequest(agent_name=agent, page_size=50, page_token=token))
        sizes.append(len(reply.releases))
        seen.extend(r.sequence for r in reply.releases)
        assert all(r.version_label == str(r.sequence - 1) for r in reply.releases)
        token = reply.next_page_token
        if not token:
            break
        # An append between pages changes nothing in the pages still to come.
        if len(sizes) == 1:
            promote(releases, agent, digest("late"))
    assert sizes == [50, 50, 20]
    assert seen == list(range(120, 0, -1))
    default = releases.GetHistory(pb.GetHistoryRequest(agent_name=agent))
    assert len(default.releases) == 50 and default.releases[0].sequence == 121
    clamped = releases.GetHistory(pb.GetHistoryRequest(agent_name=agent, page_size=4_000_000))
    assert len(clamped.releases) == 121 and clamped.next_page_token == ""


def test_exact_page_boundary_ends_without_token(releases: Stub) -> None:
    for number in range(4):
        promote(releases, "pages-exact", digest(f"exact-{number}"))
    first = releases.GetHistory(pb.GetHistoryRequest(agent_name="pages-exact", page_size=2))
    second = releases.GetHistory(
        pb.GetHistoryRequest(agent_name="pages-exact", page_size=2, page_token=first.next_page_token)
    )
    assert [r.sequence for r in (*first.releases, *second.releases)] == [4, 3, 2, 1]
    assert second.next_page_token == ""


def token_of(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


BAD_TOKENS = [
    "garbage!",
    "ü",
    "x" * 5000,
    token_of("not an object"),
    token_of([]),
    token_of({}),
    token_of({"before": "3", "agent": "pages-bad-token"}),
    token_of({"before": 1, "agent": "pages-bad-token"}),
    token_of({"before": 10**30, "agent": "pages-bad-token"}),
    token_of({"before": 1e400, "agent": "pages-bad-token"}),
    token_of({"before": True, "agent": "pages-bad-token"}),
    token_of({"before": 3}),
    base64.urlsafe_b64encode(b"[" * 700).decode(),
]


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_bad_page_token_is_invalid_argument(releases: Stub, token: str) -> None:
    request = pb.GetHistoryRequest(agent_name="pages-bad-token", page_token=token)
    message = refused(lambda: releases.GetHistory(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert message.startswith("page_token")


def test_page_token_of_another_agent_is_invalid_argument(releases: Stub) -> None:
    for spec in (A, B):
        promote(releases, "pages-token-owner", spec)
    token = releases.GetHistory(pb.GetHistoryRequest(agent_name="pages-token-owner", page_size=1)).next_page_token
    assert token
    request = pb.GetHistoryRequest(agent_name="pages-token-thief", page_token=token)
    assert refused(lambda: releases.GetHistory(request), grpc.StatusCode.INVALID_ARGUMENT).startswith("page_token")


# --- validation --------------------------------------------------------------------------

BAD_REQUESTS: list[tuple[str, str, Any]] = [
    ("agent_name", "Promote", pb.PromoteRequest(agent_name="", spec_digest=A, promoted_by="ci")),
    ("agent_name", "Promote", pb.PromoteRequest(agent_name="x" * 257, spec_digest=A, promoted_by="ci")),
    ("agent_name", "Promote", pb.PromoteRequest(agent_name="nul\x00", spec_digest=A, promoted_by="ci")),
    ("spec_digest", "Promote", pb.PromoteRequest(agent_name="v", spec_digest="", promoted_by="ci")),
    ("spec_digest", "Promote", pb.PromoteRequest(agent_name="v", spec_digest=A[:63], promoted_by="ci")),
    ("spec_digest", "Promote", pb.PromoteRequest(agent_name="v", spec_digest=A[:63] + "g", promoted_by="ci")),
    ("promoted_by", "Promote", pb.PromoteRequest(agent_name="v", spec_digest=A, promoted_by="")),
    (
        "version_label",
        "Promote",
        pb.PromoteRequest(agent_name="v", spec_digest=A, promoted_by="ci", version_label="v" * 300),
    ),
    (
        "expected_current_spec_digest",
        "Promote",
        pb.PromoteRequest(agent_name="v", spec_digest=A, promoted_by="ci", expected_current_spec_digest="abc"),
    ),
    ("agent_name", "Rollback", pb.RollbackRequest(agent_name="", promoted_by="ci")),
    ("promoted_by", "Rollback", pb.RollbackRequest(agent_name="v", promoted_by="")),
    ("to_spec_digest", "Rollback", pb.RollbackRequest(agent_name="v", promoted_by="ci", to_spec_digest="")),
    ("to_spec_digest", "Rollback", pb.RollbackRequest(agent_name="v", promoted_by="ci", to_spec_digest="zz")),
    (
        "expected_current_spec_digest",
        "Rollback",
        pb.RollbackRequest(agent_name="v", promoted_by="ci", expected_current_spec_digest=A + "0"),
    ),
    ("agent_name", "GetCurrent", pb.GetCurrentRequest(agent_name="")),
    ("agent_name", "GetHistory", pb.GetHistoryRequest(agent_name="")),
]


@pytest.mark.parametrize(("field", "method", "request_"), BAD_REQUESTS)
def test_malformed_requests_name_the_field(releases: Stub, field: str, method: str, request_: Any) -> None:
    message = refused(lambda: getattr(releases, method)(request_), grpc.StatusCode.INVALID_ARGUMENT)
    assert message.startswith(field), message
    assert history(releases, "v") == []


def test_upper_case_digests_are_normalised(releases: Stub) -> None:
    release = promote(releases, "upper", A.upper())
    assert release.spec_digest == A
    assert history(releases, "upper")[0].spec_digest == A


def test_agent_name_is_stored_verbatim(releases: Stub) -> None:
    agent = "ägent/ü name with spaces, 'quotes' and ] brackets ["
    promote(releases, agent, A)
    promote(releases, agent, B)
    assert rollback(releases, agent).agent_name == agent
    assert [r.sequence for r in history(releases, agent, page_size=1)] == [3, 2, 1]


# --- the promotion gate, through RunLedger ------------------------------------------------


def test_promotion_gate_needs_a_completed_successful_run(
    releases: Stub, runs: run_ledger_pb2_grpc.RunLedgerStub
) -> None:
    agent = "gated"

    def gated(spec_digest: str) -> release_pb2.Release:
        return promote(releases, agent, spec_digest, require_successful_run=True)

    message = refused(lambda: gated(A), grpc.StatusCode.FAILED_PRECONDITION)
    assert message.startswith("require_successful_run")
    running = runs.CreateRun(run_ledger_pb2.CreateRunRequest(spec_digest=A, agent_name=agent)).run
    refused(lambda: gated(A), grpc.StatusCode.FAILED_PRECONDITION)
    runs.FailRun(run_ledger_pb2.FailRunRequest(run_id=running.run_id, reason="tests failed"))
    refused(lambda: gated(A), grpc.StatusCode.FAILED_PRECONDITION)
    elsewhere = runs.CreateRun(run_ledger_pb2.CreateRunRequest(spec_digest=A, agent_name="gated-other")).run
    runs.CompleteRun(run_ledger_pb2.CompleteRunRequest(run_id=elsewhere.run_id))
    refused(lambda: gated(A), grpc.StatusCode.FAILED_PRECONDITION)
    assert history(releases, agent) == []

    passed = runs.CreateRun(run_ledger_pb2.CreateRunRequest(spec_digest=A.upper(), agent_name=agent)).run
    runs.CompleteRun(run_ledger_pb2.CompleteRunRequest(run_id=passed.run_id))
    assert gated(A.upper()).spec_digest == A
    refused(lambda: gated(B), grpc.StatusCode.FAILED_PRECONDITION)
    assert promote(releases, agent, B).sequence == 2  # the gate is opt-in


# --- concurrency -------------------------------------------------------------------------


def concurrently(count: int, call: Callable[[int], T]) -> list[T | grpc.RpcError]:
    """Run call(0..count-1) on `count` threads released together; results or RpcErrors."""
    start = threading.Barrier(count)

    def one(index: int) -> T | grpc.RpcError:
        start.wait()
        try:
            return call(index)
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


class Replay:
    """What one serial order of rollback requests must have appended, checked entry by entry."""

    def __init__(self, requested: dict[str, str | None]) -> None:
        # notes of each rollback request -> its to_spec_digest (None: history[1])
        self.requested = requested

    def check(self, entries: list[Any], first_rollback: int) -> None:
        """`entries` oldest first; every entry from `first_rollback` on is a rollback."""
        assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))
        for entry in entries[first_rollback - 1 :]:
            earlier = entries[: entry.sequence - 1]  # the history when this entry was appended
            target_digest = self.requested[entry.notes]
            if target_digest is None:
                target = earlier[-2]
            else:
                target = [e for e in earlier[:-1] if e.spec_digest == target_digest][-1]
            assert entry.rollback_of == target.sequence, entry
            assert (entry.spec_digest, entry.version_label) == (target.spec_digest, target.version_label)


def test_concurrent_rollbacks_follow_one_serial_order(releases: Stub) -> None:
    agent = "concurrent-rollbacks"
    for number, spec in enumerate((A, B, C, D, E)):
        promote(releases, agent, spec, version_label=f"v{number}")
    targets: dict[str, str | None] = {f"rollback-{i}": (None if i % 3 else (A, B, C, D)[i % 4]) for i in range(20)}

    def one(index: int) -> release_pb2.Release:
        notes = f"rollback-{index}"
        to = targets[notes]
        request = pb.RollbackRequest(agent_name=agent, promoted_by=f"worker-{index}", notes=notes)
        if to is not None:
            request.to_spec_digest = to
        return releases.Rollback(request).release

    results = concurrently(20, one)
    acknowledged = [r for r in results if isinstance(r, release_pb2.Release)]
    assert len(acknowledged) == 20, [r for r in results if not isinstance(r, release_pb2.Release)]
    entries = list(reversed(history(releases, agent)))
    assert len(entries) == 25
    Replay(targets).check(entries, first_rollback=6)
    # Every acknowledgement names the entry stored at its sequence, and each request appended once.
    assert sorted(r.sequence for r in acknowledged) == list(range(6, 26))
    for release in acknowledged:
        assert entries[release.sequence - 1] == release
    assert sorted(e.notes for e in entries[5:]) == sorted(targets)


def test_concurrent_promotes_with_one_expectation_let_one_through(releases: Stub) -> None:
    agent = "concurrent-cas"
    promote(releases, agent, A)

    def one(index: int) -> release_pb2.Release:
        return promote(releases, agent, digest(f"cas-{index}"), expected_current_spec_digest=A)

    results = concurrently(20, one)
    winners = [r for r in results if isinstance(r, release_pb2.Release)]
    losers = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(winners) == 1
    assert [error.code() for error in losers] == [grpc.StatusCode.ABORTED] * 19
    entries = history(releases, agent)
    assert [e.sequence for e in entries] == [2, 1] and entries[0] == winners[0]


# --- in-process: the Ledger's Releases on its own database -------------------------------


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    database = await Database.open("mem://")
    await init_schema(database)
    yield database
    await database.close()


async def add_run(db: Database, run_id: str, agent: str, spec_digest: str, status: str, success: bool) -> None:
    await db.query(
        "CREATE type::record('runs', $run_id) CONTENT $run",
        {
            "run_id": run_id,
            "run": {
                "run_id": run_id,
                "agent_name": agent,
                "spec_digest": spec_digest,
                "status": status,
                "success": success,
                "created_ns": hash(run_id) & 0xFFFFFFFF,
            },
        },
    )


async def test_gate_counts_only_completed_successful_runs_of_that_agent_and_spec(db: Database) -> None:
    registry = Releases(db)
    await add_run(db, "r1", "gate", A, "running", False)
    await add_run(db, "r2", "gate", A, "failed", False)
    await add_run(db, "r3", "gate", A, "cancelled", False)
    await add_run(db, "r4", "gate", A, "completed", False)
    await add_run(db, "r5", "gate-other", A, "completed", True)
    await add_run(db, "r6", "gate", B, "completed", True)
    with pytest.raises(FailedPrecondition, match=r"^require_successful_run"):
        await registry.promote("gate", A, "ci", require_successful_run=True)
    assert (await registry.history("gate")).items == []
    await add_run(db, "r7", "gate", A, "completed", True)
    release = await registry.promote("gate", A, "ci", require_successful_run=True)
    assert (release.sequence, release.spec_digest) == (1, A)
    assert (await registry.promote("gate", B, "ci", require_successful_run=True)).sequence == 2


async def test_domain_refusals(db: Database) -> None:
    registry = Releases(db)
    with pytest.raises(NotFound):
        await registry.current("nobody")
    with pytest.raises(NotFound):
        await registry.rollback("nobody", "oncall")
    await registry.promote("solo", A, "ci")
    with pytest.raises(FailedPrecondition):
        await registry.rollback("solo", "oncall")
    with pytest.raises(Aborted):
        await registry.promote("solo", B, "ci", expected_current_spec_digest="")
    with pytest.raises(InvalidArgument, match=r"^page_size"):
        await registry.history("solo", page_size=-1)


async def test_head_is_found_when_created_at_disagrees_with_sequence(db: Database) -> None:
    """The head is the highest sequence: a history whose clock ran backwards still appends at head + 1."""
    for sequence, created_at in ((1, "2030-01-01T00:00:03Z"), (2, "2030-01-01T00:00:02Z"), (3, "2030-01-01T00:00:01Z")):
        await db.query(
            "CREATE type::record('releases', [$agent, $sequence]) CONTENT {"
            " agent_name: $agent, spec_digest: $spec, promoted_by: 'seed', sequence: $sequence,"
            " created_at: <datetime> $created_at }",
            {"agent": "clock", "sequence": sequence, "spec": (A, B, C)[sequence - 1], "created_at": created_at},
        )
    registry = Releases(db)
    assert (await registry.current("clock")).sequence == 3
    rolled = await registry.rollback("clock", "oncall")
    assert (rolled.sequence, rolled.rollback_of, rolled.spec_digest) == (4, 2, B)
    page = await registry.history("clock", page_size=3)
    assert [r.sequence for r in page.items] == [4, 3, 2]


async def test_ledgers_sharing_a_handle_share_the_agents_lock(db: Database) -> None:
    """Two Releases over one handle (as two Ledger objects would be) still append one at a time."""
    first, second = Releases(db), Releases(db)
    for number, spec in enumerate((A, B, C, D)):
        await first.promote("shared", spec, "ci", version_label=f"v{number}")
    targets: dict[str, str | None] = {f"rollback-{i}": (None if i % 4 else B) for i in range(20)}

    async def one(index: int) -> Release:
        registry = first if index % 2 else second
        notes = f"rollback-{index}"
        return await registry.rollback("shared", "oncall", to_spec_digest=targets[notes], notes=notes)

    acknowledged = await asyncio.gather(*(one(i) for i in range(20)))
    page = await first.history("shared", page_size=1000)
    entries = list(reversed(page.items))
    Replay(targets).check(entries, first_rollback=5)
    assert sorted(r.sequence for r in acknowledged) == list(range(5, 25))
    for release in acknowledged:
        assert entries[release.sequence - 1] == release
