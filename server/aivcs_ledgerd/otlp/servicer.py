"""OTLP/gRPC TraceService: Export requests in, partial-success answers out.

Answers follow the OTLP specification:

- every span stored (or stored before, when resent): OK, no partial success;
- some spans refused for good (malformed, too large, their run already
  terminal): OK with `partial_success.rejected_spans` and an
  `error_message` naming the first few; the exporter must not retry;
- a request over the limits (more than MAX_EXPORT_SPANS spans; the message
  size limit is the daemon's `--max-message-bytes`): INVALID_ARGUMENT,
  nothing stored;
- a failure a retry may cure (database unavailable, daemon draining):
  UNAVAILABLE, which OTLP exporters retry with backoff; the spans already
  stored are not stored twice.

With several replicas on one database, the spans of a trace whose run
another replica owns are sent on to that replica (one Export per owner,
with the caller's token, within the caller's deadline, see
transport/peers.py), and its answer is merged into this one, so an
exporter may send any trace to any replica.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.trace.v1 import trace_pb2

from aivcs_ledgerd.ledger import Ledger, keys
from aivcs_ledgerd.ledger.errors import InvalidArgument, Unavailable
from aivcs_ledgerd.ledger.limits import Limits
from aivcs_ledgerd.methods import TRACE_SERVICE
from aivcs_ledgerd.otlp.recorder import Outcome, TraceRecorder
from aivcs_ledgerd.otlp.spans import SpanRecord, SpanRefused, map_span
from aivcs_ledgerd.transport.peers import (
    ATTEMPTS,
    OwnerMoved,
    OwnerUnreachable,
    Peers,
    Relayed,
    is_forwarded,
    not_owner,
)
from aivcs_ledgerd.transport.status import guarded

Context = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger(__name__)

SERVICE_NAME = TRACE_SERVICE
# An owner's refusal the exporter should retry (its spans are not counted as rejected): the owner
# is unavailable, out of disk or over a budget, or ran out of time.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
MAX_EXPORT_SPANS = 8192  # sixteen times the OTel SDKs' default export batch (512)
MAX_MESSAGES_SHOWN = 3  # refusals quoted in partial_success.error_message


# Where a mapped span came from in the request: resource_spans and scope_spans indexes, and the span.
Source = tuple[int, int, trace_pb2.Span]


@dataclass(slots=True)
class _Answers:
    """The request's outcome so far: refusals here, and what the owners of other traces answered."""

    refusals: list[str] = field(default_factory=list)
    rejected_elsewhere: int = 0
    messages_elsewhere: list[str] = field(default_factory=list)
    retryable: str | None = None


def _subset(request: pb.ExportTraceServiceRequest, sources: list[Source]) -> pb.ExportTraceServiceRequest:
    """A request of just these spans, in this order, each under its own resource and scope."""
    subset = pb.ExportTraceServiceRequest()
    last: tuple[int, int] | None = None
    scope_spans: Any = None
    for resource_index, scope_index, span in sources:
        if (resource_index, scope_index) != last:
            resource_spans = request.resource_spans[resource_index]
            scope = resource_spans.scope_spans[scope_index]
            added = subset.resource_spans.add(resource=resource_spans.resource, schema_url=resource_spans.schema_url)
            scope_spans = added.scope_spans.add(scope=scope.scope, schema_url=scope.schema_url)
            last = (resource_index, scope_index)
        scope_spans.spans.append(span)
    return subset


