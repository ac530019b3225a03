"""Abandoned runs: inactivity timeouts and Heartbeat against the real daemon.

A RUNNING run with an inactivity timeout that gets no append and no
Heartbeat for that long is FAILED by the daemon, with a status_reason saying
so, exactly once, also when several daemons share one database (the stand-in
SurrealDB server of harness/surrealdb_stand_in.py). Appends and heartbeats keep
it alive; its subscribers' streams end when it is failed.

The timeouts are short (1 to 2 s) and every wait for the daemon to act is
bounded generously (WAIT), so the tests stay fast yet pass on a loaded machine.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2, run_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1.event_stream_pb2_grpc import EventStreamStub
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub

from aivcs_ledgerd.store import Database, init_schema
from aivcs_ledgerd.store.runs import IDLE_RUNS_SQL
from aivcs_ledgerd.util.durations import format_duration_ms, parse_duration_ms
from harness.daemon import DaemonProcess, run_to_exit, start_daemon
from harness.data import SPEC
from harness.faults import Send, intercept
from harness.inprocess import Stubs, running
from harness.inprocess import channel as inprocess_channel
from harness.surrealdb_stand_in import stand_in_server

Code = grpc.StatusCode
AGENT = "inactivity-test"
WAIT = 30.0  # seconds: the longest the daemon may take to act before the test fails instead of hanging
FAILED_LINE = "run failed for inactivity"
CROWD = 200  # abandoned runs falling due together on two replicas

# A writer as an agent runs it: its own process, creates a run with a timeout, appends, then stays
# quiet (the test kills it with SIGKILL, as when an agent dies without a word).
WRITER = """
import sys, time, grpc
from aivcs.ledger.v1 import event_pb2, event_stream_pb2 as es, run_ledger_pb2 as rl
from aivcs.ledger.v1.event_stream_pb2_grpc import EventStreamStub
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub
target, spec, agent, timeout_ms, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
with grpc.insecure_channel(target) as channel:
    run = RunLedgerStub(channel).CreateRun(
        rl.CreateRunRequest(spec_digest=spec, agent_name=agent, inactivity_timeout_ms=timeout_ms), timeout=30).run
    events = [event_pb2.EventInput(kind="step") for _ in range(count)]
    EventStreamStub(channel).AppendEvents(es.AppendEventsRequest(run_id=run.run_id, events=events), timeout=30)
    print(run.run_id, flush=True)
    time.sleep(3600)
"""


def start_writers(targets: list[str], timeout_ms: int) -> list[tuple[subprocess.Popen[str], str]]:
    """Writer processes, the i-th on targets[i] appending i + 2 events, once each has created its run and
    appended; each with its run id."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, target, SPEC, AGENT, str(timeout_ms), str(index + 2)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for index, target in enumerate(targets)
    ]
    started = []
    for process in processes:
        assert process.stdout is not None
        run_id = process.stdout.readline().strip()
        assert run_id, f"a writer exited with {process.wait(timeout=WAIT)} before creating its run"
        started.append((process, run_id))
    return started


def create(runs: RunLedgerStub, timeout_ms: int | None = None, **fields: object) -> run_pb2.Run:
    request = rl.CreateRunRequest(spec_digest=SPEC, agent_name=AGENT, **fields)  # type: ignore[arg-type]
    if timeout_ms is not None:
        request.inactivity_timeout_ms = timeout_ms
    return runs.CreateRun(request, timeout=WAIT).run


def append(events: EventStreamStub, run_id: str, count: int = 1) -> None:
    batch = [event_pb2.EventInput(kind="step") for _ in range(count)]
    events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=batch), timeout=WAIT)


def get(runs: RunLedgerStub, run_id: str) -> run_pb2.Run:
    return runs.GetRun(rl.GetRunRequest(run_id=run_id), timeout=WAIT).run


def wait_terminal(runs: RunLedgerStub, run_id: str, within: float = WAIT) -> run_pb2.Run:
    deadline = time.monotonic() + within
    while True:
        run = get(runs, run_id)
        if run.status != run_pb2.RUN_STATUS_RUNNING:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still RUNNING after {within}s"
        time.sleep(0.1)


def refused(call: object, code: grpc.StatusCode) -> str:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as info:
        call()
    error = info.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code, error.details()
    return str(error.details())


