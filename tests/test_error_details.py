"""Refusals a client acts on carry their facts as google.rpc error details, through the real daemon.

The reasons and metadata are the contract of proto/aivcs/ledger/v1/errors.proto:
a client reads the run's last seq or terminal status from them, not from the
message text.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2, release_registry_pb2, run_ledger_pb2, run_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1.event_stream_pb2_grpc import EventStreamStub
from aivcs.ledger.v1.release_registry_pb2_grpc import ReleaseRegistryStub
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

SPEC = hashlib.sha256(b"details").hexdigest()
OTHER = hashlib.sha256(b"details-other").hexdigest()
DOMAIN = "ledger.aivcs.dev"


def new_run(runs: RunLedgerStub) -> str:
    request = run_ledger_pb2.CreateRunRequest(spec_digest=SPEC, agent_name="details", run_id=f"run-{uuid.uuid4()}")
    return runs.CreateRun(request).run.run_id


def batch(count: int) -> list[event_pb2.EventInput]:
    return [event_pb2.EventInput(kind="step") for _ in range(count)]


def info_of(details: Any) -> error_details_pb2.ErrorInfo:
    """The one ErrorInfo among `details` (google.protobuf.Any values)."""
    infos = [d for d in details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1, details
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    assert info.domain == DOMAIN
    return info


def refusal(call: Any, code: grpc.StatusCode) -> tuple[error_details_pb2.ErrorInfo, list[any_pb2.Any]]:
    """Run `call`; it fails with `code` and a google.rpc.Status whose code and message match the call's."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error: Any = raised.value
    assert error.code() == code, error.details()
    status = rpc_status.from_call(error)  # raises when the Status disagrees with the call's code or message
    assert status is not None, "no grpc-status-details-bin trailer"
    return info_of(status.details), list(status.details)


def test_a_stale_expected_last_seq_is_aborted_with_the_runs_current_last_seq(
    runs: RunLedgerStub, events: EventStreamStub
) -> None:
    run_id = new_run(runs)
    events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=batch(3)))
    stale = es.AppendEventsRequest(run_id=run_id, events=batch(1), expected_last_seq=1)
    info, _ = refusal(lambda: events.AppendEvents(stale), grpc.StatusCode.ABORTED)
    assert info.reason == "ERROR_REASON_LAST_SEQ_MISMATCH"
    assert dict(info.metadata) == {"run_id": run_id, "last_seq": "3", "expected_last_seq": "1"}
    # Acting on the details: retrying with the last seq they give succeeds.
    retried = es.AppendEventsRequest(run_id=run_id, events=batch(1), expected_last_seq=int(info.metadata["last_seq"]))
    assert events.AppendEvents(retried).first_seq == 4


def test_appending_to_or_finishing_a_terminal_run_names_its_status(
    runs: RunLedgerStub, events: EventStreamStub
) -> None:
    run_id = new_run(runs)
    runs.FailRun(run_ledger_pb2.FailRunRequest(run_id=run_id, reason="boom"))
    late = es.AppendEventsRequest(run_id=run_id, events=batch(1))
    info, _ = refusal(lambda: events.AppendEvents(late), grpc.StatusCode.FAILED_PRECONDITION)
    assert info.reason == "ERROR_REASON_RUN_TERMINAL"
    assert dict(info.metadata) == {"run_id": run_id, "status": "RUN_STATUS_FAILED"}
    assert run_pb2.RunStatus.Value(info.metadata["status"]) == run_pb2.RUN_STATUS_FAILED
    complete = run_ledger_pb2.CompleteRunRequest(run_id=run_id)
    info, _ = refusal(lambda: runs.CompleteRun(complete), grpc.StatusCode.FAILED_PRECONDITION)
    assert (info.reason, info.metadata["status"]) == ("ERROR_REASON_RUN_TERMINAL", "RUN_STATUS_FAILED")
    beat = run_ledger_pb2.HeartbeatRequest(run_id=run_id)
    info, _ = refusal(lambda: runs.Heartbeat(beat), grpc.StatusCode.FAILED_PRECONDITION)
    assert (info.reason, info.metadata["status"]) == ("ERROR_REASON_RUN_TERMINAL", "RUN_STATUS_FAILED")


