"""A full disk and a damaged write-ahead log under the real daemon on durable surrealkv:// storage.

Disk-full tests mount a small tmpfs (they need root or CAP_SYS_ADMIN, and skip
saying so otherwise) and grow it with a remount while the daemon runs. The
damaged-log tests flip, cut and zero bytes of a real log written by the
daemon and killed with SIGKILL.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2, event_stream_pb2_grpc, run_ledger_pb2_grpc
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aivcs_ledgerd.store import StorageFault, StorageFull, StoreDamaged, wal
from aivcs_ledgerd.store.faults import storage_fault
from harness.daemon import DaemonProcess, run_to_exit, start_daemon
from harness.data import SPEC

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
EXTRA = ["--health-interval", "0.2", "--metrics-listen", "127.0.0.1:0"]


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs mounted for the test; skipped where this process may not mount one."""
    if shutil.which("mount") is None:
        pytest.skip("needs mount(8) to create a small file system")
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root or CAP_SYS_ADMIN, which this test lacks: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def resize(mount_point: Path, mib: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={mib}m", str(mount_point)], check=True)


class Book:
    """What the daemon acknowledged: token -> seq, and each batch's idempotency key."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.seqs: dict[str, int] = {}
        self.batches = 0

    def append(self, events: event_stream_pb2_grpc.EventStreamStub, size: int = 20, blob: int = 2000) -> None:
        """Append one batch; record it only when acknowledged. Raises the RpcError otherwise."""
        number = self.batches
        items = []
        for index in range(size):
            item = event_pb2.EventInput(kind="fill")
            item.payload.update({"token": f"{number}.{index}", "blob": os.urandom(blob // 2).hex()})
            items.append(item)
        self.batches += 1
        reply = events.AppendEvents(
            es.AppendEventsRequest(run_id=self.run_id, events=items, idempotency_key=f"batch-{number}"), timeout=30
        )
        self.seqs.update({f"{number}.{index}": reply.first_seq + index for index in range(size)})

    def fill(self, events: event_stream_pb2_grpc.EventStreamStub) -> grpc.RpcError:
        """Append until the daemon refuses; return the refusal."""
        for _ in range(10_000):
            try:
                self.append(events)
            except grpc.RpcError as error:
                return error
        raise AssertionError("the file system never filled")

    def missing(self, events: event_stream_pb2_grpc.EventStreamStub) -> list[str]:
        stored = {
            e.payload.fields["token"].string_value: e.seq
            for m in events.ReadEvents(es.ReadEventsRequest(run_id=self.run_id), timeout=60)
            for e in m.events
        }
        return sorted(token for token, seq in self.seqs.items() if stored.get(token) != seq)


def stubs(
    daemon: DaemonProcess,
) -> tuple[grpc.Channel, run_ledger_pb2_grpc.RunLedgerStub, event_stream_pb2_grpc.EventStreamStub]:
    channel = daemon.channel()
    return channel, run_ledger_pb2_grpc.RunLedgerStub(channel), event_stream_pb2_grpc.EventStreamStub(channel)


def health(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return int(reply.status)


def wait_health(channel: grpc.Channel, status: int, seconds: float, daemon: DaemonProcess) -> None:
    deadline = time.monotonic() + seconds
    while health(channel) != status:
        assert time.monotonic() < deadline, f"health never became {status}:\n{daemon.log()[-3000:]}"
        time.sleep(0.1)


def metric(daemon: DaemonProcess, name: str) -> float:
    port = re.search(r"metrics on http://[^:]+:(\d+)/metrics", daemon.log())
    assert port is not None, daemon.log()
    with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in metrics"
    return float(found.group(1))


def fill_until_refused(daemon: DaemonProcess, book: Book) -> None:
    """Fill the disk through the daemon; check how it refuses and that it stops serving."""
    channel, runs, events = stubs(daemon)
    with channel:
        runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="full", run_id=book.run_id))
        refusal = book.fill(events)
        assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (refusal.code(), refusal.details())
        assert refusal.details().startswith("disk full"), refusal.details()
        assert book.seqs, "nothing was acknowledged before the disk filled"
        with pytest.raises(grpc.RpcError) as again:
            book.append(events)
        assert again.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        wait_health(channel, NOT_SERVING, 10, daemon)
    assert "storage fault (disk_full)" in daemon.log()
    assert metric(daemon, 'aivcs_ledger_db_storage_fault{reason="disk_full"}') == 1.0


# --- disk full -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "checkpoint_mb"),
    [(signal.SIGKILL, 48), (signal.SIGTERM, 48), (signal.SIGKILL, 1)],
    ids=["SIGKILL", "SIGTERM", "SIGKILL-checkpoint-every-MB"],
)
@pytest.mark.timeout(180)
def test_after_a_full_disk_gets_room_every_acknowledged_append_survives_a_restart(
    tmp_path: Path, small_fs: Path, sig: int, checkpoint_mb: int
) -> None:
    """Full disk: appends RESOURCE_EXHAUSTED naming it, health NOT_SERVING. Room again (grown while the
    daemon runs): it recovers by itself and acknowledges again. After SIGKILL or SIGTERM and a restart,
    every append ever acknowledged is stored at its seqs (the engine alone lost the ones after the room came
    back, and its failed writes came back from its log). With a checkpoint every MB the disk may also fill
    while a checkpoint writes a table file."""
    url = f"surrealkv://{small_fs / 'ledger'}"
    book = Book("full-then-room")
    daemon = start_daemon(tmp_path, db=url, extra=[*EXTRA, "--checkpoint-wal-mb", str(checkpoint_mb)])
    try:
        fill_until_refused(daemon, book)
        acknowledged_while_full = len(book.seqs)
        resize(small_fs, 64)
        channel, runs, events = stubs(daemon)
        with channel:
            wait_health(channel, SERVING, 30, daemon)
            for _ in range(5):
                book.append(events)
        assert len(book.seqs) == acknowledged_while_full + 100
        assert "storage recovered" in daemon.log()
        assert metric(daemon, 'aivcs_ledger_db_storage_fault{reason="disk_full"}') == 0.0
        code = daemon.stop(sig)
        if sig == signal.SIGTERM:
            assert code == 0, daemon.log()[-3000:]
    finally:
        daemon.stop(signal.SIGKILL)
    daemon = start_daemon(tmp_path, db=url)
    try:
        channel, runs, events = stubs(daemon)
        with channel:
            missing = book.missing(events)
            assert not missing, f"{len(missing)} of {len(book.seqs)} acknowledged events are gone: {missing[:5]}"
            run = runs.GetRun(rl.GetRunRequest(run_id=book.run_id)).run
            assert run.total_events == len(book.seqs), "failed appends must not come back as stored"
            assert runs.VerifyRun(rl.VerifyRunRequest(run_id=book.run_id)).ok
    finally:
        daemon.stop(signal.SIGKILL)


@pytest.mark.timeout(180)
def test_stopping_and_restarting_on_a_full_disk_reports_it_and_recovers_without_hand_repair(
    tmp_path: Path, small_fs: Path
) -> None:
    """SIGTERM while the disk is full exits non-zero and says the final flush failed; a start while still
    full keeps everything acknowledged (refusing with the cause, or serving); once there is room, a plain
    start serves every acknowledged append, and takes new ones."""
    url = f"surrealkv://{small_fs / 'ledger'}"
    book = Book("restart-while-full")
    daemon = start_daemon(tmp_path, db=url, extra=EXTRA)
    try:
        fill_until_refused(daemon, book)
        code = daemon.stop(signal.SIGTERM)
        assert code != 0, daemon.log()[-3000:]
        assert "final flush failed" in daemon.log()
    finally:
        daemon.stop(signal.SIGKILL)
    for _ in range(2):  # twice: a start while full must not leave the store worse for the next one
        try:
            daemon = start_daemon(tmp_path, db=url, timeout=60)
        except RuntimeError as refused:
            assert "disk is full" in str(refused) and "free space" in str(refused), str(refused)[-2000:]
        else:
            daemon.stop(signal.SIGKILL)
    resize(small_fs, 64)
    daemon = start_daemon(tmp_path, db=url, timeout=60)
    try:
        channel, runs, events = stubs(daemon)
        with channel:
            missing = book.missing(events)
            assert not missing, f"{len(missing)} of {len(book.seqs)} acknowledged events are gone: {missing[:5]}"
            book.append(events)
            assert runs.GetRun(rl.GetRunRequest(run_id=book.run_id)).run.total_events == len(book.seqs)
            assert runs.VerifyRun(rl.VerifyRunRequest(run_id=book.run_id)).ok
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()[-3000:]
    finally:
        daemon.stop(signal.SIGKILL)


# --- damaged log ---------------------------------------------------------------------------------


RUNS = ["c0", "c1", "c2"]


@pytest.fixture(scope="module")
def killed_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of three runs of 40 batches each, left by SIGKILL: everything is in the write-ahead log."""
    tmp = tmp_path_factory.mktemp("killed")
    daemon = start_daemon(tmp, db=f"surrealkv://{tmp / 'ledger'}")
    try:
        channel, runs, events = stubs(daemon)
        with channel:
            for run_id in RUNS:
                runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="damaged", run_id=run_id))
                for number in range(40):
                    items = [event_pb2.EventInput(kind="e") for _ in range(5)]
                    for index, item in enumerate(items):
                        item.payload.update({"n": number, "i": index})
                    events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=items), timeout=30)
            # Last, two batches too big for one 32 KiB block of the log: each is a record in fragments.
            runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="damaged", run_id="big"))
            for _ in range(2):
                items = [event_pb2.EventInput(kind="big") for _ in range(40)]
                for item in items:
                    item.payload.update({"blob": "b" * 2000})
                events.AppendEvents(es.AppendEventsRequest(run_id="big", events=items), timeout=30)
    finally:
        daemon.stop(signal.SIGKILL)
    return tmp / "ledger"


