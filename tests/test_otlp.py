"""OTLP/gRPC trace ingestion: the real OpenTelemetry SDK and exporter against the real daemon.

Spans are made by the SDK (TracerProvider, real tracers) and collected in
memory, then sent by the SDK's OTLP gRPC exporter, or, where a test needs
exact control of what is sent twice or in which order, encoded by the
exporter's own encoder and sent by a raw TraceService stub.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1 import run_pb2
from aivcs.ledger.v1.event_stream_pb2_grpc import EventStreamStub
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, Status, StatusCode, set_span_in_context

from aivcs_ledgerd.store import StoreUnavailable
from harness.daemon import DaemonProcess, free_port, start_daemon
from harness.faults import Send, StoreFaults, intercept
from harness.inprocess import channel, running
from harness.pki import issue
from harness.wire import field

Code = grpc.StatusCode
SPEC = "ab" * 32


def record(service: str = "planner-svc", version: str = "1.2.3", **resource: Any) -> tuple[Any, InMemorySpanExporter]:
    """A tracer whose spans are kept in memory as they end, and the memory."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.version": version, **resource})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider.get_tracer("tests.otlp"), memory


def agent_trace(tracer: Any, agent: str = "planner", fail: str | None = None) -> None:
    """invoke_agent with a chat and a tool call inside: three spans, children end first."""
    with tracer.start_as_current_span(
        f"invoke_agent {agent}", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}
    ) as root:
        with tracer.start_as_current_span(
            "chat gpt-4o",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 30,
            },
        ) as chat:
            chat.add_event("gen_ai.choice", {"index": 0, "finish_reason": "tool_calls"})
        with tracer.start_as_current_span(
            "execute_tool search",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "search",
                "gen_ai.usage.input_tokens": 5,
            },
        ):
            pass
        if fail is not None:
            root.set_status(Status(StatusCode.ERROR, fail))


def run_id_of(spans: Sequence[ReadableSpan]) -> str:
    context = spans[0].context
    assert context is not None
    return format(context.trace_id, "032x")


def export(target: str, spans: Sequence[ReadableSpan], timeout: float = 20, **options: Any) -> SpanExportResult:
    """Send with the SDK's OTLP gRPC exporter, as an instrumented agent does (it retries UNAVAILABLE)."""
    if "credentials" not in options:
        options["insecure"] = True
    exporter = OTLPSpanExporter(endpoint=target, timeout=timeout, **options)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def raw_export(
    channel: grpc.Channel, spans: Sequence[ReadableSpan] | ts.ExportTraceServiceRequest
) -> ts.ExportTraceServiceResponse:
    request = spans if isinstance(spans, ts.ExportTraceServiceRequest) else encode_spans(spans)
    reply: ts.ExportTraceServiceResponse = TraceServiceStub(channel).Export(request, timeout=60)
    return reply


def get_run(channel: grpc.Channel, run_id: str) -> run_pb2.Run:
    run: run_pb2.Run = RunLedgerStub(channel).GetRun(rl.GetRunRequest(run_id=run_id), timeout=10).run
    return run


def read_events(channel: grpc.Channel, run_id: str) -> list[Any]:
    replies = EventStreamStub(channel).ReadEvents(es.ReadEventsRequest(run_id=run_id), timeout=30)
    return [event for reply in replies for event in reply.events]


@pytest.fixture(scope="module")
def ch(daemon: DaemonProcess) -> Iterator[grpc.Channel]:
    with daemon.channel() as channel:
        yield channel


def test_a_three_span_agent_trace_becomes_one_completed_run(daemon: DaemonProcess, ch: grpc.Channel) -> None:
    tracer, memory = record()
    agent_trace(tracer)
    spans = memory.get_finished_spans()
    assert export(daemon.target, spans) is SpanExportResult.SUCCESS  # one Export with all three
    run_id = run_id_of(spans)
    run = get_run(ch, run_id)
    assert run.status == run_pb2.RUN_STATUS_COMPLETED and run.success
    assert run.agent_name == "planner"
    assert run.spec_digest == hashlib.sha256(b"planner\n1.2.3").hexdigest()
    assert run.total_events == 3
    assert (run.input_tokens, run.output_tokens) == (125, 30)
    root = spans[-1]
    assert root.end_time is not None and root.start_time is not None
    assert run.duration_ms == (root.end_time - root.start_time) // 1_000_000
    assert run.tags["service.name"] == "planner-svc"
    events = read_events(ch, run_id)
    assert [e.kind for e in events] == ["chat", "execute_tool", "invoke_agent"]
    for event, span in zip(events, spans, strict=True):
        payload = json_format.MessageToDict(event.payload)
        assert payload["name"] == span.name
        assert payload["span_id"] == format(span.context.span_id, "016x")
        assert payload["trace_id"] == run_id
        assert event.timestamp.seconds * 10**9 + event.timestamp.nanos == span.end_time
        assert payload["end_time_unix_nano"] == str(span.end_time)
    chat = json_format.MessageToDict(events[0].payload)
    assert chat["parent_span_id"] == format(root.context.span_id, "016x")
    assert chat["attributes"]["gen_ai.request.model"] == "gpt-4o"
    assert chat["events"][0]["name"] == "gen_ai.choice"
    assert chat["events"][0]["attributes"]["finish_reason"] == "tool_calls"
    assert json_format.MessageToDict(events[2].payload)["parent_span_id"] == ""