def test_a_wrong_expected_total_events_names_the_stored_count(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs)
    events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=batch(2)))
    complete = run_ledger_pb2.CompleteRunRequest(run_id=run_id, expected_total_events=5)
    info, _ = refusal(lambda: runs.CompleteRun(complete), grpc.StatusCode.FAILED_PRECONDITION)
    assert info.reason == "ERROR_REASON_EVENT_COUNT_MISMATCH"
    assert dict(info.metadata) == {"run_id": run_id, "total_events": "2", "expected_total_events": "5"}


def test_an_unknown_run_is_named_in_the_details(runs: RunLedgerStub, events: EventStreamStub) -> None:
    missing = f"missing-{uuid.uuid4()}"
    info, _ = refusal(lambda: runs.GetRun(run_ledger_pb2.GetRunRequest(run_id=missing)), grpc.StatusCode.NOT_FOUND)
    assert (info.reason, dict(info.metadata)) == ("ERROR_REASON_RUN_NOT_FOUND", {"run_id": missing})
    append = es.AppendEventsRequest(run_id=missing, events=batch(1))
    info, _ = refusal(lambda: events.AppendEvents(append), grpc.StatusCode.NOT_FOUND)
    assert (info.reason, dict(info.metadata)) == ("ERROR_REASON_RUN_NOT_FOUND", {"run_id": missing})


def test_a_refused_field_comes_with_a_bad_request_naming_it(runs: RunLedgerStub) -> None:
    bad = run_ledger_pb2.CreateRunRequest(spec_digest="not-a-digest", agent_name="details")
    info, details = refusal(lambda: runs.CreateRun(bad), grpc.StatusCode.INVALID_ARGUMENT)
    assert (info.reason, dict(info.metadata)) == ("ERROR_REASON_INVALID_FIELD", {"field": "spec_digest"})
    [packed] = [d for d in details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    bad_request = error_details_pb2.BadRequest()
    packed.Unpack(bad_request)
    [violation] = bad_request.field_violations
    assert violation.field == "spec_digest" and "64 hexadecimal" in violation.description


def test_a_stale_release_expectation_names_the_current_release(releases: ReleaseRegistryStub) -> None:
    agent = f"details-{uuid.uuid4()}"
    releases.Promote(release_registry_pb2.PromoteRequest(agent_name=agent, spec_digest=SPEC, promoted_by="ci"))
    stale = release_registry_pb2.PromoteRequest(
        agent_name=agent, spec_digest=OTHER, promoted_by="ci", expected_current_spec_digest=OTHER
    )
    info, _ = refusal(lambda: releases.Promote(stale), grpc.StatusCode.ABORTED)
    assert info.reason == "ERROR_REASON_CURRENT_RELEASE_MISMATCH"
    assert dict(info.metadata) == {"agent_name": agent, "current_spec_digest": SPEC}
    nobody = release_registry_pb2.GetCurrentRequest(agent_name=f"nobody-{uuid.uuid4()}")
    info, _ = refusal(lambda: releases.GetCurrent(nobody), grpc.StatusCode.NOT_FOUND)
    assert (info.reason, dict(info.metadata)) == ("ERROR_REASON_NO_RELEASE", {"agent_name": nobody.agent_name})


def test_ingest_errors_carry_the_enum_code_and_the_same_details(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run_id = new_run(runs)
    requests = [
        es.IngestEventsRequest(batch_id=1, run_id=run_id, events=batch(2)),
        es.IngestEventsRequest(batch_id=2, run_id=run_id, events=batch(1), expected_last_seq=0),
        es.IngestEventsRequest(batch_id=3, run_id=run_id),
    ]
    answers = {answer.batch_id: answer for answer in events.IngestEvents(iter(requests), timeout=30)}
    assert not answers[1].HasField("error")
    stale = answers[2].error
    assert stale.code == code_pb2.ABORTED and code_pb2.Code.Name(stale.code) == "ABORTED"
    info = info_of(stale.details)
    assert info.reason == "ERROR_REASON_LAST_SEQ_MISMATCH" and info.metadata["last_seq"] == "2"
    empty = answers[3].error
    assert empty.code == code_pb2.INVALID_ARGUMENT
    assert (info_of(empty.details).reason, info_of(empty.details).metadata["field"]) == (
        "ERROR_REASON_INVALID_FIELD",
        "events",
    )


def test_a_refusal_without_a_reason_has_no_details(runs: RunLedgerStub) -> None:
    run_id = new_run(runs)
    retry = run_ledger_pb2.CreateRunRequest(spec_digest=OTHER, agent_name="details", run_id=run_id)
    with pytest.raises(grpc.RpcError) as raised:
        runs.CreateRun(retry)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert rpc_status.from_call(error) is None