def damaged_copy(store: Path, tmp_path: Path, damage: str) -> tuple[Path, Path]:
    copy = tmp_path / "ledger"
    shutil.copytree(store, copy)
    [segment] = wal.segments(copy / "wal")
    data = bytearray(segment.read_bytes())
    middle = len(data) // 2
    if damage == "flip":
        data[middle] ^= 0x10
    elif damage == "zero":
        data[middle : middle + 3000] = bytes(3000)
    elif damage == "cut":
        del data[middle : middle + 3000]
    elif damage == "torn":
        del data[-7:]
    elif damage == "torn-fragments":
        del data[-40_000:]  # into the last record, after whole fragments of it
    segment.write_bytes(bytes(data))
    return copy, segment


def repair(url: str) -> subprocess.CompletedProcess[str]:
    return run_to_exit(["repair", "--db", url], timeout=120)


@pytest.mark.parametrize("damage", ["flip", "zero", "cut"])
@pytest.mark.timeout(120)
def test_damage_in_the_middle_of_the_log_is_refused_and_the_repair_reports_the_loss(
    tmp_path: Path, killed_store: Path, damage: str
) -> None:
    """One flipped byte, a zeroed range or a cut-out range in the middle of the log: the daemon refuses to
    start and names the repair command; `aivcs-ledgerd repair` cuts the log at the damage and reports the
    runs that lost events; the daemon then starts and every remaining run verifies."""
    copy, _ = damaged_copy(killed_store, tmp_path, damage)
    url = f"surrealkv://{copy}"
    with pytest.raises(RuntimeError) as refused:
        start_daemon(tmp_path, db=url)
    assert "damaged in the middle" in str(refused.value), str(refused.value)[-2000:]
    assert f"aivcs-ledgerd repair --db {url}" in str(refused.value)
    with pytest.raises(RuntimeError):
        start_daemon(tmp_path, db=url)  # still refused: nothing was cut behind the operator's back
    repaired = repair(url)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    report = repaired.stdout
    assert re.search(r"lost: \d+ bytes of write-ahead log, \d+ transactions", report), report
    assert re.search(r"run 'c[12]': (at least )?\d+ event records lost", report), report
    assert list(tmp_path.glob("ledger.lost-*")), "the dropped part of the log is kept aside"
    daemon = start_daemon(tmp_path, db=url)
    try:
        channel, runs, _ = stubs(daemon)
        with channel:
            kept = runs.GetRun(rl.GetRunRequest(run_id="c0")).run
            assert kept.total_events == 200, "the run written before the damage is whole"
            for run_id in RUNS:
                try:
                    run = runs.GetRun(rl.GetRunRequest(run_id=run_id)).run
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.NOT_FOUND
                    assert f"run '{run_id}': " in report and "gone" in report
                    continue
                assert runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id)).ok
                if run.total_events < 200:
                    assert f"run '{run_id}': " in report and f"now ends at seq {run.total_events} " in report
    finally:
        daemon.stop(signal.SIGKILL)


