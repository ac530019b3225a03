"""Run lifecycle rules: creation with safe retries, listing, heartbeats, terminal states."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aivcs_ledgerd.ledger import validation
from aivcs_ledgerd.ledger.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    run_not_found,
    run_terminal,
)
from aivcs_ledgerd.ledger.hub import Hub
from aivcs_ledgerd.ledger.ownership import SoleOwner
from aivcs_ledgerd.ledger.pages import within_bytes
from aivcs_ledgerd.ledger.store_errors import translated
from aivcs_ledgerd.model import Evaluation, Page, Run, RunFilter, RunStatus
from aivcs_ledgerd.store import Database, DuplicateRecord, Rejected, runs
from aivcs_ledgerd.util.timeutil import ns_to_datetime

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_TOKEN_CHARS = 256
# Ten years: far beyond any run, and a deadline in nanoseconds stays well inside SurrealDB's integers.
MAX_INACTIVITY_TIMEOUT_MS = 10 * 365 * 86_400_000


class _CreationClock:
    """Strictly increasing nanosecond creation keys within this process."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(time.time_ns(), self._last + 1)
        return self._last


_clock = _CreationClock()


@dataclass(frozen=True, slots=True)
class NewRun:
    spec_digest: str
    agent_name: str
    git_sha: str | None
    tags: dict[str, Any]
    evaluation: Evaluation
    run_id: str | None
    inactivity_timeout_ms: int | None = None  # None: the daemon's default


@dataclass(frozen=True, slots=True)
class Finish:
    """A terminal transition as the caller asks for it."""

    status: RunStatus
    duration_ms: int
    final_state_digest: str | None = None
    reason: str = ""
    expected_total_events: int | None = None
    # Set only by OTLP ingestion: the root span, which arrives last, names the agent (otlp/spans.py).
    agent_name: str | None = None
    spec_digest: str | None = None


def fresh_run(
    run_id: str,
    spec_digest: str,
    agent_name: str,
    created_ns: int,
    *,
    git_sha: str | None = None,
    tags: dict[str, Any] | None = None,
    evaluation: Evaluation | None = None,
    inactivity_timeout_ms: int = 0,
) -> Run:
    """The record of a run just created, as CreateRun stores it: RUNNING, no events, created at `created_ns`."""
    return Run(
        run_id=run_id,
        spec_digest=spec_digest,
        agent_name=agent_name,
        git_sha=git_sha,
        tags={} if tags is None else tags,
        evaluation=Evaluation() if evaluation is None else evaluation,
        status=RunStatus.RUNNING,
        total_events=0,
        final_state_digest=None,
        duration_ms=0,
        success=False,
        created_at=ns_to_datetime(created_ns),
        completed_at=None,
        events_digest="",
        status_reason="",
        created_ns=created_ns,
        inactivity_timeout_ms=inactivity_timeout_ms,
    )