def test_an_error_root_span_fails_the_run(daemon: DaemonProcess, ch: grpc.Channel) -> None:
    tracer, memory = record()
    agent_trace(tracer, fail="the model refused")
    spans = memory.get_finished_spans()
    assert export(daemon.target, spans) is SpanExportResult.SUCCESS
    run = get_run(ch, run_id_of(spans))
    assert run.status == run_pb2.RUN_STATUS_FAILED and not run.success
    assert run.status_reason == "the model refused"
    assert run.total_events == 3
    status = json_format.MessageToDict(read_events(ch, run.run_id)[-1].payload)["status"]
    assert status == {"code": "ERROR", "message": "the model refused"}


def test_an_exception_in_the_root_span_fails_the_run_with_its_message(daemon: DaemonProcess, ch: grpc.Channel) -> None:
    tracer, memory = record()
    with pytest.raises(RuntimeError), tracer.start_as_current_span("invoke_agent x"):
        raise RuntimeError("tool crashed")
    spans = memory.get_finished_spans()
    assert export(daemon.target, spans) is SpanExportResult.SUCCESS
    run = get_run(ch, run_id_of(spans))
    assert run.status == run_pb2.RUN_STATUS_FAILED
    assert "tool crashed" in run.status_reason
    assert run.agent_name == "planner-svc"  # no gen_ai.agent.name: the service's name


def test_a_resent_request_stores_nothing_twice(daemon: DaemonProcess, ch: grpc.Channel) -> None:
    tracer, memory = record()
    agent_trace(tracer)
    spans = memory.get_finished_spans()
    children, root = spans[:2], spans[2:]
    for _ in range(2):
        assert not raw_export(ch, children).HasField("partial_success")
    run = get_run(ch, run_id_of(spans))
    assert (run.status, run.total_events, run.input_tokens) == (run_pb2.RUN_STATUS_RUNNING, 2, 125)
    for _ in range(2):  # the root too: a resent root of a completed run is no refusal
        reply = raw_export(ch, spans)
        assert not reply.HasField("partial_success"), reply
    run = get_run(ch, run.run_id)
    assert (run.status, run.total_events, run.input_tokens, run.output_tokens) == (
        run_pb2.RUN_STATUS_COMPLETED,
        3,
        125,
        30,
    )
    assert [e.seq for e in read_events(ch, run.run_id)] == [1, 2, 3]
    assert export(daemon.target, root) is SpanExportResult.SUCCESS
    assert get_run(ch, run.run_id).total_events == 3


def test_out_of_order_spans_in_separate_exports(daemon: DaemonProcess, ch: grpc.Channel) -> None:
    tracer, memory = record(service="research-svc", version="2.0")
    agent_trace(tracer, agent="researcher")
    chat, tool, root = memory.get_finished_spans()
    run_id = run_id_of([root])
    assert export(daemon.target, [tool]) is SpanExportResult.SUCCESS  # the later child first
    run = get_run(ch, run_id)
    # Created from a child span: the service names the run until the root says otherwise.
    assert (run.status, run.agent_name) == (run_pb2.RUN_STATUS_RUNNING, "research-svc")
    assert export(daemon.target, [chat]) is SpanExportResult.SUCCESS
    assert export(daemon.target, [root]) is SpanExportResult.SUCCESS
    run = get_run(ch, run_id)
    assert run.status == run_pb2.RUN_STATUS_COMPLETED
    assert run.agent_name == "researcher"
    assert run.spec_digest == hashlib.sha256(b"researcher\n2.0").hexdigest()  # the derived digest follows
    assert [e.kind for e in read_events(ch, run_id)] == ["execute_tool", "chat", "invoke_agent"]  # arrival order
    listed = RunLedgerStub(ch).ListRuns(rl.ListRunsRequest(agent_name="researcher"), timeout=10).runs
    assert run_id in {r.run_id for r in listed}

    # A span of the trace after its root: refused in the partial-success answer, run unchanged.
    with tracer.start_as_current_span("late", context=None) as late:
        pass
    late_span = memory.get_finished_spans()[-1]
    request = encode_spans([late_span])
    moved = request.resource_spans[0].scope_spans[0].spans[0]
    moved.trace_id = bytes.fromhex(run_id)
    moved.parent_span_id = bytes.fromhex(format(root.context.span_id, "016x"))
    reply = raw_export(ch, request)
    assert reply.partial_success.rejected_spans == 1
    assert "COMPLETED" in reply.partial_success.error_message, reply
    assert late.get_span_context().span_id != 0
    assert get_run(ch, run_id).total_events == 3