@pytest.mark.parametrize("damage", ["torn", "torn-fragments"])
@pytest.mark.timeout(120)
def test_a_torn_tail_is_still_cut_off_at_start_without_the_repair_command(
    tmp_path: Path, killed_store: Path, damage: str
) -> None:
    """What a crash mid-write leaves, an incomplete last record (also one in fragments, some of them whole),
    is not damage: the daemon drops it (the last batch, never acknowledged) and starts, saying so."""
    copy, _ = damaged_copy(killed_store, tmp_path, damage)
    daemon = start_daemon(tmp_path, db=f"surrealkv://{copy}")
    try:
        assert "cut off a torn tail" in daemon.log()
        channel, runs, _ = stubs(daemon)
        with channel:
            assert runs.GetRun(rl.GetRunRequest(run_id="big")).run.total_events == 40
            assert runs.GetRun(rl.GetRunRequest(run_id="c2")).run.total_events == 200
            assert runs.VerifyRun(rl.VerifyRunRequest(run_id="big")).ok
    finally:
        daemon.stop(signal.SIGKILL)


def test_the_log_scan_tells_a_torn_tail_from_damage_in_the_middle(tmp_path: Path, killed_store: Path) -> None:
    sound = wal.check(killed_store / "wal")
    assert sound == ([], [])
    for damage, torn in (("flip", False), ("zero", False), ("cut", False), ("torn", True), ("torn-fragments", True)):
        copy, _ = damaged_copy(killed_store, tmp_path / damage, damage)
        found_torn, found_damaged = wal.check(copy / "wal")
        assert (len(found_torn), len(found_damaged)) == ((1, 0) if torn else (0, 1)), damage


