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
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb

from aivcs_ledgerd.ledger import Ledger
from aivcs_ledgerd.ledger.errors import InvalidArgument, Unavailable
from aivcs_ledgerd.ledger.limits import Limits
from aivcs_ledgerd.methods import TRACE_SERVICE
from aivcs_ledgerd.otlp.recorder import TraceRecorder
from aivcs_ledgerd.otlp.spans import SpanRecord, SpanRefused, map_span
from aivcs_ledgerd.transport.status import guarded

Context = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger(__name__)

SERVICE_NAME = TRACE_SERVICE
MAX_EXPORT_SPANS = 8192  # sixteen times the OTel SDKs' default export batch (512)
MAX_MESSAGES_SHOWN = 3  # refusals quoted in partial_success.error_message


class TraceServiceServicer:
    def __init__(self, ledger: Ledger, limits: Limits) -> None:
        self._recorder = TraceRecorder(ledger)
        self._limits = limits
        self._draining = ledger.draining

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
        refusals: list[str] = []
        records: list[SpanRecord] = []
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    try:
                        records.append(
                            map_span(resource_spans.resource, scope_spans.scope, span, self._limits.max_payload_bytes)
                        )
                    except SpanRefused as refused:
                        refusals.append(str(refused))
        outcome = await self._recorder.record(records)
        if outcome.retryable is not None:
            raise Unavailable(
                f"some spans could not be stored ({outcome.retryable}); export the request again: "
                "spans already stored are not stored twice"
            )
        refusals.extend(outcome.refusals)
        response = pb.ExportTraceServiceResponse()
        if refusals:
            shown = "; ".join(refusals[:MAX_MESSAGES_SHOWN])
            more = len(refusals) - MAX_MESSAGES_SHOWN
            response.partial_success.rejected_spans = len(refusals)
            response.partial_success.error_message = f"{len(refusals)} of {total} spans rejected: {shown}" + (
                f" (and {more} more)" if more > 0 else ""
            )
            log.info("Export: %s", response.partial_success.error_message, extra={"method": "Export"})
        return response