def assert_failed_for_inactivity(run: run_pb2.Run, timeout_ms: int, events: int) -> None:
    assert run.status == run_pb2.RUN_STATUS_FAILED
    assert not run.success
    assert run.status_reason == f"no append or heartbeat for {format_duration_ms(timeout_ms)} (inactivity timeout)"
    assert run.total_events == events
    assert run.inactivity_timeout_ms == timeout_ms
    quiet_ns = run.completed_at.ToNanoseconds() - run.last_activity_at.ToNanoseconds()
    assert quiet_ns >= timeout_ms * 1_000_000, "failed before its timeout had passed"
    assert run.duration_ms == (run.last_activity_at.ToNanoseconds() - run.created_at.ToNanoseconds()) // 1_000_000


@pytest.fixture(scope="module")
def runs(channel: grpc.Channel) -> RunLedgerStub:
    return RunLedgerStub(channel)


@pytest.fixture(scope="module")
def events(channel: grpc.Channel) -> EventStreamStub:
    return EventStreamStub(channel)


# --- one daemon ----------------------------------------------------------------------------------------


def test_run_of_a_killed_writer_is_failed_with_the_reason(daemon: DaemonProcess, runs: RunLedgerStub) -> None:
    [(writer, run_id)] = start_writers([daemon.target], 1000)
    try:
        assert get(runs, run_id).status == run_pb2.RUN_STATUS_RUNNING
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=WAIT)
    run = wait_terminal(runs, run_id)
    assert_failed_for_inactivity(run, 1000, events=2)
    # A late heartbeat or append from a writer that comes back learns the run was ended.
    assert "FAILED" in refused(
        lambda: runs.Heartbeat(rl.HeartbeatRequest(run_id=run_id), timeout=WAIT), Code.FAILED_PRECONDITION
    )
    lines = [line for line in daemon.log().splitlines() if FAILED_LINE in line and run_id in line]
    assert len(lines) == 1, lines
    assert AGENT in lines[0] and "2 events" in lines[0] and "(inactivity timeout)" in lines[0]


def test_heartbeats_keep_a_quiet_run_alive_past_its_timeout(runs: RunLedgerStub) -> None:
    run = create(runs, 1500)
    assert run.last_activity_at == run.created_at
    last = run.last_activity_at.ToNanoseconds()
    until = time.monotonic() + 3.5  # more than two timeouts
    while time.monotonic() < until:
        beat = runs.Heartbeat(rl.HeartbeatRequest(run_id=run.run_id), timeout=WAIT).run
        assert beat.status == run_pb2.RUN_STATUS_RUNNING
        assert beat.last_activity_at.ToNanoseconds() > last
        last = beat.last_activity_at.ToNanoseconds()
        time.sleep(0.2)
    assert get(runs, run.run_id).last_activity_at.ToNanoseconds() == last
    # Heartbeats stop: the run is failed once its timeout passes.
    assert_failed_for_inactivity(wait_terminal(runs, run.run_id), 1500, events=0)


def test_appends_reset_the_timeout(runs: RunLedgerStub, events: EventStreamStub) -> None:
    run = create(runs, 1500)
    appended = 0
    until = time.monotonic() + 3.5
    while time.monotonic() < until:
        append(events, run.run_id)
        appended += 1
        now = get(runs, run.run_id)
        assert now.status == run_pb2.RUN_STATUS_RUNNING
        assert now.last_activity_at.ToNanoseconds() > run.last_activity_at.ToNanoseconds()
        run = now
        time.sleep(0.2)
    assert_failed_for_inactivity(wait_terminal(runs, run.run_id), 1500, events=appended)


def test_subscription_to_an_abandoned_run_ends_when_it_is_failed(runs: RunLedgerStub, events: EventStreamStub) -> None:
    """What `aivcs-ledger events tail --follow` relies on: the stream ends with OK once the daemon fails the run."""
    run = create(runs, 1000)
    append(events, run.run_id, 2)
    received: list[int] = []
    outcome: list[object] = []

    def follow() -> None:
        try:
            for reply in events.SubscribeEvents(es.SubscribeEventsRequest(run_id=run.run_id), timeout=WAIT):
                received.extend(event.seq for event in reply.events)
            outcome.append("ended")
        except grpc.RpcError as error:
            outcome.append(error)

    follower = threading.Thread(target=follow)
    follower.start()
    follower.join(WAIT)
    assert outcome == ["ended"], outcome
    assert received == [1, 2]
    assert_failed_for_inactivity(get(runs, run.run_id), 1000, events=2)


