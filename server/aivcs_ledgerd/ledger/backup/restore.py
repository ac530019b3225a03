"""Restoring a dump: each run checked link by link and made visible whole, or refused with nothing of it stored.

Records arrive in dump order and are handled one at a time, so memory holds
one batch of events however large a run is. A run not in the target is
staged (store/backup.py): its events are written in batches while its run
record does not exist, then the run record is created in one transaction,
only once the whole chain has been recomputed and ends at the run's head. A
run refused on the way, or interrupted (a malformed record, the stream
ending), has its staged rows removed; rows left by a daemon that died
mid-restore are removed before the same run is restored again.

Every write goes through the ownership's fenced_write under the run's (or
agent's) key, as appends and promotions do: one writer per key in this
process and, with several replicas, the key's lease, so a restore never
races a live writer anywhere.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aivcs_ledgerd.ledger import validation
from aivcs_ledgerd.ledger.backup import format as fmt
from aivcs_ledgerd.ledger.backup.patience import patiently
from aivcs_ledgerd.ledger.canonical import canonical_json
from aivcs_ledgerd.ledger.chain import event_digest
from aivcs_ledgerd.ledger.errors import InvalidArgument
from aivcs_ledgerd.ledger.ownership import NotOwner, SoleOwner
from aivcs_ledgerd.ledger.store_errors import translated
from aivcs_ledgerd.model import RunStatus
from aivcs_ledgerd.store import Database, DuplicateRecord, Rejected
from aivcs_ledgerd.store import backup as store
from aivcs_ledgerd.store.database import Queries
from aivcs_ledgerd.store.leases import Fence
from aivcs_ledgerd.store.releases import current, lock_key
from aivcs_ledgerd.store.runs import NS_PER_MS, run_key

log = logging.getLogger(__name__)
T = TypeVar("T")

# Events per staging transaction: the writer's group size, where the engine's cost per event is lowest.
EVENTS_PER_BATCH = 200
APPENDS_PER_BATCH = 500
RELEASES_PER_BATCH = 500
MIN_NS = -(2**63)


class Verdict(enum.Enum):
    RESTORED = "restored"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one run (run_id set) or one agent's release history (agent_name set)."""

    verdict: Verdict
    items: int
    run_id: str = ""
    agent_name: str = ""
    first_bad_seq: int | None = None
    reason: str = ""


Write = Callable[[Queries, Fence | None], Awaitable[None]]