def test_spans_of_two_processes_with_an_explicit_spec_digest_and_git_sha(
    daemon: DaemonProcess, ch: grpc.Channel
) -> None:
    tracer, memory = record(
        service="front",
        **{"aivcs.spec_digest": SPEC.upper(), "vcs.ref.head.revision": "abc123", "aivcs.tag.team": "search"},
    )
    with (
        tracer.start_as_current_span("invoke_agent", attributes={"gen_ai.agent.name": "front-agent"}),
        tracer.start_as_current_span("call worker"),
    ):
        pass
    call, root = memory.get_finished_spans()
    worker_tracer, worker_memory = record(service="worker")
    # The worker process continues the trace under the front's span (context propagation).
    with worker_tracer.start_as_current_span(
        "chat",
        context=set_span_in_context(NonRecordingSpan(call.context)),
        attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 7},
    ):
        pass
    [worker] = worker_memory.get_finished_spans()
    assert export(daemon.target, [worker]) is SpanExportResult.SUCCESS
    assert export(daemon.target, [call, root]) is SpanExportResult.SUCCESS
    run = get_run(ch, run_id_of([root]))
    assert run.status == run_pb2.RUN_STATUS_COMPLETED
    assert (run.agent_name, run.total_events, run.output_tokens) == ("front-agent", 3, 7)
    # The worker's span created the run, with a digest derived from its resource; the root's explicit one wins.
    assert run.spec_digest == SPEC
    assert not run.HasField("git_sha")  # git_sha and tags come from the span that created the run
    services = [json_format.MessageToDict(e.payload)["service_name"] for e in read_events(ch, run.run_id)]
    assert services == ["worker", "front", "front"]

    tracer, memory = record(
        service="front",
        **{"aivcs.spec_digest": SPEC.upper(), "vcs.ref.head.revision": "abc123", "aivcs.tag.team": "search"},
    )
    agent_trace(tracer)
    spans = memory.get_finished_spans()
    assert export(daemon.target, spans) is SpanExportResult.SUCCESS
    run = get_run(ch, run_id_of(spans))
    assert (run.spec_digest, run.git_sha, run.tags["team"]) == (SPEC, "abc123", "search")


# --- TLS and tokens -----------------------------------------------------------------------------------


def test_tls_and_bearer_tokens_with_the_exporters_headers(tmp_path: Path) -> None:
    ca = issue("test ca", None, ca=True)
    server = issue("localhost", ca, ca=False, server=True)
    (tmp_path / "server.pem").write_bytes(server.cert)
    (tmp_path / "server.key").write_bytes(server.key)
    (tmp_path / "tokens").write_text("read-write writer-token\nread-only reader-token\n")
    health = free_port()
    proc = start_daemon(
        tmp_path,
        health_port=health,
        extra=[
            "--tls-cert",
            str(tmp_path / "server.pem"),
            "--tls-key",
            str(tmp_path / "server.key"),
            "--auth-token-file",
            str(tmp_path / "tokens"),
            "--health-listen",
            f"127.0.0.1:{health}",
        ],
    )
    try:
        port = proc.target.rpartition(":")[2]
        target = f"localhost:{port}"
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert)
        tracer, memory = record()
        agent_trace(tracer)
        spans = memory.get_finished_spans()
        for headers in ({}, {"authorization": "Bearer reader-token"}, {"authorization": "Bearer wrong"}):
            assert export(target, spans, credentials=credentials, headers=headers) is SpanExportResult.FAILURE
        assert (
            export(target, spans, timeout=2, insecure=True, headers={"authorization": "Bearer writer-token"})
            is SpanExportResult.FAILURE
        )  # no TLS
        with grpc.secure_channel(target, credentials) as channel:
            for token, code in ((None, Code.UNAUTHENTICATED), ("reader-token", Code.PERMISSION_DENIED)):
                metadata = [("authorization", f"Bearer {token}")] if token else []
                with pytest.raises(grpc.RpcError) as refused:
                    TraceServiceStub(channel).Export(encode_spans(spans), metadata=metadata, timeout=10)
                assert refused.value.code() == code
            assert (
                export(target, spans, credentials=credentials, headers={"authorization": "Bearer writer-token"})
                is SpanExportResult.SUCCESS
            )
            run = (
                RunLedgerStub(channel)
                .GetRun(
                    rl.GetRunRequest(run_id=run_id_of(spans)),
                    timeout=10,
                    metadata=[("authorization", "Bearer reader-token")],
                )
                .run
            )
            assert (run.status, run.total_events) == (run_pb2.RUN_STATUS_COMPLETED, 3)
    finally:
        assert proc.stop() == 0


