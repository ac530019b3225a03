"""The `aivcs-ledger` command against the real daemon: JSON parsed back, tail --follow, errors."""

from __future__ import annotations

import hashlib
import json
import queue
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aivcs.ledger import Client, RunStatus

from harness.daemon import DaemonProcess, free_port
from harness.data import digest, unique
from tests.client.conftest import cli, cli_command, cli_env


@pytest.fixture(scope="module")
def seeded(client: Client) -> dict[str, Any]:
    agent = unique("cli")
    with client.start_run(spec_digest=digest("cli"), agent_name=agent, tags={"k": "v"}) as run:
        for index in range(1500):
            run.emit("step" if index % 10 else "checkpoint", {"index": index})
    failed = client.runs.create(digest("cli"), agent)
    client.runs.fail(failed.run_id, "tool crashed")
    return {"agent": agent, "run_id": run.run_id, "failed_id": failed.run_id}


def test_runs_list_json(daemon: DaemonProcess, seeded: dict[str, Any]) -> None:
    result = cli("runs", "list", "--agent", seeded["agent"], "--json", target=daemon.target)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert [r["run_id"] for r in runs] == [seeded["failed_id"], seeded["run_id"]]
    assert runs[0]["status"] == "failed" and runs[0]["status_reason"] == "tool crashed"
    assert runs[1]["total_events"] == 1500 and runs[1]["tags"] == {"k": "v"}

    # connection options also after the subcommand; filters combine
    result = cli(
        "runs", "list", "--agent", seeded["agent"], "--status", "completed", "--json", "--target", daemon.target
    )
    assert [r["run_id"] for r in json.loads(result.stdout)] == [seeded["run_id"]]


def test_runs_list_and_show_tables(daemon: DaemonProcess, seeded: dict[str, Any]) -> None:
    result = cli("runs", "list", "--agent", seeded["agent"], target=daemon.target)
    assert result.returncode == 0, result.stderr
    assert seeded["run_id"] in result.stdout and "completed" in result.stdout and "failed" in result.stdout
    result = cli("runs", "show", seeded["run_id"], "--verify", target=daemon.target)
    assert result.returncode == 0, result.stderr
    assert "1500" in result.stdout and "chain" in result.stdout


def test_runs_show_json(daemon: DaemonProcess, seeded: dict[str, Any]) -> None:
    result = cli("runs", "show", seeded["run_id"], "--json", "--verify", target=daemon.target)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["run_id"] == seeded["run_id"] and shown["status"] == RunStatus.COMPLETED.value
    assert shown["verification"]["ok"] is True and shown["verification"]["verified_events"] == 1500


def test_events_read_json_lines(daemon: DaemonProcess, seeded: dict[str, Any]) -> None:
    result = cli("events", "read", seeded["run_id"], "--json", "--kind", "checkpoint", target=daemon.target)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["payload"]["index"] for e in events] == list(range(0, 1500, 10))
    assert all(e["seq"] == e["payload"]["index"] + 1 and e["kind"] == "checkpoint" for e in events)

    human = cli("events", "read", seeded["run_id"], "--from-seq", "5", "-n", "2", target=daemon.target)
    lines = human.stdout.splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == "5" and '"index":4' in lines[0]


def test_events_export_with_progress(daemon: DaemonProcess, seeded: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    result = cli("events", "export", seeded["run_id"], "-o", str(out), "--progress", target=daemon.target)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(1, 1501))
    assert "1500/1500" in result.stderr and "exported 1500 events" in result.stderr

    piped = cli("events", "export", seeded["run_id"], "--to-seq", "3", target=daemon.target)
    assert [json.loads(line)["seq"] for line in piped.stdout.splitlines()] == [1, 2, 3]
    assert piped.stderr == ""  # no progress bar when stderr is not a terminal


