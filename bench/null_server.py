"""The no-storage ceiling: EventStream with the daemon's message shapes and no work.

AppendEvents and IngestEvents answer at once with made-up, contiguous
seqs per run; RunLedger.GetRun answers with one fixed run of the daemon's
shape (for the sequential-latency ceiling). Run as its own process (`python -m bench.null_server`) like
the daemon, so the ceiling pays the same loopback and process costs and
differs only by everything the daemon does with a batch. It runs on the
event loop the daemon's default picks (aivcs_ledgerd.process.event_loop),
so a faster loop lowers the ceiling's cost as much as the daemon's.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import grpc
from aivcs.ledger.v1 import event_stream_pb2 as pb
from aivcs.ledger.v1 import event_stream_pb2_grpc, run_ledger_pb2, run_ledger_pb2_grpc, run_pb2

from aivcs_ledgerd.ledger.limits import Limits
from aivcs_ledgerd.process import event_loop

Context = grpc.aio.ServicerContext[Any, Any]


class NullEventStream(event_stream_pb2_grpc.EventStreamServicer):
    def __init__(self) -> None:
        self._last: defaultdict[str, int] = defaultdict(int)

    def _assign(self, run_id: str, count: int) -> tuple[int, int]:
        first = self._last[run_id] + 1
        self._last[run_id] += count
        return first, self._last[run_id]

    async def AppendEvents(self, request: pb.AppendEventsRequest, context: Context) -> pb.AppendEventsResponse:
        first, last = self._assign(request.run_id, len(request.events))
        return pb.AppendEventsResponse(first_seq=first, last_seq=last)

    async def IngestEvents(
        self, request_iterator: AsyncIterator[pb.IngestEventsRequest], context: Context
    ) -> AsyncIterator[pb.IngestEventsResponse]:
        async for request in request_iterator:
            first, last = self._assign(request.run_id, len(request.events))
            yield pb.IngestEventsResponse(batch_id=request.batch_id, first_seq=first, last_seq=last)

    async def ReadEvents(self, request: pb.ReadEventsRequest, context: Context) -> AsyncIterator[pb.ReadEventsResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the no-storage server stores nothing to read")
        yield pb.ReadEventsResponse()

    async def SubscribeEvents(
        self, request: pb.SubscribeEventsRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeEventsResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the no-storage server stores nothing to follow")
        yield pb.SubscribeEventsResponse()


class NullRunLedger(run_ledger_pb2_grpc.RunLedgerServicer):
    """GetRun only: the same run, with the fields a stored run of the benchmark has, for any id."""

    def __init__(self) -> None:
        self._run = run_pb2.Run(
            spec_digest="0" * 64,
            agent_name="bench-agent",
            status=run_pb2.RUN_STATUS_RUNNING,
            total_events=1000,
            events_digest="0" * 64,
        )
        self._run.created_at.GetCurrentTime()

    async def GetRun(self, request: run_ledger_pb2.GetRunRequest, context: Context) -> run_ledger_pb2.GetRunResponse:
        run = run_pb2.Run()
        run.CopyFrom(self._run)
        run.run_id = request.run_id
        return run_ledger_pb2.GetRunResponse(run=run)


async def serve(listen: str) -> None:
    limit = Limits().max_message_bytes  # the daemon's default message limits
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    )
    event_stream_pb2_grpc.add_EventStreamServicer_to_server(NullEventStream(), server)
    # The generated stub marks every servicer method abstract; at run time the base answers UNIMPLEMENTED
    # for the ones not overridden, which is what this server means to do.
    run_ledger_pb2_grpc.add_RunLedgerServicer_to_server(NullRunLedger(), server)  # type: ignore[abstract]
    port = server.add_insecure_port(listen)
    await server.start()
    # The line harness/daemon.py waits for, so both servers start the same way.
    print(f"listening on {listen} (port {port}), no storage, event loop {event_loop.running_loop_name()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--event-loop", choices=event_loop.CHOICES, default="auto", help="as the daemon's flag")
    args = parser.parse_args()
    event_loop.run(serve(args.listen), event_loop.loop_factory(args.event_loop))


if __name__ == "__main__":
    main()
