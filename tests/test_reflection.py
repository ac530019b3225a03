"""What reflection lists is served: every method of grpc.health.v1.Health answers, List included."""

from __future__ import annotations

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

HEALTH = "grpc.health.v1.Health"
LEDGER_SERVICES = ["aivcs.ledger.v1.RunLedger", "aivcs.ledger.v1.EventStream", "aivcs.ledger.v1.ReleaseRegistry"]
# Health answers for the OTLP trace service too (it stores runs and events).
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
ADMIN_SERVICE = "aivcs.ledger.v1.LedgerAdmin"  # backup and restore


def listed_services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (reply,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    return {service.name for service in reply.list_services_response.service}


def test_every_health_method_reflection_lists_answers(channel: grpc.Channel) -> None:
    """As grpcurl would: find the methods by reflection, build empty requests from their descriptors, call each."""
    assert HEALTH in listed_services(channel)
    service = DescriptorPool(ProtoReflectionDescriptorDatabase(channel)).FindServiceByName(HEALTH)
    assert set(service.methods_by_name) == {"Check", "List", "Watch"}
    for method in service.methods:
        request = GetMessageClass(method.input_type)()
        reply_class = GetMessageClass(method.output_type)
        path = f"/{HEALTH}/{method.name}"
        if method.server_streaming:
            replies = channel.unary_stream(
                path, request_serializer=type(request).SerializeToString, response_deserializer=reply_class.FromString
            )(request, timeout=10)
            first = next(iter(replies))
            replies.cancel()
            assert first.status == 1, method.name  # SERVING
        else:
            channel.unary_unary(
                path, request_serializer=type(request).SerializeToString, response_deserializer=reply_class.FromString
            )(request, timeout=10)


def test_health_list_reports_every_name_check_answers(channel: grpc.Channel) -> None:
    service = DescriptorPool(ProtoReflectionDescriptorDatabase(channel)).FindServiceByName(HEALTH)
    method = service.methods_by_name["List"]
    request_class, reply_class = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{HEALTH}/List",
        request_serializer=request_class.SerializeToString,
        response_deserializer=reply_class.FromString,
    )
    reply = call(request_class(), timeout=10)
    statuses = {name: entry.status for name, entry in reply.statuses.items()}
    assert statuses == {name: 1 for name in ["", "liveness", *LEDGER_SERVICES, TRACE_SERVICE, ADMIN_SERVICE]}, statuses
