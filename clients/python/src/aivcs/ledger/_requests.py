"""Request messages built from Python arguments, shared by the sync and async clients."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from aivcs.ledger._errors import InvalidArgument
from aivcs.ledger._models import (
    JSON,
    Evaluation,
    EventLike,
    RunStatus,
    add_event_inputs,
    datetime_to_timestamp,
    dict_to_struct,
)
from aivcs.ledger.v1 import event_stream_pb2, release_registry_pb2, run_ledger_pb2, run_pb2

MAX_REASON_BYTES = 4096


def create_run(
    spec_digest: str,
    agent_name: str,
    *,
    git_sha: str | None,
    tags: Mapping[str, JSON] | None,
    evaluation: Evaluation | None,
    run_id: str | None,
    inactivity_timeout: float | timedelta | None = None,
) -> run_ledger_pb2.CreateRunRequest:
    return run_ledger_pb2.CreateRunRequest(
        spec_digest=spec_digest,
        agent_name=agent_name,
        git_sha=git_sha,
        tags=dict_to_struct("tags", tags),
        evaluation=evaluation.to_proto() if evaluation is not None else None,
        run_id=run_id,
        inactivity_timeout_ms=timeout_ms(inactivity_timeout),
    )


def timeout_ms(timeout: float | timedelta | None) -> int | None:
    """Seconds (or a timedelta) as the whole milliseconds the daemon takes; None stays unset."""
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if not seconds >= 0:
        raise InvalidArgument(f"inactivity_timeout: must be 0 (none) or a positive number of seconds, got {timeout!r}")
    return round(seconds * 1000)


def list_runs(
    *,
    spec_digest: str | None,
    agent_name: str | None,
    git_sha: str | None,
    status: RunStatus | str | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> run_ledger_pb2.ListRunsRequest:
    """The filters of a listing; `_paging` sets each page's size and token."""
    if isinstance(status, str):
        status = RunStatus(status.lower())
    return run_ledger_pb2.ListRunsRequest(
        spec_digest=spec_digest,
        agent_name=agent_name,
        git_sha=git_sha,
        status=status.to_proto() if status is not None else run_pb2.RUN_STATUS_UNSPECIFIED,
        created_after=datetime_to_timestamp(created_after) if created_after is not None else None,
        created_before=datetime_to_timestamp(created_before) if created_before is not None else None,
    )


def reason_text(reason: str) -> str:
    """Cut a reason to the daemon's limit on a character boundary."""
    data = reason.encode("utf-8")
    if len(data) <= MAX_REASON_BYTES:
        return reason
    return data[: MAX_REASON_BYTES - 3].decode("utf-8", errors="ignore") + "..."


def complete_run(
    run_id: str, *, final_state_digest: str | None, duration_ms: int, expected_total_events: int | None
) -> run_ledger_pb2.CompleteRunRequest:
    return run_ledger_pb2.CompleteRunRequest(
        run_id=run_id,
        final_state_digest=final_state_digest,
        duration_ms=duration_ms,
        expected_total_events=expected_total_events,
    )


def fail_run(
    run_id: str, *, reason: str, duration_ms: int, expected_total_events: int | None
) -> run_ledger_pb2.FailRunRequest:
    return run_ledger_pb2.FailRunRequest(
        run_id=run_id, reason=reason_text(reason), duration_ms=duration_ms, expected_total_events=expected_total_events
    )


def cancel_run(run_id: str, *, reason: str, duration_ms: int) -> run_ledger_pb2.CancelRunRequest:
    return run_ledger_pb2.CancelRunRequest(run_id=run_id, reason=reason_text(reason), duration_ms=duration_ms)


def append_events(
    run_id: str, events: Sequence[EventLike], *, expected_last_seq: int | None, idempotency_key: str | None
) -> event_stream_pb2.AppendEventsRequest:
    request = event_stream_pb2.AppendEventsRequest(
        run_id=run_id, expected_last_seq=expected_last_seq, idempotency_key=idempotency_key
    )
    add_event_inputs(request.events, events)
    return request


def read_events(
    run_id: str, *, from_seq: int, to_seq: int, kinds: Iterable[str], limit: int
) -> event_stream_pb2.ReadEventsRequest:
    return event_stream_pb2.ReadEventsRequest(
        run_id=run_id, from_seq=from_seq, to_seq=to_seq, kinds=list(kinds), limit=limit
    )


def promote(
    agent_name: str,
    spec_digest: str,
    *,
    promoted_by: str,
    version_label: str | None,
    notes: str | None,
    expected_current_spec_digest: str | None,
    require_successful_run: bool,
) -> release_registry_pb2.PromoteRequest:
    return release_registry_pb2.PromoteRequest(
        agent_name=agent_name,
        spec_digest=spec_digest,
        promoted_by=promoted_by,
        version_label=version_label,
        notes=notes,
        expected_current_spec_digest=expected_current_spec_digest,
        require_successful_run=require_successful_run,
    )


def rollback(
    agent_name: str,
    *,
    promoted_by: str,
    to_spec_digest: str | None,
    expected_current_spec_digest: str | None,
    notes: str | None,
) -> release_registry_pb2.RollbackRequest:
    return release_registry_pb2.RollbackRequest(
        agent_name=agent_name,
        promoted_by=promoted_by,
        to_spec_digest=to_spec_digest,
        expected_current_spec_digest=expected_current_spec_digest,
        notes=notes,
    )
