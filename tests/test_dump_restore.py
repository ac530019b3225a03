"""Backup, restore and moving a ledger: `aivcs-ledger dump` of a surrealkv ledger restored on a SurrealDB server.

The source is a daemon on surrealkv://, the targets daemons on the stand-in
SurrealDB server (ws://), as a move to a cluster is; every comparison goes
through the ledger's own RPCs, and the "nothing of it written" checks read
the target's tables directly.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from aivcs.ledger.cli import cli as command
from aivcs.ledger.v1 import (
    event_pb2,
    event_stream_pb2_grpc,
    release_registry_pb2_grpc,
    run_ledger_pb2_grpc,
    run_pb2,
)
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import release_registry_pb2 as rr
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from click.testing import CliRunner
from google.protobuf import struct_pb2

from aivcs_ledgerd.store import Database
from harness.daemon import DaemonProcess, start_daemon
from harness.surrealdb_stand_in import StandIn, stand_in_server

READ_ONLY, READ_WRITE, ADMIN = "ro-token-1", "rw-token-1", "admin-token-1"
SPEC_A, SPEC_B, SPEC_C = "a" * 64, "b" * 64, "c" * 64
BIG_EVENTS = 450  # more than two staging batches


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def cli(target: str, token: str | None, *args: str) -> Result:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("AIVCS_LEDGER_")}
    if token is not None:
        env["AIVCS_LEDGER_TOKEN"] = token
    result = CliRunner().invoke(command, ["--target", target, *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def payload(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def events(count: int, start: int = 0) -> list[event_pb2.EventInput]:
    return [
        event_pb2.EventInput(
            kind="step",
            payload=payload(
                {
                    "i": start + i,
                    "ratio": (start + i) / 7,
                    "tiny": 1e-300 * (i + 1),
                    "text": "héllo ✓ 漢字 🎉",
                    "nothing": None,
                    "list": [1.5, None, "x", {"deep": True}],
                }
            ),
        )
        for i in range(count)
    ]


def populate(target: str) -> dict[str, str]:
    """Runs in every state and two release histories with a rollback; returns name -> run id."""
    with grpc.insecure_channel(target) as channel:
        runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
        stream = event_stream_pb2_grpc.EventStreamStub(channel)
        releases = release_registry_pb2_grpc.ReleaseRegistryStub(channel)
        md = metadata(READ_WRITE)
        ids = {name: f"run-{name}" for name in ("completed", "failed", "cancelled", "running", "big", "empty", "other")}

        def create(name: str, agent: str = "agent-a", **extra: Any) -> None:
            runs.CreateRun(
                rl.CreateRunRequest(run_id=ids[name], spec_digest=SPEC_A, agent_name=agent, **extra), metadata=md
            )

        create(
            "completed",
            git_sha="abc123",
            tags=payload({"team": "ünï", "score": 0.1 + 0.2, "none": None}),
            evaluation=run_pb2.EvaluationMetadata(rubric_path="r.yaml", is_promotion_gate=True, agent_phase=2),
        )
        stream.AppendEvents(
            es.AppendEventsRequest(run_id=ids["completed"], events=events(5), idempotency_key="batch-1"), metadata=md
        )
        runs.CompleteRun(
            rl.CompleteRunRequest(run_id=ids["completed"], duration_ms=1234, final_state_digest=SPEC_C), metadata=md
        )
        create("failed")
        stream.AppendEvents(es.AppendEventsRequest(run_id=ids["failed"], events=events(3)), metadata=md)
        runs.FailRun(rl.FailRunRequest(run_id=ids["failed"], duration_ms=5, reason="tool crashed: ✗"), metadata=md)
        create("cancelled")
        stream.AppendEvents(es.AppendEventsRequest(run_id=ids["cancelled"], events=events(2)), metadata=md)
        runs.CancelRun(rl.CancelRunRequest(run_id=ids["cancelled"], reason="operator"), metadata=md)
        create("running", inactivity_timeout_ms=3_600_000)
        stream.AppendEvents(
            es.AppendEventsRequest(run_id=ids["running"], events=events(4), idempotency_key="running-1"), metadata=md
        )
        create("big")
        for start in range(0, BIG_EVENTS, 150):
            stream.AppendEvents(es.AppendEventsRequest(run_id=ids["big"], events=events(150, start)), metadata=md)
        create("empty")
        create("other", agent="agent-b")
        stream.AppendEvents(es.AppendEventsRequest(run_id=ids["other"], events=events(1)), metadata=md)
        for agent, digests in (("agent-a", [SPEC_A, SPEC_B]), ("agent-b", [SPEC_B, SPEC_C, SPEC_A])):
            for index, digest in enumerate(digests):
                releases.Promote(
                    rr.PromoteRequest(
                        agent_name=agent,
                        spec_digest=digest,
                        promoted_by="ci",
                        version_label=f"v{index}",
                        notes="ñotes" if index else None,
                    ),
                    metadata=md,
                )
            releases.Rollback(rr.RollbackRequest(agent_name=agent, promoted_by="oncall"), metadata=md)
        releases.Rollback(
            rr.RollbackRequest(agent_name="agent-b", promoted_by="oncall", to_spec_digest=SPEC_C, notes="again"),
            metadata=md,
        )
        return ids


def snapshot(target: str, run_ids: list[str], agents: list[str]) -> dict[str, Any]:
    """Every GetRun, every event and every release history, as the ledger answers them."""
    with grpc.insecure_channel(target) as channel:
        runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
        stream = event_stream_pb2_grpc.EventStreamStub(channel)
        releases = release_registry_pb2_grpc.ReleaseRegistryStub(channel)
        md = metadata(READ_ONLY)
        view: dict[str, Any] = {}
        for run_id in run_ids:
            run = runs.GetRun(rl.GetRunRequest(run_id=run_id), metadata=md).run
            read = [
                event
                for response in stream.ReadEvents(es.ReadEventsRequest(run_id=run_id), metadata=md)
                for event in response.events
            ]
            view[run_id] = (run, read)
        for agent in agents:
            view[agent] = list(
                releases.GetHistory(rr.GetHistoryRequest(agent_name=agent, page_size=100), metadata=md).releases
            )
        return view


def verify(target: str, run_id: str) -> rl.VerifyRunResponse:
    with grpc.insecure_channel(target) as channel:
        answer: rl.VerifyRunResponse = run_ledger_pb2_grpc.RunLedgerStub(channel).VerifyRun(
            rl.VerifyRunRequest(run_id=run_id), metadata=metadata(READ_ONLY)
        )
        return answer


def stored_rows(server: StandIn, run_id: str) -> dict[str, int]:
    """How many rows of the run each table holds on the target's server, read directly."""

    async def count() -> dict[str, int]:
        db = await Database.open(server.url, namespace="aivcs", database="ledger")
        try:
            [events_] = await db.query(
                "SELECT VALUE seq FROM run_events:[$r, 0]..=[$r, 9223372036854775807];", {"r": run_id}
            )
            [appends] = await db.query("SELECT VALUE key FROM run_appends:[$r, NONE]..[$r, {}];", {"r": run_id})
            [run] = await db.query("SELECT VALUE run_id FROM runs WHERE run_id = $r;", {"r": run_id})
            return {"events": len(events_), "appends": len(appends), "runs": len(run)}
        finally:
            await db.close()

    return asyncio.run(count())