def test_no_timeout_unless_asked_and_zero_means_never(runs: RunLedgerStub, events: EventStreamStub) -> None:
    """This daemon has no --run-inactivity-timeout: runs without the field, and runs with 0, never time out."""
    default, zero = create(runs), create(runs, 0)
    append(events, default.run_id)
    timed = create(runs, 1000)  # a run beside them that does time out: the sweeper ran meanwhile
    assert_failed_for_inactivity(wait_terminal(runs, timed.run_id), 1000, events=0)
    time.sleep(1.5)
    for run in (default, zero):
        now = get(runs, run.run_id)
        assert now.status == run_pb2.RUN_STATUS_RUNNING
        assert now.inactivity_timeout_ms == 0
    # An explicit finish of a run with a timeout wins, and the sweeper leaves it alone afterwards.
    finished = create(runs, 1000)
    runs.CompleteRun(rl.CompleteRunRequest(run_id=finished.run_id), timeout=WAIT)
    time.sleep(2.5)
    after = get(runs, finished.run_id)
    assert after.status == run_pb2.RUN_STATUS_COMPLETED and after.status_reason == ""


def test_bad_input_is_refused_naming_the_field(runs: RunLedgerStub) -> None:
    assert "run_id" in refused(
        lambda: runs.Heartbeat(rl.HeartbeatRequest(run_id=""), timeout=WAIT), Code.INVALID_ARGUMENT
    )
    missing = f"missing-{uuid.uuid4()}"
    assert missing in refused(lambda: runs.Heartbeat(rl.HeartbeatRequest(run_id=missing), timeout=WAIT), Code.NOT_FOUND)
    done = create(runs, 60_000)
    runs.CancelRun(rl.CancelRunRequest(run_id=done.run_id, reason="by hand"), timeout=WAIT)
    refused(lambda: runs.Heartbeat(rl.HeartbeatRequest(run_id=done.run_id), timeout=WAIT), Code.FAILED_PRECONDITION)
    assert get(runs, done.run_id).status_reason == "by hand"

    too_long = f"too-long-{uuid.uuid4()}"
    details = refused(lambda: create(runs, 10 * 365 * 86_400_000 + 1, run_id=too_long), Code.INVALID_ARGUMENT)
    assert details.startswith("inactivity_timeout_ms:")
    refused(lambda: get(runs, too_long), Code.NOT_FOUND)  # nothing stored
    assert create(runs, 10 * 365 * 86_400_000).inactivity_timeout_ms == 10 * 365 * 86_400_000


def test_the_flag_sets_the_default_and_metrics_count_the_failures(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, extra=["--run-inactivity-timeout", "1s", "--metrics-listen", "127.0.0.1:0"])
    try:
        with daemon.channel() as channel:
            stub = RunLedgerStub(channel)
            default, never, own = create(stub), create(stub, 0), create(stub, 1500)
            assert (default.inactivity_timeout_ms, never.inactivity_timeout_ms, own.inactivity_timeout_ms) == (
                1000,
                0,
                1500,
            )
            assert_failed_for_inactivity(wait_terminal(stub, default.run_id), 1000, events=0)
            assert_failed_for_inactivity(wait_terminal(stub, own.run_id), 1500, events=0)
            assert get(stub, never.run_id).status == run_pb2.RUN_STATUS_RUNNING
        port = re.search(r"metrics on http://[^:]+:(\d+)/metrics", daemon.log())
        assert port is not None, daemon.log()
        with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=WAIT) as reply:
            text = reply.read().decode()
        assert "aivcs_ledger_inactive_runs_failed_total 2.0" in text
    finally:
        assert daemon.stop() == 0


def test_the_environment_variable_sets_the_default(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, env={"AIVCS_LEDGER_RUN_INACTIVITY_TIMEOUT": "1m30s"})
    try:
        with daemon.channel() as channel:
            assert create(RunLedgerStub(channel)).inactivity_timeout_ms == 90_000
    finally:
        daemon.stop()


@pytest.mark.parametrize("value", ["5x", "-1", "1h 30m", "11000d"])
def test_a_bad_flag_value_stops_the_daemon_naming_the_flag(tmp_path: Path, value: str) -> None:
    done = run_to_exit(["--db", "mem://", "--run-inactivity-timeout", value], tmp_path, timeout=WAIT)
    assert done.returncode == 2
    assert "--run-inactivity-timeout" in done.stderr


def test_durations() -> None:
    assert [parse_duration_ms(text) for text in ["0", "30", "1.5", ".5", "250ms", "30s", "5m", "1h30m", "2d"]] == [
        0,
        30_000,
        1500,
        500,
        250,
        30_000,
        300_000,
        5_400_000,
        172_800_000,
    ]
    for text in ["", "s", "abc", "-1", "1h 30m", "5x"]:
        with pytest.raises(ValueError):
            parse_duration_ms(text)
    assert [format_duration_ms(ms) for ms in [250, 1000, 1500, 30_000, 90_000, 90_500, 3_600_000]] == [
        "250ms",
        "1s",
        "1.5s",
        "30s",
        "1m30s",
        "90.5s",
        "1h",
    ]