def test_repair_refuses_a_store_a_daemon_has_open(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'ledger'}"
    daemon = start_daemon(tmp_path, db=url)
    try:
        refused = repair(url)
        assert refused.returncode != 0
        assert "open in a running daemon" in refused.stderr
    finally:
        daemon.stop(signal.SIGKILL)


@pytest.mark.timeout(180)
def test_a_damaged_table_file_is_refused_at_start_or_answers_data_loss_never_wrong_data(
    tmp_path: Path, killed_store: Path
) -> None:
    """Once the store is flushed (SIGTERM), its data sits in table files with per-block checksums. A flipped
    byte there stops the start with a message naming the checksum, or fails the calls that read the block
    with DATA_LOSS while the rest serves; a run is never read back short or altered."""
    flushed = tmp_path / "flushed"
    shutil.copytree(killed_store, flushed)
    daemon = start_daemon(tmp_path, db=f"surrealkv://{flushed}")
    assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    table = max((flushed / "sstables").glob("*.sst"), key=lambda path: path.stat().st_size)
    outcomes = []
    for fraction in (0.1, 0.3, 0.45):
        copy = tmp_path / f"damaged-{fraction}"
        shutil.copytree(flushed, copy)
        target = copy / "sstables" / table.name
        data = bytearray(target.read_bytes())
        data[int(len(data) * fraction)] ^= 0x10
        target.write_bytes(bytes(data))
        try:
            daemon = start_daemon(tmp_path, db=f"surrealkv://{copy}")
        except RuntimeError as refused:
            assert "fail their checksums" in str(refused) and "restore" in str(refused), str(refused)[-2000:]
            outcomes.append("refused")
            continue
        try:
            channel, runs, events = stubs(daemon)
            with channel:
                for run_id in RUNS:
                    try:
                        stored = [
                            e
                            for m in events.ReadEvents(es.ReadEventsRequest(run_id=run_id), timeout=30)
                            for e in m.events
                        ]
                        assert [e.seq for e in stored] == list(range(1, 201)), run_id
                        assert runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id)).ok
                        outcomes.append("whole")
                    except grpc.RpcError as error:
                        assert error.code() == grpc.StatusCode.DATA_LOSS, (error.code(), error.details())
                        assert "damaged" in error.details()
                        outcomes.append("data loss")
                assert health(channel) == SERVING, "damage in one place leaves the rest serving"
        finally:
            daemon.stop(signal.SIGKILL)
    assert {"refused", "data loss"} & set(outcomes), f"no flipped byte was ever noticed: {outcomes}"