def read_dump(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def write_dump(path: Path, records: list[dict[str, Any]]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


@dataclass
class Setup:
    tmp: Path
    tokens: Path
    source: DaemonProcess
    source_folder: Path
    server: StandIn
    target: DaemonProcess
    ids: dict[str, str]
    dump: Path
    before: dict[str, Any]

    @contextmanager
    def fresh_target(self) -> Iterator[tuple[StandIn, DaemonProcess]]:
        """An empty SurrealDB server (stand-in) with a daemon on it."""
        with stand_in_server(self.tmp, "mem://") as server:
            daemon = start_daemon(self.tmp, server.url, ["--auth-token-file", str(self.tokens)])
            try:
                yield server, daemon
            finally:
                daemon.stop()


AGENTS = ["agent-a", "agent-b"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("dump")
    tokens = tmp / "tokens"
    tokens.write_text(f"read-only {READ_ONLY}\nread-write {READ_WRITE}\nadmin {ADMIN}\n")
    folder = tmp / "source-data"
    source = start_daemon(tmp, f"surrealkv://{folder}", ["--auth-token-file", str(tokens)])
    try:
        ids = populate(source.target)
        dump = tmp / "ledger.jsonl.gz"
        result = cli(source.target, READ_ONLY, "dump", "-o", str(dump))  # dumping only reads
        assert result.code == 0, result.stderr
        assert f"dumped {len(ids)} runs, {5 + 3 + 2 + 4 + BIG_EVENTS + 1} events and 8 release entries" in result.stderr
        before = snapshot(source.target, list(ids.values()), AGENTS)
        with stand_in_server(tmp, "mem://") as server:
            target = start_daemon(tmp, server.url, ["--auth-token-file", str(tokens)])
            try:
                yield Setup(tmp, tokens, source, folder, server, target, ids, dump, before)
            finally:
                target.stop()
    finally:
        source.stop()


@pytest.fixture(scope="module")
def restored(setup: Setup) -> Setup:
    result = cli(setup.target.target, ADMIN, "restore", str(setup.dump), "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["complete"] and summary["runs_restored"] == len(setup.ids) and summary["histories_restored"] == 2
    return setup


def test_dump_format_has_a_versioned_header_and_every_record(setup: Setup) -> None:
    records = read_dump(setup.dump)
    assert records[0]["record"] == "header" and records[0]["format"] == "aivcs-ledger-dump"
    assert records[0]["version"] == 1
    assert records[-1] == {"record": "end", "runs": 7, "events": 465, "appends": 2, "releases": 8}
    kinds = [record["record"] for record in records]
    assert kinds.count("run") == 7 and kinds.count("event") == 465 and kinds.count("append") == 2
    running = next(r for r in records if r["record"] == "run" and r["run_id"] == setup.ids["running"])
    assert running["status"] == "running" and running["total_events"] == 4


def test_restore_on_a_server_is_identical_and_verifies(restored: Setup) -> None:
    after = snapshot(restored.target.target, list(restored.ids.values()), AGENTS)
    assert after == restored.before
    for run_id in restored.ids.values():
        verdict = verify(restored.target.target, run_id)
        assert verdict.ok, (run_id, verdict)
    # Every event's payload came back bit for bit: doubles, unicode, nulls.
    _, big_events = after[restored.ids["big"]]
    assert big_events[7].payload["ratio"] == 7 / 7 and big_events[8].payload["ratio"] == 8 / 7
    assert big_events[0].payload["tiny"] == 1e-300
    assert big_events[0].payload["text"] == "héllo ✓ 漢字 🎉"
    assert big_events[0].payload.fields["nothing"].WhichOneof("kind") == "null_value"
    assert len(big_events) == BIG_EVENTS


def test_restored_idempotency_keys_keep_retries_safe(restored: Setup) -> None:
    with restored.target.channel() as channel:
        answer = event_stream_pb2_grpc.EventStreamStub(channel).AppendEvents(
            es.AppendEventsRequest(run_id=restored.ids["running"], events=events(4), idempotency_key="running-1"),
            metadata=metadata(READ_WRITE),
        )
    assert (answer.first_seq, answer.last_seq, answer.replayed) == (1, 4, True)


def test_restoring_again_changes_nothing(restored: Setup) -> None:
    result = cli(restored.target.target, ADMIN, "restore", str(restored.dump), "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["runs_unchanged"] == len(restored.ids) and summary["histories_unchanged"] == 2
    assert "runs_restored" not in summary and summary["refused"] == []
    assert snapshot(restored.target.target, list(restored.ids.values()), AGENTS) == restored.before


def test_running_run_continues_its_chain_and_then_differs_from_the_dump(restored: Setup) -> None:
    run_id = restored.ids["running"]
    with restored.target.channel() as channel:
        answer = event_stream_pb2_grpc.EventStreamStub(channel).AppendEvents(
            es.AppendEventsRequest(run_id=run_id, events=events(2, 100)), metadata=metadata(READ_WRITE)
        )
    assert (answer.first_seq, answer.last_seq) == (5, 6)
    verdict = verify(restored.target.target, run_id)
    assert verdict.ok and verdict.verified_events == 6
    # The dump's older version of the run is now refused, named; the run is left as it is.
    result = cli(restored.target.target, ADMIN, "restore", str(restored.dump))
    assert result.code == 1
    assert f"refused run {run_id}: the run exists in the target with different content" in result.stderr
    assert verify(restored.target.target, run_id).verified_events == 6


def tampered(setup: Setup) -> tuple[Path, dict[str, int]]:
    """The dump with a payload changed (big run, seq 300), an event removed (completed run, seq 3) and a
    head changed (failed run); returns the file and each tampered run's first bad seq."""
    records = read_dump(setup.dump)
    ids = setup.ids
    out: list[dict[str, Any]] = []
    for record in records:
        if record["record"] == "event" and record["run_id"] == ids["big"] and record["seq"] == 300:
            record["payload"]["i"] = 9999
        if record["record"] == "event" and record["run_id"] == ids["completed"] and record["seq"] == 3:
            continue
        if record["record"] == "run" and record["run_id"] == ids["failed"]:
            record["events_digest"] = "0" * 64
        out.append(record)
    return write_dump(setup.tmp / "tampered.jsonl.gz", out), {ids["big"]: 300, ids["completed"]: 3, ids["failed"]: 4}


def test_tampered_malformed_and_truncated_dumps_write_nothing_of_the_runs_they_refuse(setup: Setup) -> None:
    path, bad = tampered(setup)
    records = read_dump(setup.dump)
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    broken = setup.tmp / "broken.jsonl"
    broken.write_text("\n".join([*lines[:3], "{not json", *lines[3:]]) + "\n", encoding="utf-8")
    # Cut inside the big run, after its first staging batches: that run must not appear.
    big_at = next(i for i, r in enumerate(records) if r["record"] == "run" and r["run_id"] == setup.ids["big"])
    truncated = write_dump(setup.tmp / "truncated.jsonl.gz", records[: big_at + 260])
    future = write_dump(setup.tmp / "future.jsonl.gz", [records[0] | {"version": 2}, *records[1:]])
    with setup.fresh_target() as (server, target):
        result = cli(target.target, ADMIN, "restore", str(path), "--json")
        assert result.code == 1
        summary = json.loads(result.stdout)
        assert {entry["run_id"]: entry["first_bad_seq"] for entry in summary["refused"]} == bad
        assert (
            f"refused run {setup.ids['big']}: event 300's content does not match its digest (first bad seq 300)"
            in result.stderr
        )
        assert f"refused run {setup.ids['completed']}: event 3 is missing" in result.stderr
        assert f"refused run {setup.ids['failed']}: the run's events_digest does not match" in result.stderr
        for run_id in bad:
            assert stored_rows(server, run_id) == {"events": 0, "appends": 0, "runs": 0}, run_id
            with target.channel() as channel, pytest.raises(grpc.RpcError) as missing:
                run_ledger_pb2_grpc.RunLedgerStub(channel).GetRun(
                    rl.GetRunRequest(run_id=run_id), metadata=metadata(READ_ONLY)
                )
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert summary["runs_restored"] == len(setup.ids) - len(bad)

        result = cli(target.target, ADMIN, "restore", str(broken))
        assert result.code == 1
        assert "record 4: is not JSON" in result.stderr and "line N of the file" in result.stderr
        assert stored_rows(server, setup.ids["completed"]) == {"events": 0, "appends": 0, "runs": 0}
        result = cli(target.target, ADMIN, "restore", str(truncated))
        assert result.code == 1 and "ended before its end record" in result.stderr
        assert stored_rows(server, setup.ids["big"]) == {"events": 0, "appends": 0, "runs": 0}
        assert verify(target.target, setup.ids["completed"]).ok  # runs before the cut are whole
        result = cli(target.target, ADMIN, "restore", str(future))
        assert result.code == 1 and "version: is 2; this daemon reads version 1 dumps only" in result.stderr

        # The good dump then restores what is missing and leaves the rest unchanged.
        again = json.loads(cli(target.target, ADMIN, "restore", str(setup.dump), "--json").stdout)
        assert again["runs_restored"] == 1 and again["runs_unchanged"] == len(setup.ids) - 1
        assert snapshot(target.target, list(setup.ids.values()), AGENTS) == setup.before


def test_only_an_admin_token_may_restore(setup: Setup) -> None:
    target = setup.target.target
    for token, code in (
        (READ_WRITE, "PERMISSION_DENIED"),
        (READ_ONLY, "PERMISSION_DENIED"),
        (None, "UNAUTHENTICATED"),
        ("wrong", "UNAUTHENTICATED"),
    ):
        result = cli(target, token, "restore", str(setup.dump))
        assert result.code == 1 and code in result.stderr, (token, result.stderr)
    assert (
        "RestoreLedger needs an admin token; this one is read-write"
        in cli(target, READ_WRITE, "restore", str(setup.dump)).stderr
    )
    assert cli(target, None, "dump", "-o", str(setup.tmp / "x.jsonl")).code == 1
    # An admin token may do what a read-write token may.
    with setup.target.channel() as channel:
        run_ledger_pb2_grpc.RunLedgerStub(channel).CreateRun(
            rl.CreateRunRequest(run_id="admin-made", spec_digest=SPEC_A, agent_name="agent-z"), metadata=metadata(ADMIN)
        )


def test_partial_dump_by_agent_and_creation_time(setup: Setup) -> None:
    by_agent = setup.tmp / "agent-b.jsonl"
    assert cli(setup.source.target, READ_ONLY, "dump", "-o", str(by_agent), "--agent", "agent-b").code == 0
    records = [json.loads(line) for line in by_agent.read_text(encoding="utf-8").splitlines()]
    assert {r["run_id"] for r in records if r["record"] == "run"} == {setup.ids["other"]}
    assert {r["agent_name"] for r in records if r["record"] == "release"} == {"agent-b"}
    full = read_dump(setup.dump)
    created = {r["run_id"]: r["created_ns"] for r in full if r["record"] == "run"}
    moment = created[setup.ids["running"]]
    after = setup.tmp / "after.jsonl"
    at = datetime.fromtimestamp(moment // 10**9, UTC).replace(microsecond=moment % 10**9 // 1000).isoformat()
    assert (
        cli(setup.source.target, READ_ONLY, "dump", "-o", str(after), "--created-after", at, "--no-releases").code == 0
    )
    dumped = [json.loads(line) for line in after.read_text(encoding="utf-8").splitlines()]
    expected = {run_id for run_id, ns in created.items() if ns >= moment // 1000 * 1000}
    assert {r["run_id"] for r in dumped if r["record"] == "run"} == expected
    assert setup.ids["completed"] not in expected and not [r for r in dumped if r["record"] == "release"]


def test_copy_of_a_stopped_data_folder_opens_and_verifies(setup: Setup) -> None:
    """The README's claim: a copy of a stopped daemon's surrealkv folder is a usable backup."""
    assert setup.source.stop() == 0
    copy = setup.tmp / "copied-data"
    shutil.copytree(setup.source_folder, copy)
    daemon = start_daemon(setup.tmp, f"surrealkv://{copy}", ["--auth-token-file", str(setup.tokens)])
    try:
        for run_id in setup.ids.values():
            assert verify(daemon.target, run_id).ok, run_id
        assert snapshot(daemon.target, list(setup.ids.values()), AGENTS) == setup.before
    finally:
        daemon.stop()


def test_two_restores_of_one_dump_at_once_leave_every_run_whole(setup: Setup) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from aivcs.ledger import _backup as backup
    from aivcs.ledger._connection import Connection

    target = start_daemon(setup.tmp, "mem://", ["--auth-token-file", str(setup.tokens)])
    try:

        def restore() -> backup.RestoreFigures:
            with backup.open_dump_for_reading(setup.dump) as lines:
                return backup.restore(Connection(target=target.target, token=ADMIN), iter(lines))

        with ThreadPoolExecutor(2) as pool:
            first, second = [future.result() for future in [pool.submit(restore), pool.submit(restore)]]
        for figures in (first, second):
            assert figures.complete
            assert all("another restore on this daemon is writing the run" in o.reason for o in figures.refused)
        assert first.counts.get("runs restored", 0) + second.counts.get("runs restored", 0) == len(setup.ids)
        assert snapshot(target.target, list(setup.ids.values()), AGENTS) == setup.before
        assert all(verify(target.target, run_id).ok for run_id in setup.ids.values())
    finally:
        target.stop()


async def test_restore_waits_out_lost_answers_and_repeats_writes_that_committed_unseen(setup: Setup) -> None:
    """Each first staging write, run creation and history append commits but its answer is lost."""
    from aivcs.ledger.v1 import ledger_admin_pb2 as la
    from aivcs.ledger.v1 import ledger_admin_pb2_grpc

    from aivcs_ledgerd.store import StoreUnavailable
    from harness.faults import Send, intercept
    from harness.inprocess import channel, running

    lost: list[str] = []
    async with running() as daemon:

        async def answer_lost_once(real: Send, sql: str, variables: dict[str, Any]) -> dict[str, Any]:
            answer = await real(sql, variables)
            for marker in ("INSERT INTO run_events", "CREATE type::record('runs'", "INSERT INTO releases"):
                if marker in sql and marker not in lost:
                    lost.append(marker)
                    raise StoreUnavailable("injected: the answer was lost after the commit")
            return answer

        intercept(daemon.db, answer_lost_once)
        with gzip.open(setup.dump, "rt", encoding="utf-8") as file:
            lines = [line.rstrip("\n") for line in file]

        async def requests() -> Any:
            for start in range(0, len(lines), 100):
                yield la.RestoreLedgerRequest(records=lines[start : start + 100])

        async with channel(daemon) as ch:
            answers = [answer async for answer in ledger_admin_pb2_grpc.LedgerAdminStub(ch).RestoreLedger(requests())]
        outcomes = [outcome for answer in answers for outcome in answer.outcomes]
        assert answers[-1].complete and len(lost) == 3
        assert [o.reason for o in outcomes if o.verdict != la.RestoreOutcome.VERDICT_RESTORED] == []
        target = f"127.0.0.1:{daemon.port}"
        view = await asyncio.to_thread(snapshot, target, list(setup.ids.values()), AGENTS)
        assert view == setup.before
        for run_id in setup.ids.values():
            assert (await asyncio.to_thread(verify, target, run_id)).ok


def test_bad_dump_filters_are_invalid_argument_naming_the_field(setup: Setup) -> None:
    from aivcs.ledger.v1 import ledger_admin_pb2 as la
    from aivcs.ledger.v1 import ledger_admin_pb2_grpc
    from google.protobuf import timestamp_pb2

    with setup.target.channel() as channel:
        stub = ledger_admin_pb2_grpc.LedgerAdminStub(channel)
        for request, field in (
            (la.DumpLedgerRequest(agent_name=""), "agent_name"),
            (la.DumpLedgerRequest(created_after=timestamp_pb2.Timestamp(nanos=-1)), "created_after"),
            (la.DumpLedgerRequest(created_before=timestamp_pb2.Timestamp(seconds=2**62)), "created_before"),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.DumpLedger(request, metadata=metadata(READ_ONLY), timeout=10))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert str(refused.value.details()).startswith(field), refused.value.details()


async def test_a_run_being_restored_cannot_be_created_over_its_staged_events() -> None:
    """CreateRun of an id whose events a restore is staging is refused; the staged rows stay the restore's."""
    from harness.inprocess import Stubs, channel, running

    async with running() as daemon, channel(daemon) as ch:
        stubs = Stubs(ch)
        # What a restore has written of run "moving" so far: its first events, no run record yet.
        await daemon.db.query(
            "CREATE type::record('run_events', ['moving', 1]) SET run_id = 'moving', seq = 1, kind = 'step';"
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.create(run_id="moving")
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "being restored" in (refused.value.details() or "")
        [rows] = await daemon.db.query("SELECT VALUE seq FROM run_events:['moving', 1]..=['moving', 9];")
        [run] = await daemon.db.query("SELECT * FROM ONLY type::record('runs', 'moving');")
        assert rows == [1] and run is None
        assert await stubs.create(run_id="not-moving") == "not-moving"