# --- hostile input ------------------------------------------------------------------------------------


def one_span_request(tracer: Any, memory: InMemorySpanExporter) -> ts.ExportTraceServiceRequest:
    memory.clear()
    with tracer.start_as_current_span("invoke_agent hostile"):
        pass
    return encode_spans(memory.get_finished_spans())


def nested(depth: int) -> common_pb2.AnyValue:
    value = common_pb2.AnyValue(string_value="bottom")
    for _ in range(depth):
        value = common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[value]))
    return value


def test_huge_values_and_deep_arrays_are_bounded(ch: grpc.Channel) -> None:
    tracer, memory = record()
    request = one_span_request(tracer, memory)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="huge").value.string_value = "é" * 3_000_000  # 6 MB of UTF-8
    span.attributes.add(key="deep").value.CopyFrom(nested(40))
    span.attributes.add(key="nan").value.double_value = float("nan")
    span.attributes.add(key="big").value.int_value = 2**62
    span.attributes.add(key="bytes").value.bytes_value = b"\x00\xff"
    for i in range(1500):
        span.attributes.add(key=f"a{i}").value.int_value = i
    reply = raw_export(ch, request)
    assert not reply.HasField("partial_success"), reply
    run_id = span.trace_id.hex()
    [event] = read_events(ch, run_id)
    payload = json_format.MessageToDict(event.payload)
    attributes = payload["attributes"]
    assert len(attributes["huge"].encode()) <= 64 << 10 and set(attributes["huge"]) == {"é"}
    deep = attributes["deep"]
    for _ in range(8):
        [deep] = deep
    assert deep == "[nested deeper than 8 levels]"
    assert (attributes["nan"], attributes["big"], attributes["bytes"]) == ("NaN", str(2**62), "AP8=")
    assert payload["truncated_values"] == 2 and payload["dropped_attributes_count"] == 505
    assert get_run(ch, run_id).status == run_pb2.RUN_STATUS_COMPLETED


def test_a_span_over_the_payload_limit_or_with_bad_ids_is_rejected_alone(ch: grpc.Channel) -> None:
    tracer, memory = record()
    request = one_span_request(tracer, memory)
    good = request.resource_spans[0].scope_spans[0].spans[0]
    large = request.resource_spans[0].scope_spans[0].spans.add()
    large.CopyFrom(good)
    large.span_id = b"\x01" * 8
    large.parent_span_id = good.span_id
    for i in range(20):
        large.attributes.add(key=f"text{i}").value.string_value = "x" * 60_000  # 1.2 MB in all
    bad = request.resource_spans[0].scope_spans[0].spans.add()
    bad.CopyFrom(good)
    bad.trace_id = b"\x00" * 16
    reply = raw_export(ch, request)
    assert reply.partial_success.rejected_spans == 2, reply
    message = reply.partial_success.error_message
    assert "2 of 3 spans rejected" in message and "the limit is 1048576" in message and "trace_id" in message
    assert get_run(ch, good.trace_id.hex()).total_events == 1


def test_too_many_spans_in_one_request_is_invalid_argument_and_stores_nothing(ch: grpc.Channel) -> None:
    tracer, memory = record()
    request = one_span_request(tracer, memory)
    spans = request.resource_spans[0].scope_spans[0].spans
    template = spans[0]
    template.parent_span_id = b"\x02" * 8
    for i in range(1, 10_000):
        copy = spans.add()
        copy.CopyFrom(template)
        copy.span_id = i.to_bytes(8, "big")
    with pytest.raises(grpc.RpcError) as refused:
        raw_export(ch, request)
    assert refused.value.code() == Code.INVALID_ARGUMENT
    assert "10000 spans" in (refused.value.details() or "") and "resource_spans" in (refused.value.details() or "")
    with pytest.raises(grpc.RpcError) as missing:
        get_run(ch, template.trace_id.hex())
    assert missing.value.code() == Code.NOT_FOUND