def test_json_output_sorts_keys_so_two_reads_give_identical_bytes(
    daemon: DaemonProcess, client: Client, tmp_path: Path
) -> None:
    run = client.runs.create(digest(), unique("sorted"), tags={"zone": "eu", "app": "x"})
    client.events.append(run.run_id, [("step", {"zeta": 1, "alpha": {"y": [3, {"b": 1, "a": 2}], "x": None}})] * 3)

    def canonical(document: str) -> str:
        return json.dumps(json.loads(document), ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    exports = []
    for name in ("one.jsonl", "two.jsonl"):
        out = tmp_path / name
        assert cli("events", "export", run.run_id, "-o", str(out), target=daemon.target).returncode == 0
        exports.append(out.read_bytes())
    assert exports[0] == exports[1]
    assert hashlib.sha256(exports[0]).digest() == hashlib.sha256(exports[1]).digest()
    lines = exports[0].decode().splitlines()
    assert len(lines) == 3 and all(line == canonical(line) for line in lines)

    read = cli("events", "read", run.run_id, "--json", target=daemon.target).stdout
    assert read.splitlines() == lines
    shown = [cli("runs", "show", run.run_id, "--json", target=daemon.target).stdout for _ in range(2)]
    assert shown[0] == shown[1] == json.dumps(json.loads(shown[0]), ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def test_events_tail_without_follow(daemon: DaemonProcess, seeded: dict[str, Any]) -> None:
    result = cli("events", "tail", seeded["run_id"], "-n", "3", "--json", target=daemon.target)
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [1498, 1499, 1500]


def test_tail_follow_prints_events_as_they_arrive_and_exits_when_the_run_completes(
    daemon: DaemonProcess, client: Client
) -> None:
    run = client.runs.create(digest(), unique("tail"))
    client.events.append(run.run_id, [("before", {"n": 0})])
    process = subprocess.Popen(
        cli_command(["events", "tail", run.run_id, "--follow", "--json"], daemon.target),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        first = json.loads(lines.get(timeout=15))
        assert (first["seq"], first["kind"]) == (1, "before")
        for n in range(1, 4):
            client.events.append(run.run_id, [("live", {"n": n})])
            event = json.loads(lines.get(timeout=10))  # printed before the next one is even written
            assert (event["seq"], event["payload"]["n"]) == (n + 1, n)
        started = time.monotonic()
        client.runs.complete(run.run_id, expected_total_events=4)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
        assert process.stderr is not None
        assert f"run {run.run_id} is completed (4 events)" in process.stderr.read()
        assert lines.empty()
    finally:
        process.kill()
        process.wait()


def test_releases_commands_json(daemon: DaemonProcess) -> None:
    agent, v1, v2 = unique("rel"), digest("r1"), digest("r2")
    promoted = cli("releases", "promote", agent, v1, "--label", "v1", "--by", "ci", "--json", target=daemon.target)
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout)["spec_digest"] == v1
    cli("releases", "promote", agent, v2, "--notes", "faster", "--json", target=daemon.target)
    back = json.loads(cli("releases", "rollback", agent, "--by", "oncall", "--json", target=daemon.target).stdout)
    assert (back["spec_digest"], back["rollback_of"], back["promoted_by"]) == (v1, 1, "oncall")
    current = json.loads(cli("releases", "current", agent, "--json", target=daemon.target).stdout)
    assert current == back
    history = json.loads(cli("releases", "history", agent, "--json", target=daemon.target).stdout)
    assert [r["sequence"] for r in history] == [3, 2, 1]
    table = cli("releases", "history", agent, target=daemon.target)
    assert "rollback to #1" in table.stdout and "v1" in table.stdout


def test_refusal_is_one_line_with_exit_code_1(daemon: DaemonProcess) -> None:
    result = cli("runs", "show", "no-such-run", target=daemon.target)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "NOT_FOUND" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unreachable_daemon_gives_a_clear_error() -> None:
    target = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        cli_command(["runs", "list"], target), capture_output=True, text=True, timeout=30, env=cli_env()
    )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert f"cannot reach the ledger daemon at {target}" in result.stderr
    via_env = cli("events", "tail", "x", env={"AIVCS_LEDGER_TARGET": target})
    assert via_env.returncode == 3 and target in via_env.stderr


def test_token_options(echo_server: str, tmp_path: Path) -> None:
    def authorization(*options: str, env: dict[str, str] | None = None) -> str:
        result = cli("runs", "show", "x", "--json", *options, target=echo_server, env=env)
        assert result.returncode == 0, result.stderr
        run_id: str = json.loads(result.stdout)["run_id"]
        return run_id

    assert authorization() == "<none>"
    assert authorization("--token", "t1") == "Bearer t1"
    assert authorization(env={"AIVCS_LEDGER_TOKEN": "t2"}) == "Bearer t2"
    secret = tmp_path / "token"
    secret.write_text("t3\n")
    assert authorization("--token-file", str(secret)) == "Bearer t3"
    assert authorization("--token-file", str(secret), env={"AIVCS_LEDGER_TOKEN": "t2"}) == "Bearer t3"
    assert authorization(env={"AIVCS_LEDGER_TOKEN_FILE": str(secret)}) == "Bearer t3"


def test_runs_create_events_append_and_end_runs(daemon: DaemonProcess, client: Client) -> None:
    agent = unique("cli-create")
    created = cli(
        "runs",
        "create",
        digest("c"),
        agent,
        "--tag",
        "team=infra",
        "--git-sha",
        "abc",
        "--inactivity-timeout",
        "0",
        target=daemon.target,
    )
    assert created.returncode == 0, created.stderr
    run_id = created.stdout.strip()
    run = client.runs.get(run_id)
    assert (run.agent_name, run.tags, run.git_sha, run.status) == (agent, {"team": "infra"}, "abc", RunStatus.RUNNING)

    one = cli("events", "append", run_id, "started", "--payload", '{"n": 1}', "--json", target=daemon.target)
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout) == {"count": 1, "first_seq": 1, "last_seq": 1, "run_id": run_id}
    lines = "\n".join(json.dumps({"kind": "step", "payload": {"i": i}}) for i in range(450))
    lines += '\n\n{"kind": "stamped", "timestamp": "2026-01-31T12:00:00Z"}\n'
    many = cli("events", "append", run_id, input=lines, target=daemon.target)
    assert many.returncode == 0, many.stderr
    assert many.stdout.strip() == f"appended 451 events to run {run_id}: seqs 2..452"
    stored = list(client.events.read(run_id))
    assert [e.kind for e in stored] == ["started"] + ["step"] * 450 + ["stamped"]
    assert [e.payload["i"] for e in stored[1:-1]] == list(range(450))
    assert stored[-1].timestamp.isoformat() == "2026-01-31T12:00:00+00:00"

    # a bad line is refused before anything is sent, naming the line
    bad = cli("events", "append", run_id, input='{"kind": "ok"}\n{"payload": {}}\n', target=daemon.target)
    assert bad.returncode == 2 and "stdin line 2" in bad.stderr
    stale = cli("events", "append", run_id, "late", "--expect-last-seq", "1", target=daemon.target)
    assert stale.returncode == 1 and "ABORTED" in stale.stderr
    assert client.runs.get(run_id).total_events == 452

    failed = cli("runs", "fail", run_id, "--reason", "tool crashed", target=daemon.target)
    assert failed.returncode == 0, failed.stderr
    assert failed.stdout.strip() == f"run {run_id} is failed: tool crashed"
    assert client.runs.get(run_id).status is RunStatus.FAILED

    other = client.runs.create(digest(), agent)
    cancelled = cli("runs", "cancel", other.run_id, "--reason", "not needed", "--json", target=daemon.target)
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    assert cli("runs", "cancel", other.run_id, target=daemon.target).returncode == 1  # terminal already