class Runs:
    def __init__(
        self, db: Database, hub: Hub, ownership: SoleOwner | None = None, default_inactivity_timeout_ms: int = 0
    ) -> None:
        self._db = db
        self._hub = hub
        self._ownership = ownership or SoleOwner()
        self._default_timeout_ms = default_inactivity_timeout_ms

    @translated
    async def create(self, new: NewRun) -> Run:
        """A new RUNNING run, or the existing one when a client id is retried.

        A retry returns the run as first created, with the inactivity timeout it got then.
        """
        new = _checked(new)
        timeout_ms = self._default_timeout_ms if new.inactivity_timeout_ms is None else new.inactivity_timeout_ms
        if timeout_ms > MAX_INACTIVITY_TIMEOUT_MS:
            raise InvalidArgument(
                "inactivity_timeout_ms",
                f"must be at most {MAX_INACTIVITY_TIMEOUT_MS} (ten years), got {timeout_ms}; 0 means none",
            )
        for _ in range(5):
            run = fresh_run(
                new.run_id if new.run_id is not None else str(uuid.uuid4()),
                new.spec_digest,
                new.agent_name,
                _clock.next(),
                git_sha=new.git_sha,
                tags=new.tags,
                evaluation=new.evaluation,
                inactivity_timeout_ms=timeout_ms,
            )
            try:
                await runs.create_run(self._db, run)
                return run
            except Rejected as rejected:
                if rejected.reason != runs.STAGED:
                    raise
                raise AlreadyExists(f"run_id: run {run.run_id!r} is being restored") from None
            except DuplicateRecord:
                existing = await runs.get_run(self._db, run.run_id)
                if existing is None:
                    continue  # the creation key collided with another daemon's: take a new one
                if (existing.spec_digest, existing.agent_name) == (new.spec_digest, new.agent_name):
                    return existing
                raise AlreadyExists(
                    f"run_id: run {run.run_id!r} exists with another spec_digest or agent_name"
                ) from None
        raise Unavailable("database error: could not allocate a creation key")

    @translated
    async def get(self, run_id: str) -> Run:
        validation.identifier("run_id", run_id)
        run = await runs.get_run(self._db, run_id)
        if run is None:
            raise run_not_found(run_id)
        return run

    @translated
    async def heartbeat(self, run_id: str) -> Run:
        """Record that a RUNNING run's agent is alive: its last activity (and deadline) move to now."""
        validation.identifier("run_id", run_id)
        try:
            return await self._ownership.fenced_write(
                self._db,
                runs.run_key(run_id),
                lambda session, fence: runs.heartbeat(session, run_id, time.time_ns(), fence),
            )
        except Rejected as rejected:
            if rejected.reason == "not_found":
                raise run_not_found(run_id) from None
            status = RunStatus(rejected.reason.partition(":")[2])
            raise run_terminal(
                run_id, status, f"run {run_id!r} is {status.name}; only a RUNNING run takes heartbeats"
            ) from None

    @translated
    async def list(
        self, where: RunFilter, page_size: int, page_token: str, size_of: Callable[[Run], int] | None = None
    ) -> Page:
        """A page of runs, newest first: at most `page_size`, and (with `size_of`) at most PAGE_BYTES."""
        if where.spec_digest is not None:
            where = dataclasses.replace(where, spec_digest=validation.digest("spec_digest", where.spec_digest))
        size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
        scope = _filter_scope(where)
        before = _decode_token(page_token, scope) if page_token else None
        found = await runs.list_runs(self._db, where, before, size + 1)
        items = found[:size] if size_of is None else within_bytes(found[:size], size_of)
        more = len(found) > len(items)
        return Page(items, _encode_token(items[-1].created_ns, scope) if more else None)

    @translated
    async def finish(self, run_id: str, finish: Finish) -> Run:
        validation.identifier("run_id", run_id)
        finish = dataclasses.replace(
            finish,
            duration_ms=validation.below_2_63("duration_ms", finish.duration_ms),
            final_state_digest=validation.optional_digest("final_state_digest", finish.final_state_digest),
            reason=validation.text("reason", finish.reason),
        )
        now = time.time_ns()
        changes: dict[str, Any] = {
            "status": finish.status.value,
            "success": finish.status is RunStatus.COMPLETED,
            "duration_ms": finish.duration_ms,
            "completed_at": ns_to_datetime(now),
            "status_reason": finish.reason,
        }
        if finish.final_state_digest is not None:
            changes["final_state_digest"] = finish.final_state_digest
        if finish.agent_name is not None:
            changes["agent_name"] = finish.agent_name
        if finish.spec_digest is not None:
            changes["spec_digest"] = finish.spec_digest
        expected = finish.expected_total_events
        if expected is not None and expected >= 2**63:
            expected = -1  # no run holds that many events: refused as a mismatch
        try:
            run = await self._ownership.fenced_write(
                self._db,
                runs.run_key(run_id),
                lambda session, fence: runs.finish_run(session, run_id, changes, expected, fence),
            )
        except Rejected as rejected:
            raise _refusal(run_id, rejected.reason, finish) from None
        self._hub.publish(run_id, None)
        return run


def _checked(new: NewRun) -> NewRun:
    """`new` with every field checked (and the digest in lower case), in the order the contract lists them."""
    return dataclasses.replace(
        new,
        spec_digest=validation.digest("spec_digest", new.spec_digest),
        agent_name=validation.identifier("agent_name", new.agent_name),
        git_sha=validation.optional_text("git_sha", new.git_sha, validation.MAX_ID_BYTES),
        tags=validation.json_object("tags", new.tags),
        evaluation=dataclasses.replace(
            new.evaluation,
            rubric_path=validation.text("evaluation.rubric_path", new.evaluation.rubric_path),
        ),
        run_id=None if new.run_id is None else validation.identifier("run_id", new.run_id),
    )


def _refusal(run_id: str, reason: str, finish: Finish) -> Exception:
    if reason == "not_found":
        return run_not_found(run_id)
    if reason.startswith("terminal:"):
        status = RunStatus(reason.split(":", 1)[1])
        return run_terminal(run_id, status, f"run {run_id!r} is already {status.name}; terminal runs never change")
    if reason.startswith("count:"):
        stored = reason.split(":", 1)[1]
        return FailedPrecondition(
            f"expected_total_events: run {run_id!r} holds {stored} events, "
            f"not {finish.expected_total_events}; the run stays RUNNING",
            reason="EVENT_COUNT_MISMATCH",
            facts={
                "run_id": run_id,
                "total_events": stored,
                "expected_total_events": str(finish.expected_total_events),
            },
        )
    return FailedPrecondition(f"run {run_id!r}: {reason}")


def _filter_scope(where: RunFilter) -> str:
    """A short digest of the filters, so a token is only honoured with the same ones."""
    text = repr(
        (
            where.spec_digest,
            where.agent_name,
            where.git_sha,
            where.status,
            where.created_after_ns,
            where.created_before_ns,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_token(created_ns: int, scope: str) -> str:
    raw = json.dumps({"before": created_ns, "scope": scope}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, scope: str) -> int:
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument("page_token", "is not a token this daemon issued")
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        before, token_scope = data["before"], data["scope"]
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        raise InvalidArgument("page_token", "is not a token this daemon issued") from None
    if type(before) is not int or token_scope != scope:
        raise InvalidArgument("page_token", "was issued for other filters; start again without a token")
    return before
