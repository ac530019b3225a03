"""OTLP Export through several replicas: a trace's spans reach the replica owning its run, wherever they are sent."""

from __future__ import annotations

from pathlib import Path

import grpc
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1 import run_pb2
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SpanExportResult

from harness.replicas import start_replicas, stop_replicas
from harness.surrealdb_stand_in import stand_in_server
from tests.test_otlp import agent_trace, export, get_run, raw_export, read_events, record, run_id_of


def test_spans_sent_to_replicas_that_do_not_own_their_runs_are_stored_by_the_owners(tmp_path: Path) -> None:
    with stand_in_server(tmp_path) as server:
        replicas = start_replicas(tmp_path, server.url, 3)
        a, b, c = replicas
        try:
            channels = [grpc.insecure_channel(r.target) for r in replicas]
            ch_a, ch_b, ch_c = channels
            tracer, memory = record()
            for agent in ("one", "two", "three"):
                agent_trace(tracer, agent=agent)
            spans = memory.get_finished_spans()
            one, two, three = spans[0:3], spans[3:6], spans[6:9]

            # Each trace's first span goes to a different replica, which creates the run and owns it.
            assert not raw_export(ch_a, one[:1]).HasField("partial_success")
            assert not raw_export(ch_a, two[:1]).HasField("partial_success")
            assert not raw_export(ch_b, three[:1]).HasField("partial_success")

            # The rest of trace one through B: stored by A, in the order sent, and the root ends the run.
            reply = raw_export(ch_b, one[1:])
            assert not reply.HasField("partial_success"), reply
            run = get_run(ch_c, run_id_of(one))
            assert (run.status, run.total_events, run.agent_name) == (run_pb2.RUN_STATUS_COMPLETED, 3, "one")
            assert [e.kind for e in read_events(ch_c, run.run_id)] == ["chat", "execute_tool", "invoke_agent"]

            # Two traces owned by A and B in one request to C, with one span no replica can store:
            # that one is rejected once, the others are stored by their owners.
            request = encode_spans([*two[1:], *three[1:]])
            bad = request.resource_spans[0].scope_spans[0].spans.add()
            bad.CopyFrom(request.resource_spans[0].scope_spans[0].spans[0])
            bad.span_id = b"\0" * 8
            reply = raw_export(ch_c, request)
            assert reply.partial_success.rejected_spans == 1, reply
            assert "span_id" in reply.partial_success.error_message, reply
            for trace in (two, three):
                run = get_run(ch_a, run_id_of(trace))
                assert (run.status, run.total_events) == (run_pb2.RUN_STATUS_COMPLETED, 3)
                assert [e.seq for e in read_events(ch_a, run.run_id)] == [1, 2, 3]
                assert RunLedgerStub(ch_b).VerifyRun(rl.VerifyRunRequest(run_id=run.run_id), timeout=30).ok

            # The SDK's exporter resending everything to C: nothing refused, nothing stored twice.
            assert export(c.target, spans) is SpanExportResult.SUCCESS
            for trace in (one, two, three):
                assert get_run(ch_b, run_id_of(trace)).total_events == 3
            for trace, owner in ((one, a), (two, a), (three, b)):
                for other in replicas:
                    if other is not owner:
                        assert f"took ownership of run:{run_id_of(trace)} " not in other.log()
            for channel in channels:
                channel.close()
        finally:
            stop_replicas(replicas)
