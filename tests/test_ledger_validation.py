"""The ledger checks its input itself, so every way in (gRPC, HTTP, OTLP) refuses the same values alike.

OTLP ingestion calls the ledger without a gRPC servicer in between: these
calls go straight to the ledger over a real in-memory database, and must be
refused with the same field-naming messages the gRPC API gives.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable

import pytest

from aivcs_ledgerd.ledger import Ledger
from aivcs_ledgerd.ledger.errors import InvalidArgument
from aivcs_ledgerd.ledger.runs import Finish, NewRun
from aivcs_ledgerd.model import Evaluation, RunFilter, RunStatus
from aivcs_ledgerd.store import Database, init_schema

SPEC = hashlib.sha256(b"ledger-validation").hexdigest()


@pytest.fixture
async def ledger() -> AsyncIterator[Ledger]:
    db = await Database.open("mem://")
    await init_schema(db)
    ledger = Ledger(db)
    try:
        yield ledger
    finally:
        await ledger.close()
        await db.close()


def new_run(**fields: object) -> NewRun:
    values: dict[str, object] = {
        "spec_digest": SPEC,
        "agent_name": "validation",
        "git_sha": None,
        "tags": {},
        "evaluation": Evaluation(),
        "run_id": None,
    }
    values.update(fields)
    return NewRun(**values)  # type: ignore[arg-type]


async def refused(field: str, call: Awaitable[object]) -> str:
    with pytest.raises(InvalidArgument) as raised:
        await call
    assert raised.value.field == field and str(raised.value).startswith(f"{field}: ")
    return str(raised.value)


async def test_runs_refuse_what_the_grpc_api_refuses(ledger: Ledger) -> None:
    message = await refused("spec_digest", ledger.runs.create(new_run(spec_digest="short")))
    assert "64 hexadecimal" in message
    await refused("agent_name", ledger.runs.create(new_run(agent_name="")))
    await refused("git_sha", ledger.runs.create(new_run(git_sha="x" * 257)))
    await refused("evaluation.rubric_path", ledger.runs.create(new_run(evaluation=Evaluation(rubric_path="a\x00b"))))
    await refused("run_id", ledger.runs.create(new_run(run_id="")))
    await refused("tags.score", ledger.runs.create(new_run(tags={"score": float("nan")})))
    await refused("run_id", ledger.runs.get(""))
    await refused("spec_digest", ledger.runs.list(RunFilter(spec_digest="nope"), 0, ""))
    run = await ledger.runs.create(new_run(spec_digest=SPEC.upper(), run_id=f"v-{uuid.uuid4()}"))
    assert run.spec_digest == SPEC  # stored in lower case, as over gRPC
    await refused("duration_ms", ledger.runs.finish(run.run_id, Finish(RunStatus.COMPLETED, 2**63)))
    await refused(
        "final_state_digest",
        ledger.runs.finish(run.run_id, Finish(RunStatus.COMPLETED, 0, final_state_digest="zz")),
    )
    await refused("reason", ledger.runs.finish(run.run_id, Finish(RunStatus.FAILED, 0, reason="r" * 5000)))
    assert (await ledger.runs.get(run.run_id)).status is RunStatus.RUNNING  # nothing refused changed it


async def test_releases_refuse_what_the_grpc_api_refuses(ledger: Ledger) -> None:
    releases = ledger.releases
    await refused("agent_name", releases.promote("", SPEC, "ci"))
    await refused("spec_digest", releases.promote("agent", "nope", "ci"))
    await refused("promoted_by", releases.promote("agent", SPEC, ""))
    await refused("version_label", releases.promote("agent", SPEC, "ci", version_label="v" * 257))
    await refused("notes", releases.promote("agent", SPEC, "ci", notes="n" * (64 * 1024 + 1)))
    stale = releases.promote("agent", SPEC, "ci", expected_current_spec_digest="x")
    await refused("expected_current_spec_digest", stale)
    await refused("to_spec_digest", releases.rollback("agent", "ci", to_spec_digest="x"))
    await refused("agent_name", releases.current(""))
    await refused("agent_name", releases.history(""))
    first = await releases.promote("agent", SPEC.upper(), "ci", expected_current_spec_digest="")
    assert first.spec_digest == SPEC and first.sequence == 1


def test_a_field_named_by_a_huge_payload_key_is_cut() -> None:
    # The field path holds the caller's key; it travels in the message and twice in the error
    # details, so uncut it could overflow a client's trailer limit and the refusal would be lost.
    from aivcs_ledgerd.ledger import validation

    with pytest.raises(InvalidArgument) as refused:
        validation.json_object("events[0].payload", {"k" * 100_000: float("nan")})
    assert refused.value.field.startswith("events[0].payload.kkk")
    assert len(refused.value.field) < 400 and len(str(refused.value)) < 600
