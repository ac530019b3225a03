"""OTLP trace ingestion against IngestEvents, with the same events.

Spans are GenAI `chat` spans (six attributes, token usage, one span event),
all children of one trace whose root is never sent, so the trace's run
stays RUNNING and every span becomes one event of it. They go out as
Export requests of SPANS_PER_EXPORT spans (the OTel SDKs' default batch),
EXPORTS_IN_FLIGHT at a time on one channel, as a few exporting processes
would send them.

The same spans, mapped by the daemon's own mapping (aivcs_ledgerd.otlp.spans),
are then sent as IngestEvents batches of SPANS_PER_EXPORT events on one
pipelined stream into another run: same kinds, payloads and timestamps,
as an agent writing ledger calls itself would send them. The ratio is what
the OTLP path costs on top (span mapping, one batch and one idempotency key
per span). Both loads run in the benchmark's own process, built before the
clock starts, and every answer is checked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from functools import partial

import grpc
from aivcs.ledger.v1 import event_pb2, event_stream_pb2, event_stream_pb2_grpc, run_ledger_pb2, run_ledger_pb2_grpc
from google.protobuf import struct_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from aivcs_ledgerd.otlp.spans import map_span
from bench import workload
from bench.loads import CHANNEL_OPTIONS, BenchError
from bench.report import Row
from bench.sizes import Sizes
from bench.stats import Rate
from harness.proc import cpu_seconds

SPANS_PER_EXPORT = 512
EXPORTS_IN_FLIGHT = 4
TRACE_ID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
ROOT_SPAN = bytes.fromhex("b7ad6b7169203331")
INGEST_RUN = "bench-otlp-same-events"


def span_count(sizes: Sizes) -> int:
    """About half the batched figure's events, in whole exports."""
    return max(4, sizes.batch_events // (2 * SPANS_PER_EXPORT)) * SPANS_PER_EXPORT


def _text(key: str, value: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def _number(key: str, value: int) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(int_value=value))


def _span(n: int, start_ns: int) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=TRACE_ID,
        span_id=(n + 1).to_bytes(8, "big"),
        parent_span_id=ROOT_SPAN,
        name="chat gpt-4o",
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start_ns + n * 1000,
        end_time_unix_nano=start_ns + n * 1000 + 750,
        attributes=[
            _text("gen_ai.operation.name", "chat"),
            _text("gen_ai.provider.name", "openai"),
            _text("gen_ai.request.model", "gpt-4o"),
            _number("gen_ai.usage.input_tokens", 100 + n % 50),
            _number("gen_ai.usage.output_tokens", 20 + n % 10),
            _text("gen_ai.response.finish_reasons", workload.TEXT),
        ],
        events=[
            trace_pb2.Span.Event(
                time_unix_nano=start_ns + n * 1000 + 500, name="gen_ai.choice", attributes=[_number("index", 0)]
            )
        ],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_OK),
    )


def requests(spans: int) -> tuple[list[ts.ExportTraceServiceRequest], list[event_stream_pb2.IngestEventsRequest]]:
    """The Export requests, and IngestEvents batches of the very events the daemon makes of them."""
    resource = resource_pb2.Resource(attributes=[_text("service.name", "bench-agent"), _text("service.version", "1")])
    scope = common_pb2.InstrumentationScope(name="bench")
    start_ns = time.time_ns()
    exports: list[ts.ExportTraceServiceRequest] = []
    batches: list[event_stream_pb2.IngestEventsRequest] = []
    for first in range(0, spans, SPANS_PER_EXPORT):
        chunk = [_span(n, start_ns) for n in range(first, first + SPANS_PER_EXPORT)]
        exports.append(
            ts.ExportTraceServiceRequest(
                resource_spans=[
                    trace_pb2.ResourceSpans(
                        resource=resource, scope_spans=[trace_pb2.ScopeSpans(scope=scope, spans=chunk)]
                    )
                ]
            )
        )
        events = []
        for span in chunk:
            mapped = map_span(resource, scope, span, 1 << 20).event
            payload = struct_pb2.Struct()
            payload.update(mapped.payload)
            item = event_pb2.EventInput(kind=mapped.kind, payload=payload)
            assert mapped.timestamp_ns is not None
            item.timestamp.seconds, item.timestamp.nanos = divmod(mapped.timestamp_ns, 1_000_000_000)
            events.append(item)
        batches.append(
            event_stream_pb2.IngestEventsRequest(batch_id=len(batches) + 1, run_id=INGEST_RUN, events=events)
        )
    return exports, batches


