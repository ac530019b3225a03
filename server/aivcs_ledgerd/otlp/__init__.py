"""OTLP/gRPC trace ingestion: agents instrumented with OpenTelemetry record runs without ledger code.

`opentelemetry.proto.collector.trace.v1.TraceService/Export` is served on the
daemon's gRPC port, behind the same tokens (write role), interceptors and
message limits as the ledger's own services. A trace becomes a run; see
spans.py for the mapping, recorder.py for how spans reach the ledger, and
servicer.py for the answers.
"""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb

from aivcs_ledgerd.ledger import Ledger
from aivcs_ledgerd.methods import EXPORT_METHOD
from aivcs_ledgerd.otlp.servicer import SERVICE_NAME, TraceServiceServicer
from aivcs_ledgerd.transport.peers import Peers

__all__ = ["EXPORT_METHOD", "SERVICE_NAME", "TraceServiceServicer", "register_trace_service"]


def register_trace_service(server: grpc.aio.Server, ledger: Ledger, peers: Peers | None = None) -> None:
    """Add TraceService to `server`, with the official OTLP messages as (de)serialisers.

    `peers`: several replicas, the channels that send traces on to the replicas owning their runs.
    """
    servicer = TraceServiceServicer(ledger, ledger.limits, peers)
    export = grpc.unary_unary_rpc_method_handler(
        servicer.Export,
        request_deserializer=pb.ExportTraceServiceRequest.FromString,
        response_serializer=pb.ExportTraceServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE_NAME, {"Export": export})])