def test_requests_that_do_not_parse_are_invalid_argument(ch: grpc.Channel) -> None:
    tracer, memory = record()
    span = one_span_request(tracer, memory).resource_spans[0].scope_spans[0].spans[0]
    value = common_pb2.AnyValue(string_value="bottom").SerializeToString()
    for _ in range(60):  # AnyValue.array_value (5) -> ArrayValue.values (1): deeper than the runtime parses
        value = field(5, field(1, value))
    span_bytes = span.SerializeToString() + field(9, field(1, b"deep") + field(2, value))  # Span.attributes
    request = field(1, field(2, field(2, span_bytes)))  # resource_spans -> scope_spans -> spans
    export_call = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    for body in (request, b"\xff\xff\xff"):
        with pytest.raises(grpc.RpcError) as refused:
            export_call(body, timeout=10)
        assert refused.value.code() == Code.INVALID_ARGUMENT, refused.value.details()
    with pytest.raises(grpc.RpcError) as missing:
        get_run(ch, span.trace_id.hex())
    assert missing.value.code() == Code.NOT_FOUND


# --- retryable failures -------------------------------------------------------------------------------


async def test_unavailable_only_while_the_database_is_down_and_a_retry_stores_each_span_once() -> None:
    tracer, memory = record()
    agent_trace(tracer)
    spans = memory.get_finished_spans()
    request = encode_spans(spans)
    async with running() as daemon, channel(daemon) as ch:
        stub = TraceServiceStub(ch)
        fault = StoreFaults(daemon)
        fault.fail()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Export(request, timeout=10)
        assert refused.value.code() == Code.UNAVAILABLE, refused.value.details()
        assert "export the request again" in (refused.value.details() or "")
        fault.restore()
        # Two exporters resending the same request at once: still one event per span.
        replies = await asyncio.gather(*(stub.Export(request, timeout=30) for _ in range(3)))
        assert not any(reply.HasField("partial_success") for reply in replies), replies
        runs = RunLedgerStub(ch)
        run = (await runs.GetRun(rl.GetRunRequest(run_id=run_id_of(spans)), timeout=10)).run
        assert (run.status, run.total_events, run.input_tokens) == (run_pb2.RUN_STATUS_COMPLETED, 3, 125)


def test_one_request_keeps_its_spans_order_and_ends_the_run_with_its_root_last(ch: grpc.Channel) -> None:
    tracer, memory = record()
    request = one_span_request(tracer, memory)  # the root comes first in this request
    spans = request.resource_spans[0].scope_spans[0].spans
    root = spans[0]
    for i in range(300):  # more than a run's writer queues at once (256 batches)
        child = spans.add()
        child.CopyFrom(root)
        child.span_id = (1000 + i).to_bytes(8, "big")
        child.parent_span_id = root.span_id
        child.name = f"step {i}"
    assert not raw_export(ch, request).HasField("partial_success")
    run = get_run(ch, root.trace_id.hex())
    assert (run.status, run.total_events) == (run_pb2.RUN_STATUS_COMPLETED, 301)
    names = [json_format.MessageToDict(e.payload)["name"] for e in read_events(ch, run.run_id)]
    assert names == [f"step {i}" for i in range(300)] + ["invoke_agent hostile"]


async def test_a_root_span_waits_for_a_retry_when_its_children_could_not_be_stored() -> None:
    tracer, memory = record()
    agent_trace(tracer)
    spans = memory.get_finished_spans()
    request = encode_spans(spans)
    async with running() as daemon, channel(daemon) as ch:
        failures = [1]  # the first append transaction (the children's) fails, as in a database hiccup

        async def flaky(real: Send, sql: str, variables: dict[str, Any]) -> dict[str, Any]:
            if "INSERT INTO run_events" in sql and failures:
                failures.pop()
                raise StoreUnavailable("injected: the append was lost")
            return await real(sql, variables)

        intercept(daemon.db, flaky)
        stub = TraceServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Export(request, timeout=10)
        assert refused.value.code() == Code.UNAVAILABLE
        runs = RunLedgerStub(ch)
        run = (await runs.GetRun(rl.GetRunRequest(run_id=run_id_of(spans)), timeout=10)).run
        assert run.status == run_pb2.RUN_STATUS_RUNNING  # not ended: the retry would find it terminal
        reply = await stub.Export(request, timeout=30)  # what the exporter does next
        assert not reply.HasField("partial_success"), reply
        run = (await runs.GetRun(rl.GetRunRequest(run_id=run.run_id), timeout=10)).run
        assert (run.status, run.total_events) == (run_pb2.RUN_STATUS_COMPLETED, 3)