async def _export(channel: grpc.aio.Channel, exports: list[ts.ExportTraceServiceRequest]) -> None:
    call = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=ts.ExportTraceServiceRequest.SerializeToString,
        response_deserializer=ts.ExportTraceServiceResponse.FromString,
    )
    pending: Iterator[ts.ExportTraceServiceRequest] = iter(exports)

    async def exporter() -> None:
        for request in pending:
            reply = await call(request, timeout=120)
            assert isinstance(reply, ts.ExportTraceServiceResponse)
            if reply.HasField("partial_success"):
                raise BenchError(f"Export rejected spans: {reply.partial_success.error_message}")

    await asyncio.gather(*(exporter() for _ in range(EXPORTS_IN_FLIGHT)))


async def _ingest(channel: grpc.aio.Channel, batches: list[event_stream_pb2.IngestEventsRequest]) -> None:
    stub = event_stream_pb2_grpc.EventStreamStub(channel)
    async for reply in stub.IngestEvents(iter(batches), timeout=600):
        if reply.HasField("error"):
            raise BenchError(f"batch {reply.batch_id} refused: {reply.error.code} {reply.error.message}")


async def _measure(target: str, pid: int, spans: int) -> tuple[Rate, Rate]:
    exports, batches = requests(spans)
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
        await runs.CreateRun(workload.create_request(INGEST_RUN))
        rates = []
        for load in (partial(_ingest, channel, batches), partial(_export, channel, exports)):
            cpu, wall, own = cpu_seconds(pid), time.monotonic(), time.process_time()
            await load()
            seconds = time.monotonic() - wall
            rate = Rate(spans, seconds)
            rate.server_cpu = (cpu_seconds(pid) - cpu) / seconds
            rate.client_cpu = (time.process_time() - own) / seconds
            rates.append(rate)
        for run_id in (INGEST_RUN, TRACE_ID.hex()):
            stored = (await runs.GetRun(run_ledger_pb2.GetRunRequest(run_id=run_id))).run.total_events
            if stored != spans:
                raise BenchError(f"run {run_id} holds {stored} events, not {spans}")
    return rates[0], rates[1]


def measure(target: str, pid: int, sizes: Sizes) -> tuple[Rate, Rate]:
    """(IngestEvents, Export) rates for the same spans."""
    return asyncio.run(_measure(target, pid, span_count(sizes)))


def rows(ingest: Rate, export: Rate) -> list[Row]:
    ratio = export.per_second / ingest.per_second
    return [
        Row(
            "otlp_export",
            f"OTLP Export, {SPANS_PER_EXPORT} spans/request, {EXPORTS_IN_FLIGHT} in flight",
            export.per_second,
            "spans/s",
            ingest.per_second,
            f"IngestEvents {SPANS_PER_EXPORT}/msg",
            ratio,
            "(none)",
            None,
        )
    ]


def main() -> None:
    """`python -m bench.otlp_figures [--spans N]`: this figure alone, on a fresh daemon."""
    import argparse
    import tempfile
    from pathlib import Path

    from bench.servers import start_ledger_daemon

    parser = argparse.ArgumentParser(prog="python -m bench.otlp_figures", description=main.__doc__)
    parser.add_argument("--spans", type=int, default=20 * SPANS_PER_EXPORT, help="spans per load (whole requests)")
    spans = max(1, parser.parse_args().spans // SPANS_PER_EXPORT) * SPANS_PER_EXPORT
    with tempfile.TemporaryDirectory(prefix="aivcs-bench-otlp-") as folder:
        daemon = start_ledger_daemon(Path(folder))
        try:
            ingest, export = asyncio.run(_measure(daemon.target, daemon.process.pid, spans))
        finally:
            daemon.stop(timeout=120)
    for row in rows(ingest, export):
        print(
            f"{row.figure}: {row.value:,.0f} {row.unit}; {row.reference_name}: {row.reference:,.0f}; "
            f"ratio {row.ratio:.2f}"
        )
    for name, rate in (("IngestEvents", ingest), ("Export", export)):
        print(f"  {name}: server {rate.server_cpu:.2f} cores, client {rate.client_cpu:.2f} cores busy")


if __name__ == "__main__":
    main()
