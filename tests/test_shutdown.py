"""Draining on SIGTERM: long-lived streams end promptly and nothing acknowledged is lost."""

from __future__ import annotations

import queue
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
from aivcs.ledger.v1 import event_pb2, event_stream_pb2, event_stream_pb2_grpc, run_ledger_pb2, run_ledger_pb2_grpc

from harness.daemon import start_daemon

SPEC = "c" * 64


def test_idle_streams_do_not_hold_shutdown(tmp_path: Path) -> None:
    """An idle IngestEvents stream and a live subscription end with UNAVAILABLE well before the grace period."""
    daemon = start_daemon(tmp_path, db=f"surrealkv://{tmp_path / 'kv'}", extra=["--grace-period", "30"])
    channel = daemon.channel()
    runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
    events = event_stream_pb2_grpc.EventStreamStub(channel)
    run_id = f"drain-{uuid.uuid4()}"
    runs.CreateRun(run_ledger_pb2.CreateRunRequest(spec_digest=SPEC, agent_name="drain", run_id=run_id))

    outbox: queue.Queue[event_stream_pb2.IngestEventsRequest | None] = queue.Queue()
    outbox.put(event_stream_pb2.IngestEventsRequest(batch_id=1, run_id=run_id, events=[event_pb2.EventInput(kind="k")]))
    ingest = events.IngestEvents(iter(outbox.get, None))
    subscription = events.SubscribeEvents(event_stream_pb2.SubscribeEventsRequest(run_id=run_id))
    ack = next(ingest)
    assert (ack.batch_id, ack.first_seq, ack.last_seq) == (1, 1, 1)
    assert [e.seq for e in next(subscription).events] == [1]

    endings: dict[str, grpc.StatusCode] = {}

    def drain(name: str, stream: Iterator[object]) -> None:
        try:
            for _ in stream:
                pass
            endings[name] = grpc.StatusCode.OK
        except grpc.RpcError as error:
            endings[name] = error.code()

    threads = [threading.Thread(target=drain, args=item) for item in (("ingest", ingest), ("subscribe", subscription))]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=25) == 0
    elapsed = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=5)
    outbox.put(None)
    channel.close()
    assert endings == {"ingest": grpc.StatusCode.UNAVAILABLE, "subscribe": grpc.StatusCode.UNAVAILABLE}
    assert elapsed < 10, f"shutdown took {elapsed:.1f}s with a 30s grace period"

    # The acknowledged event survived the restart.
    again = start_daemon(tmp_path, db=f"surrealkv://{tmp_path / 'kv'}")
    try:
        with again.channel() as ch:
            run = run_ledger_pb2_grpc.RunLedgerStub(ch).GetRun(run_ledger_pb2.GetRunRequest(run_id=run_id)).run
        assert run.total_events == 1
    finally:
        again.stop()