class TraceServiceServicer:
    def __init__(self, ledger: Ledger, limits: Limits, peers: Peers | None = None) -> None:
        self._recorder = TraceRecorder(ledger)
        self._limits = limits
        self._draining = ledger.draining
        self._ownership = ledger.ownership
        self._peers = peers or Peers()

    @guarded
    async def Export(self, request: pb.ExportTraceServiceRequest, context: Context) -> pb.ExportTraceServiceResponse:
        total = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        if total > MAX_EXPORT_SPANS:
            raise InvalidArgument(
                "resource_spans",
                f"the request holds {total} spans; at most {MAX_EXPORT_SPANS} are taken per Export "
                "(lower the exporter's max export batch size); nothing was stored",
            )
        if self._draining.is_set():
            raise Unavailable("the daemon is shutting down; export again to another replica or later")
        answers = _Answers()
        records: dict[str, list[SpanRecord]] = {}  # by run
        sources: dict[str, list[Source]] = {}
        for resource_index, resource_spans in enumerate(request.resource_spans):
            for scope_index, scope_spans in enumerate(resource_spans.scope_spans):
                for span in scope_spans.spans:
                    try:
                        record = map_span(
                            resource_spans.resource, scope_spans.scope, span, self._limits.max_payload_bytes
                        )
                    except SpanRefused as refused:
                        answers.refusals.append(str(refused))
                        continue
                    records.setdefault(record.run_id, []).append(record)
                    sources.setdefault(record.run_id, []).append((resource_index, scope_index, span))
        moved = self._merge(answers, await self._recorder.record([r for rs in records.values() for r in rs]))
        if moved and is_forwarded(context):
            raise not_owner(f"the runs of traces {', '.join(sorted(moved)[:MAX_MESSAGES_SHOWN])}")
        for _attempt in range(ATTEMPTS):
            if not moved or answers.retryable is not None:
                break
            moved = await self._elsewhere(request, moved, records, sources, answers, context)
        if moved and answers.retryable is None:
            answers.retryable = "the runs of some traces kept moving between replicas"
        if answers.retryable is not None:
            raise Unavailable(
                f"some spans could not be stored ({answers.retryable}); export the request again: "
                "spans already stored are not stored twice"
            )
        response = pb.ExportTraceServiceResponse()
        rejected = len(answers.refusals) + answers.rejected_elsewhere
        if rejected:
            shown = "; ".join([*answers.refusals[:MAX_MESSAGES_SHOWN], *answers.messages_elsewhere])
            more = len(answers.refusals) - MAX_MESSAGES_SHOWN
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = f"{rejected} of {total} spans rejected: {shown}" + (
                f" (and {more} more)" if more > 0 else ""
            )
            log.info("Export: %s", response.partial_success.error_message, extra={"method": "Export"})
        return response

    @staticmethod
    def _merge(answers: _Answers, outcome: Outcome) -> dict[str, str | None]:
        """Add what was stored here to `answers`; the traces whose runs another replica owns."""
        answers.refusals.extend(outcome.refusals)
        answers.retryable = answers.retryable or outcome.retryable
        return outcome.moved

    async def _elsewhere(
        self,
        request: pb.ExportTraceServiceRequest,
        moved: dict[str, str | None],
        records: dict[str, list[SpanRecord]],
        sources: dict[str, list[Source]],
        answers: _Answers,
        context: Context,
    ) -> dict[str, str | None]:
        """Send moved traces to their owners (one Export per owner), or store here those nobody owns now.

        Returns the traces that moved again, to be tried once more.
        """
        owners: dict[str, list[str]] = {}
        here: list[SpanRecord] = []
        for run_id, address in moved.items():
            owner = address or await self._ownership.locate(keys.of_run(run_id))
            if owner is None:
                here.extend(records[run_id])
            else:
                owners.setdefault(owner, []).append(run_id)
        again = self._merge(answers, await self._recorder.record(here)) if here else {}
        for owner, run_ids in owners.items():
            subset = _subset(request, [source for run_id in run_ids for source in sources[run_id]])
            try:
                answer: pb.ExportTraceServiceResponse = await self._peers.unary(
                    owner, "TraceService", "Export", subset, context
                )
            except OwnerMoved:
                for run_id in run_ids:
                    self._ownership.forget_remote(keys.of_run(run_id))
                    again[run_id] = None
                continue
            except OwnerUnreachable as unreachable:
                for run_id in run_ids:
                    self._ownership.forget_remote(keys.of_run(run_id))
                answers.retryable = answers.retryable or str(unreachable)
                continue
            except Relayed as refused:
                if refused.relayed_code in RETRYABLE_CODES:
                    answers.retryable = answers.retryable or str(refused)
                else:
                    spans = sum(len(sources[run_id]) for run_id in run_ids)
                    answers.rejected_elsewhere += spans
                    answers.messages_elsewhere.append(
                        f"{spans} spans refused by the replica owning their runs: {refused}"
                    )
                continue
            if answer.HasField("partial_success") and answer.partial_success.rejected_spans:
                answers.rejected_elsewhere += answer.partial_success.rejected_spans
                answers.messages_elsewhere.append(answer.partial_success.error_message)
        return again