def test_the_engines_error_texts_map_to_storage_faults() -> None:
    """The texts SurrealKV gave in these tests (and an EIO it gives the same way), and texts that are no
    storage fault: a transaction conflict, a missing record, a lost remote connection."""
    full = (
        "Cannot COMMIT: There was a problem with a transaction: WAL error: IO error: kind=no storage space, "
        "message=No space left on device (os error 28)"
    )
    assert isinstance(storage_fault(full), StorageFull)
    assert isinstance(
        storage_fault(
            "There was a problem with the key-value store: There was a problem with a "
            "transaction: SSTable error: checksum verification failed for block at 262802"
        ),
        StoreDamaged,
    )
    eio = storage_fault(
        "Cannot COMMIT: There was a problem with a transaction: WAL error: IO error: "
        "kind=uncategorized, message=Input/output error (os error 5)"
    )
    assert isinstance(eio, StorageFault) and not isinstance(eio, StorageFull)
    for harmless in (
        "The query was not executed due to a failed transaction",
        "Failed to commit transaction due to a read or write conflict. This transaction can be retried",
        "Expected a single result output when using the ONLY keyword",
    ):
        assert storage_fault(harmless) is None, harmless


def test_writes_after_a_fault_are_cut_back_to_the_log_as_it_was_at_the_fault(
    tmp_path: Path, killed_store: Path
) -> None:
    """What the engine writes after a storage fault (the failed writes, whole or in pieces) is cut off, back
    to the last whole record at the fault's size; damage before that point is left for the operator."""
    copy, segment = damaged_copy(killed_store, tmp_path / "after", "none")
    acknowledged = segment.read_bytes()
    at_fault = len(acknowledged) + 5  # the fault met a write whose first 5 bytes reached the file
    # Its pieces, then whole writes after it: three blocks' worth, so that whole records follow the first
    # misaligned one wherever the log happened to end (with 40,000 bytes, some endings left none).
    after = acknowledged[: 3 * wal.BLOCK_SIZE]
    assert len(after) == 3 * wal.BLOCK_SIZE
    segment.write_bytes(acknowledged + after)
    assert wal.check(copy / "wal")[1], "without the fault's size, what follows reads as damage"
    assert wal.drop_failed_writes(segment, at_fault) == len(after)
    assert segment.read_bytes() == acknowledged
    _, segment = damaged_copy(killed_store, tmp_path / "damaged", "flip")
    before = segment.read_bytes()
    assert wal.drop_failed_writes(segment, len(before)) == 0
    assert segment.read_bytes() == before
