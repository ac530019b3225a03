"""What operators read: under --log-json every stderr line is JSON; run ends say agent, events and reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
from aivcs.ledger.v1 import event_pb2, event_stream_pb2_grpc, run_ledger_pb2_grpc
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl

from aivcs_ledgerd.middleware.calllog import REASON_LOG_BYTES
from aivcs_ledgerd.process.stderr_relay import as_json
from harness.daemon import run_to_exit, start_daemon
from harness.data import SPEC


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line of `text` as a JSON object; fails on the first line that is not one."""
    lines = []
    for line in text.splitlines():
        if line.strip():
            entry = json.loads(line)
            assert isinstance(entry, dict), line
            lines.append(entry)
    return lines


def test_grpc_cores_own_lines_are_json_under_log_json(tmp_path: Path) -> None:
    address = "192.0.2.1:50051"  # TEST-NET-1: never an address of this host, so gRPC core's bind fails and says so
    result = run_to_exit(["--db", "mem://", "--listen", address, "--log-json"], tmp_path)
    assert result.returncode != 0
    lines = json_lines(result.stderr)
    core = [line for line in lines if line["logger"] == "grpc"]
    assert core and core[0]["level"] == "ERROR" and core[0]["source"].startswith("add_port.cc:"), lines
    assert address in core[0]["message"]
    assert lines[-1]["message"].startswith(f"cannot start: cannot listen on --listen {address}")


def test_a_whole_run_of_the_daemon_writes_only_json_lines(tmp_path: Path) -> None:
    """With gRPC core at its most talkative, from start to stop."""
    daemon = start_daemon(tmp_path, extra=["--log-json"], env={"GRPC_VERBOSITY": "debug"})
    try:
        with grpc.insecure_channel(daemon.target) as channel:
            runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
            runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="talkative"), timeout=10)
    finally:
        assert daemon.stop() == 0, daemon.log()
    lines = json_lines(daemon.log())
    assert any(line["logger"] == "grpc" for line in lines)
    assert [line["message"] for line in lines if line["logger"].startswith("aivcs_ledgerd")][-1] == "stopped"


def test_a_line_written_just_before_a_crash_is_kept(tmp_path: Path) -> None:
    """What native code writes to fd 2 right before the process aborts still arrives, as JSON."""
    script = (
        "import os\n"
        "from aivcs_ledgerd.process import stderr_relay\n"
        "stderr_relay.start()\n"
        "os.write(2, b\"thread 'engine' panicked at src/lib.rs:1:1:\\nboom\\n\")\n"
        "os.abort()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    # The relay outlives the aborted process: run() returns once it has written all it read.
    lines = json_lines(result.stderr)
    assert [line["message"] for line in lines] == ["thread 'engine' panicked at src/lib.rs:1:1:", "boom"]
    assert {line["logger"] for line in lines} == {"stderr"}


def test_stderr_is_written_directly_again_if_the_relay_ends(tmp_path: Path) -> None:
    script = (
        "import os, time\n"
        "real = os.fstat(2).st_ino\n"
        "from aivcs_ledgerd.process import stderr_relay\n"
        "relay = stderr_relay.start()\n"
        "os.write(2, b'through the relay\\n')\n"
        "time.sleep(0.5)\n"
        "relay.process.kill()\n"
        "deadline = time.monotonic() + 20\n"
        "while os.fstat(2).st_ino != real and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "os.write(2, b'written directly\\n')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert json.loads(lines[0])["message"] == "through the relay"
    assert "the stderr relay ended" in result.stderr
    assert lines[-1] == "written directly"


def test_lines_are_parsed_or_passed_through() -> None:
    own = '{"time": "t", "level": "INFO", "logger": "aivcs_ledgerd", "message": "stopped"}'
    assert as_json(own) == own
    core = json.loads(as_json("W1201 09:01:02.123456    77 chttp2_transport.cc:1234] keepalive ping"))
    assert (core["level"], core["logger"], core["source"], core["message"]) == (
        "WARNING",
        "grpc",
        "chttp2_transport.cc:1234",
        "keepalive ping",
    )
    other = json.loads(as_json("{not json"))
    assert (other["logger"], other["message"]) == ("stderr", "{not json")


def test_run_end_lines_carry_agent_events_and_a_bounded_reason(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, extra=["--log-json"])
    long_reason = "€" * 1000  # 3000 bytes: within the ledger's limit, too long for a log line
    try:
        with grpc.insecure_channel(daemon.target) as channel:
            runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
            events = event_stream_pb2_grpc.EventStreamStub(channel)

            def create(agent: str, count: int) -> str:
                run_id: str = runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name=agent)).run.run_id
                if count:
                    batch = [event_pb2.EventInput(kind="step") for _ in range(count)]
                    events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=batch))
                return run_id

            completed, failed, cancelled = create("agent-c", 3), create("agent-f", 2), create("agent-x", 0)
            runs.CompleteRun(rl.CompleteRunRequest(run_id=completed))
            runs.FailRun(rl.FailRunRequest(run_id=failed, reason=long_reason))
            runs.CancelRun(rl.CancelRunRequest(run_id=cancelled, reason="operator stop"))
    finally:
        assert daemon.stop() == 0, daemon.log()
    by_run = {
        line["run_id"]: line
        for line in json_lines(daemon.log())
        if line.get("method") in ("CompleteRun", "FailRun", "CancelRun")
    }
    done = by_run[completed]
    assert (done["agent_name"], done["events"], done["reason"]) == ("agent-c", 3, "")
    assert done["message"] == f"run completed: run {completed!r} of agent 'agent-c', 3 events"
    fail = by_run[failed]
    assert (fail["agent_name"], fail["events"]) == ("agent-f", 2)
    kept, _, length = fail["reason"].partition("… ")
    assert long_reason.startswith(kept) and len(kept.encode()) <= REASON_LOG_BYTES and len(kept) > 0
    assert length == "(3000 bytes)"
    assert fail["reason"] in fail["message"]
    cancel = by_run[cancelled]
    assert (cancel["agent_name"], cancel["events"], cancel["reason"]) == ("agent-x", 0, "operator stop")
    assert cancel["message"].endswith("0 events, reason 'operator stop'")
    assert long_reason not in daemon.log(), "the long reason is never logged whole"