def test_run_id_prefix_is_accepted_when_unambiguous(daemon: DaemonProcess, client: Client) -> None:
    stem = unique("pfx")
    ids = [f"{stem}-a1", f"{stem}-a2", f"{stem}-b1"]
    for run_id in ids:
        client.runs.create(digest(), unique("prefix"), run_id=run_id)
    client.events.append(ids[2], [("only", {})])

    shown = cli("runs", "show", f"{stem}-b", "--json", target=daemon.target)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run_id"] == ids[2]
    read = cli("events", "read", f"{stem}-b", "--json", target=daemon.target)
    assert json.loads(read.stdout)["kind"] == "only"
    assert cli("runs", "cancel", f"{stem}-a2", target=daemon.target).returncode == 0
    assert client.runs.get(ids[1]).status is RunStatus.CANCELLED

    ambiguous = cli("runs", "show", f"{stem}-a", target=daemon.target)
    assert ambiguous.returncode == 2
    assert "ambiguous" in ambiguous.stderr and ids[0] in ambiguous.stderr and ids[1] in ambiguous.stderr
    missing = cli("runs", "show", f"{stem}-z", target=daemon.target)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "newest" in missing.stderr


def test_status_in_any_case_zoned_times_and_cut_lists(daemon: DaemonProcess, seeded: dict[str, Any]) -> None:
    upper = cli("runs", "list", "--agent", seeded["agent"], "--status", "FAILED", "--json", target=daemon.target)
    assert upper.returncode == 0, upper.stderr
    assert [r["run_id"] for r in json.loads(upper.stdout)] == [seeded["failed_id"]]

    table = cli("runs", "show", seeded["run_id"], target=daemon.target)
    created = next(line for line in table.stdout.splitlines() if line.startswith("created"))
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d$", created.strip()), created

    cut = cli("runs", "list", "--agent", seeded["agent"], "-n", "1", "--json", target=daemon.target)
    assert len(json.loads(cut.stdout)) == 1 and "showing 1 runs, there are more; use -n" in cut.stderr
    whole = cli("runs", "list", "--agent", seeded["agent"], "-n", "2", "--json", target=daemon.target)
    assert len(json.loads(whole.stdout)) == 2 and whole.stderr == ""
    events = cli("events", "read", seeded["run_id"], "-n", "3", target=daemon.target)
    assert len(events.stdout.splitlines()) == 3 and "showing 3 events" in events.stderr


def test_health_command(daemon: DaemonProcess) -> None:
    result = cli("health", target=daemon.target)
    assert (result.returncode, result.stdout.strip()) == (0, f"{daemon.target}: SERVING")
    service = cli("health", "--service", "aivcs.ledger.v1.EventStream", "--json", target=daemon.target)
    assert json.loads(service.stdout)["status"] == "SERVING"
    unknown = cli("health", "--service", "no.such.Service", target=daemon.target)
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
    away = cli("health", target=f"127.0.0.1:{free_port()}")
    assert away.returncode == 3 and "cannot reach" in away.stderr