class _Refusal(Exception):
    def __init__(self, reason: str, first_bad_seq: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.first_bad_seq = first_bad_seq


@dataclass(slots=True)
class _Run:
    record: dict[str, Any]
    existing: dict[str, Any] | None
    staged: bool = False  # whether rows of it may be stored (to remove when refused)
    claimed: bool = False  # in the daemon's set of runs being restored
    refusal: _Refusal | None = None
    next_seq: int = 1
    head: str = ""
    events: list[list[Any]] = field(default_factory=list)
    appends: list[list[Any]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        run_id: str = self.record["run_id"]
        return run_id


@dataclass(slots=True)
class _History:
    agent_name: str
    target_head: int
    next_sequence: int = 1
    refusal: _Refusal | None = None
    wrote: bool = False
    target_page: dict[int, dict[str, Any]] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)


class Restore:
    """One restore stream's state: feed it the records in order, then `finish` (or `abort`)."""

    def __init__(
        self,
        db: Database,
        ownership: SoleOwner,
        restoring: set[str] | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """`restoring`: the run ids every restore on this daemon is writing, shared by all of them."""
        self._db = db
        self._restoring = restoring if restoring is not None else set()
        self._ownership = ownership
        self._now_ns = now_ns
        self.records = 0
        self.events = 0
        self.complete = False
        self.outcomes: list[Outcome] = []
        self._runs = 0
        self._header = False
        self._appends = 0
        self._releases = 0
        self._run: _Run | None = None
        self._history: _History | None = None

    @translated
    async def feed(self, texts: list[str]) -> None:
        """Handle records in order, adding to `outcomes`; InvalidArgument (naming the record) ends the stream."""
        outcomes = self.outcomes
        for text in texts:
            self.records += 1
            kind, fields = fmt.parse_line(self.records, text)
            if self.complete:
                raise InvalidArgument(fields.where, "follows the end record")
            if not self._header:
                if kind != fmt.HEADER:
                    raise InvalidArgument(fields.where, "must be the dump's header record (is this a ledger dump?)")
                fmt.check_header(fields)
                self._header = True
            elif kind == fmt.EVENT:
                await self._event(self._current(fields), fields)
            elif kind == fmt.APPEND:
                await self._append(self._current(fields), fields)
            elif kind == fmt.RELEASE:
                await self._close_run(outcomes)
                await self._release(fields, outcomes)
            elif kind == fmt.RUN:
                await self._close_run(outcomes)
                await self._close_history(outcomes)
                self._run = await self._open_run(fmt.parse_run(fields))
                self._runs += 1
            elif kind == fmt.END:
                await self._close_run(outcomes)
                await self._close_history(outcomes)
                self._check_end(fields)
                self.complete = True
            else:
                raise InvalidArgument(f"{fields.where}.record", f"unknown record kind {kind!r}")

    def taken(self) -> list[Outcome]:
        """The outcomes decided since the last call."""
        outcomes, self.outcomes = self.outcomes, []
        return outcomes

    @translated
    async def abort(self) -> None:
        """The stream ended early or failed: remove the staged rows of the run in progress."""
        run, self._run = self._run, None
        if run is not None:
            try:
                if run.staged:
                    await self._clear(run)
            finally:
                self._unclaim(run)

    def _unclaim(self, run: _Run) -> None:
        if run.claimed:
            self._restoring.discard(run.run_id)
            run.claimed = False

    # -- runs ---------------------------------------------------------------------------------

    def _current(self, fields: fmt.Fields) -> _Run:
        run_id = fields.text("run_id", validation.MAX_ID_BYTES)
        if self._run is None or self._run.run_id != run_id:
            raise InvalidArgument(f"{fields.where}.run_id", f"{run_id!r} is not the run the records before begin")
        return self._run

    async def _write(self, key: str, write: Callable[[bool], Write]) -> None:
        """One write under `key`, repeated through an outage; `write(repeat)` makes the statement."""

        async def attempt(repeat: bool) -> None:
            await self._ownership.fenced_write(self._db, key, write(repeat))

        await patiently(attempt, f"restore of {key}")

    async def _read(self, call: Callable[[], Awaitable[T]]) -> T:
        return await patiently(lambda _: call(), "restore")

    async def _open_run(self, record: dict[str, Any]) -> _Run:
        run_id = record["run_id"]
        row = await self._read(lambda: store.run_row(self._db, run_id))
        run = _Run(record, None if row is None else fmt.run_record(row))
        if run.existing is not None:
            return run
        if run_id in self._restoring:  # another stream stages it: removing its rows would break that run
            run.refusal = _Refusal("another restore on this daemon is writing the run right now")
            return run
        self._restoring.add(run_id)
        run.claimed = True
        # Read again under the claim: another stream may have created the run (and let go of it)
        # since the read above, and staging over it would be refused as a live run's.
        row = await self._read(lambda: store.run_row(self._db, run_id))
        if row is not None:
            self._unclaim(run)
            run.existing = fmt.run_record(row)
            return run
        try:
            await self._write(run_key(run_id), lambda _: lambda s, f: store.clear_staged(s, run_id, f))
            run.staged = True
        except Rejected as rejected:
            if rejected.reason != store.EXISTS:
                raise
            run.refusal = _Refusal("the run was created in the target while it was being restored")
        except NotOwner as owned:
            run.refusal = _Refusal(f"another replica owns the run ({owned.address or 'unknown'}); restore it later")
        return run

    async def _event(self, run: _Run, fields: fmt.Fields) -> None:
        self.events += 1
        if run.refusal is not None:
            return
        seq = fields.integer("seq", 1)
        expected = run.next_seq
        if seq != expected:
            problem = f"event {expected} is missing" if seq > expected else f"event {seq} appears again"
            run.refusal = _Refusal(problem, expected)
            return
        if seq > run.record["total_events"]:
            run.refusal = _Refusal(
                f"event {seq} is beyond the run's head (total_events {run.record['total_events']})",
                run.record["total_events"] + 1,
            )
            return
        kind = validation.identifier(f"{fields.where}.kind", fields.text("kind", validation.MAX_ID_BYTES))
        payload = fields.obj("payload")
        timestamp_ns = fields.integer("timestamp_ns", MIN_NS)
        digest = fields.text("digest", 64)
        try:
            recomputed = event_digest(
                run.head,
                seq,
                canonical_json("kind", kind),
                canonical_json(f"{fields.where}.payload", payload),
                timestamp_ns,
            )
        except InvalidArgument as error:
            run.refusal = _Refusal(f"event {seq}: {error}", seq)
            return
        if recomputed != digest:
            run.refusal = _Refusal(f"event {seq}'s content does not match its digest", seq)
            return
        run.head, run.next_seq = digest, seq + 1
        if run.staged:
            run.events.append([seq, kind, payload, timestamp_ns, digest])
            if len(run.events) >= EVENTS_PER_BATCH:
                await self._flush(run)

    async def _append(self, run: _Run, fields: fmt.Fields) -> None:
        self._appends += 1
        key = fields.identifier("key")
        first, last = fields.integer("first_seq", 1), fields.integer("last_seq", 1)
        if first > last or last > run.record["total_events"]:
            raise fields.bad("last_seq", f"{first}..{last} is not a range of the run's events")
        fingerprint = fields.text("fingerprint", 64)
        if run.staged and run.refusal is None:
            run.appends.append([key, first, last, fingerprint])
            if len(run.appends) >= APPENDS_PER_BATCH:
                await self._flush(run)

    async def _flush(self, run: _Run) -> None:
        run_id = run.run_id
        events, run.events = run.events, []
        appends, run.appends = run.appends, []
        try:
            if events:
                await self._write(
                    run_key(run_id), lambda again: lambda s, f: store.stage_events(s, run_id, events, f, again)
                )
            if appends:
                await self._write(
                    run_key(run_id), lambda again: lambda s, f: store.stage_appends(s, run_id, appends, f, again)
                )
        except Rejected as rejected:
            if rejected.reason != store.EXISTS:
                raise
            run.staged = False  # rows of a live run: never remove them
            run.refusal = _Refusal("the run was created in the target while it was being restored")
        except DuplicateRecord:
            run.refusal = _Refusal("the target already holds events of this run under no run record")
        except NotOwner as owned:
            run.refusal = _Refusal(
                f"another replica took the run over ({owned.address or 'unknown'}); restore it later"
            )

    async def _close_run(self, outcomes: list[Outcome]) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        try:
            await self._decide(run, outcomes)
        finally:
            self._unclaim(run)

    async def _decide(self, run: _Run, outcomes: list[Outcome]) -> None:
        record = run.record
        checked = run.next_seq - 1
        if run.refusal is None:
            if checked != record["total_events"]:
                run.refusal = _Refusal(f"event {run.next_seq} is missing", run.next_seq)
            elif run.head != record["events_digest"]:
                run.refusal = _Refusal(
                    "the run's events_digest does not match the last event's digest", record["total_events"] + 1
                )
        if run.refusal is None and run.existing is not None:
            differs = [name for name in record if record[name] != run.existing.get(name)]
            if not differs:
                outcomes.append(Outcome(Verdict.UNCHANGED, checked, run_id=run.run_id))
                return
            run.refusal = _Refusal(f"the run exists in the target with different content ({', '.join(differs)})")
        if run.refusal is None:
            await self._flush(run)
        if run.refusal is None:
            try:
                await self._create(run)
                outcomes.append(Outcome(Verdict.RESTORED, checked, run_id=run.run_id))
                return
            except Rejected as rejected:
                if rejected.reason != store.EXISTS:
                    raise
                row = await self._read(lambda: store.run_row(self._db, run.run_id))
                if row is not None and fmt.run_record(row) == record:  # an attempt that committed unseen
                    outcomes.append(Outcome(Verdict.RESTORED, checked, run_id=run.run_id))
                    return
                run.staged = False
                run.refusal = _Refusal("the run was created in the target while it was being restored")
            except DuplicateRecord:
                run.refusal = _Refusal(f"another run in the target has the creation key {record['created_ns']}")
            except NotOwner as owned:
                run.refusal = _Refusal(f"another replica owns the run ({owned.address or 'unknown'}); restore it later")
        refusal = run.refusal
        assert refusal is not None
        if run.staged:
            await self._clear(run)
        log.warning("restore refused run %r: %s", run.run_id, refusal.reason)
        outcomes.append(
            Outcome(
                Verdict.REFUSED, checked, run_id=run.run_id, first_bad_seq=refusal.first_bad_seq, reason=refusal.reason
            )
        )

    async def _create(self, run: _Run) -> None:
        record = run.record
        times = {
            "created_at": record["created_at_ns"],
            "completed_at": record["completed_at_ns"],
            "last_activity_at": record["last_activity_at_ns"],
        }
        row = {
            name: value
            for name, value in record.items()
            if value is not None and name != "record" and not name.endswith("_at_ns")
        }
        if record["status"] == RunStatus.RUNNING.value and record["inactivity_timeout_ms"] > 0:
            # Counted from the restore: a move must not fail the runs agents are still writing.
            row["inactivity_deadline_ns"] = self._now_ns() + record["inactivity_timeout_ms"] * NS_PER_MS
        await self._write(run_key(run.run_id), lambda _: lambda s, f: store.create_run(s, row, times, f))

    async def _clear(self, run: _Run) -> None:
        run_id = run.run_id
        try:
            await self._write(run_key(run_id), lambda _: lambda s, f: store.clear_staged(s, run_id, f))
        except (Rejected, NotOwner) as error:
            # Rows of a run created meanwhile are its own; a lost lease leaves them for the next restore.
            log.warning("could not remove the staged rows of run %r: %s", run_id, error)

    # -- release histories ----------------------------------------------------------------------

    async def _release(self, fields: fmt.Fields, outcomes: list[Outcome]) -> None:
        entry = fmt.parse_release(fields)
        agent = entry["agent_name"]
        history = self._history
        if history is None or history.agent_name != agent:
            await self._close_history(outcomes)
            head = await self._read(lambda: current(self._db, agent))
            history = self._history = _History(agent, 0 if head is None else head.sequence)
        self._releases += 1
        if history.refusal is not None:
            return
        sequence = entry["sequence"]
        if sequence != history.next_sequence:
            history.refusal = _Refusal(
                f"entry {history.next_sequence} of the history is missing", history.next_sequence
            )
            return
        if entry["rollback_of"] is not None and entry["rollback_of"] >= sequence:
            raise fields.bad("rollback_of", f"must name an earlier entry than {sequence}")
        history.next_sequence += 1
        if sequence <= history.target_head:
            stored = await self._stored_entry(history, sequence)
            differs = [name for name in entry if entry[name] != stored.get(name)]
            if differs:
                history.refusal = _Refusal(
                    f"entry {sequence} exists in the target with different content ({', '.join(differs)})", sequence
                )
            return
        history.entries.append(entry)
        if len(history.entries) >= RELEASES_PER_BATCH:
            await self._flush_history(history)

    async def _stored_entry(self, history: _History, sequence: int) -> dict[str, Any]:
        if sequence not in history.target_page:
            rows = await self._read(
                lambda: store.release_rows(self._db, history.agent_name, sequence, RELEASES_PER_BATCH)
            )
            history.target_page = {row["sequence"]: fmt.release_record(row) for row in rows}
        return history.target_page.get(sequence, {})

    async def _flush_history(self, history: _History) -> None:
        entries, history.entries = history.entries, []
        if not entries or history.refusal is not None:
            return
        agent, after = history.agent_name, entries[0]["sequence"] - 1
        rows = [
            {name: value for name, value in entry.items() if value is not None and name != "record"}
            for entry in entries
        ]
        try:
            await self._write(lock_key(agent), lambda _: lambda s, f: store.append_releases(s, agent, after, rows, f))
            history.wrote = True
        except Rejected as rejected:
            if rejected.reason != "moved":
                raise
            if await self._stored_entry(history, entries[-1]["sequence"]) == entries[-1]:
                history.wrote = True  # an attempt that committed unseen
                return
            history.refusal = _Refusal("the history changed in the target while it was being restored")
        except NotOwner as owned:
            history.refusal = _Refusal(
                f"another replica owns the history ({owned.address or 'unknown'}); restore it later"
            )

    async def _close_history(self, outcomes: list[Outcome]) -> None:
        history, self._history = self._history, None
        if history is None:
            return
        await self._flush_history(history)
        items = history.next_sequence - 1
        if history.refusal is None and items < history.target_head:
            history.refusal = _Refusal(f"the target's history holds {history.target_head} entries, the dump {items}")
        if history.refusal is not None:
            reason = history.refusal.reason
            if history.wrote:
                reason += "; the entries before it were restored"
            log.warning("restore refused the release history of %r: %s", history.agent_name, reason)
            outcomes.append(
                Outcome(
                    Verdict.REFUSED,
                    items,
                    agent_name=history.agent_name,
                    first_bad_seq=history.refusal.first_bad_seq,
                    reason=reason,
                )
            )
            return
        verdict = Verdict.RESTORED if history.wrote else Verdict.UNCHANGED
        outcomes.append(Outcome(verdict, items, agent_name=history.agent_name))

    def _check_end(self, fields: fmt.Fields) -> None:
        # Removed or added events are the chain's to find (their run is refused); whole runs or entries are this.
        for name, seen in (("runs", self._runs), ("releases", self._releases)):
            counted = fields.integer(name)
            if counted != seen:
                raise fields.bad(name, f"counts {counted}, but the dump holds {seen}: records were removed or added")