async def test_the_sweepers_query_is_one_range_scan_of_the_deadline_index() -> None:
    """The query every daemon runs each second must not visit every running run, let alone every run."""
    db = await Database.open("mem://")
    try:
        await init_schema(db)
        [plan] = await db.query(IDLE_RUNS_SQL + " EXPLAIN", {"now": time.time_ns(), "limit": 100})
        text = str(plan)
        assert "IndexScan" in text and "idx_inactivity_deadline_ns" in text, plan
        assert "idx_status_created_ns" not in text and "TableScan" not in text, plan
    finally:
        await db.close()


async def test_a_run_is_never_failed_while_an_append_to_it_is_being_committed() -> None:
    """The engine takes 3 s over an append to a run with a 1 s timeout: the append is acknowledged and
    stored, and only afterwards, with no further activity, is the run failed (counting that event)."""
    async with running() as daemon, inprocess_channel(daemon) as ch:
        stubs = Stubs(ch)
        run_id = await stubs.create(inactivity_timeout_ms=1000)

        async def slow(real: Send, sql: str, variables: dict[str, Any]) -> dict[str, Any]:
            if "INSERT INTO run_events" in sql:
                await asyncio.sleep(3)
            return await real(sql, variables)

        restore = intercept(daemon.db, slow)
        try:
            answer = await stubs.append(run_id, "slow")
        finally:
            restore()
        assert (answer.first_seq, answer.last_seq) == (1, 1)
        deadline = time.monotonic() + WAIT
        while (run := (await stubs.runs.GetRun(rl.GetRunRequest(run_id=run_id), timeout=WAIT)).run).status == (
            run_pb2.RUN_STATUS_RUNNING
        ):
            assert time.monotonic() < deadline, "never failed"
            await asyncio.sleep(0.1)
        assert_failed_for_inactivity(run, 1000, events=1)


# --- several daemons on one database -------------------------------------------------------------------


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[DaemonProcess, DaemonProcess]]:
    """Two daemons on one stand-in SurrealDB server (memory engine), both sweeping."""
    with stand_in_server(tmp_path) as server:
        first = start_daemon(tmp_path, db=server.url)
        try:
            second = start_daemon(tmp_path, db=server.url)
            try:
                yield first, second
            finally:
                second.stop()
        finally:
            first.stop()


@pytest.mark.timeout(120)
def test_with_two_replicas_an_abandoned_run_is_failed_exactly_once(
    replicas: tuple[DaemonProcess, DaemonProcess],
) -> None:
    """Runs whose writers die are failed once, by one replica, with one reason; activity through one replica
    keeps a run alive for the other; nothing is logged as an error."""
    first, second = replicas
    with first.channel() as one, second.channel() as two:
        runs_one, runs_two = RunLedgerStub(one), RunLedgerStub(two)
        events_two = EventStreamStub(two)

        # Runs of writers that die, through both replicas; and many more abandoned runs due at about the
        # same moment, so that both sweepers find and fail the same runs at once.
        writers = start_writers([first.target, second.target] * 2, 1000)
        for process, _ in writers:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=WAIT)
        crowd = [create(runs_one if i % 2 else runs_two, 1000).run_id for i in range(CROWD)]

        # A run created through one replica and kept busy through the other stays alive meanwhile.
        busy = create(runs_one, 1500)
        until = time.monotonic() + 4.5
        turn = 0
        while time.monotonic() < until:
            if turn % 2:
                append(events_two, busy.run_id)
            else:
                runs_two.Heartbeat(rl.HeartbeatRequest(run_id=busy.run_id), timeout=WAIT)
            turn += 1
            time.sleep(0.2)
        assert get(runs_one, busy.run_id).status == run_pb2.RUN_STATUS_RUNNING

        for index, (_, run_id) in enumerate(writers):
            run = wait_terminal(runs_one, run_id)
            assert_failed_for_inactivity(run, 1000, events=index + 2)
            assert get(runs_two, run_id) == run
        for run_id in crowd:
            assert_failed_for_inactivity(wait_terminal(runs_two, run_id), 1000, events=0)
        appended = turn // 2
        assert_failed_for_inactivity(wait_terminal(runs_two, busy.run_id), 1500, events=appended)

        # Give a second, late transition every chance to show up before counting.
        time.sleep(2.5)
        logs = first.log() + second.log()
        for run_id in [run_id for _, run_id in writers] + crowd + [busy.run_id]:
            lines = [line for line in logs.splitlines() if FAILED_LINE in line and run_id in line]
            assert len(lines) == 1, f"{run_id} failed {len(lines)} times: {lines}"
        assert " ERROR " not in logs and "Traceback" not in logs, logs
