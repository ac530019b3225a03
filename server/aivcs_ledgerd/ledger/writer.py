"""Where seq is assigned: one serial writer per active run, with group commit.

Callers (unary appends, ingest streams, any number of them) queue batches
for a run; the run's writer drains whatever is queued into one transaction,
assigns consecutive seqs, extends the hash chain, and answers each caller
with its own range. Per-batch refusals (terminal run, expected_last_seq,
reused idempotency key) are decided here, in queue order, so one bad batch
never fails its neighbours.

The writer trusts a cached head of the run only as a guess: the append
transaction re-checks status and last seq and refuses if another writer
(another ledger on the same handle, another daemon on the same server)
moved the run, and the writer then re-reads the head and plans again.

The inactivity sweeper fails an idle run through `expire`, under the same
lock as a group's commit, so on one daemon it never overlaps an append.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aivcs_ledgerd.ledger.chain import event_digest
from aivcs_ledgerd.ledger.errors import (
    InvalidArgument,
    LedgerError,
    Unavailable,
    last_seq_mismatch,
    run_not_found,
    run_terminal,
)
from aivcs_ledgerd.ledger.hub import Hub
from aivcs_ledgerd.ledger.ownership import NotOwner, SoleOwner
from aivcs_ledgerd.ledger.store_errors import ledger_error
from aivcs_ledgerd.model import Event, NewEvent, Run
from aivcs_ledgerd.store import (
    Database,
    DuplicateRecord,
    Rejected,
    StoreConflict,
    StoreError,
)
from aivcs_ledgerd.store.database import Exclusive, Queries
from aivcs_ledgerd.store.events import RunHead, StoredAppend, append, find_appends, run_head
from aivcs_ledgerd.store.leases import FENCED, Fence
from aivcs_ledgerd.store.runs import expire_run, run_key
from aivcs_ledgerd.util.futures import retrieve_exception

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
# Events per transaction. The engine's cost per transaction grows faster than
# linearly with its size, so groups stay near the sweet spot the benchmark
# finds; a single larger batch still commits whole.
MAX_GROUP_EVENTS = 200
HEAD_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class AppendResult:
    first_seq: int
    last_seq: int
    replayed: bool = False


class Pending(NamedTuple):
    """A validated event with the canonical JSON of its kind and payload (a tuple: one is built per
    event, and a frozen dataclass cost several times as much to build)."""

    event: NewEvent
    kind_json: bytes
    payload_json: bytes


@dataclass(slots=True)
class Batch:
    """One caller's batch and the future its answer goes to."""

    events: list[Pending]
    expected_last_seq: int | None
    idempotency_key: str | None
    answer: asyncio.Future[AppendResult]
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if self.idempotency_key is not None:
            content = hashlib.sha256()
            for pending in self.events:
                content.update(
                    b"%s\x00%s\x00%r\x00" % (pending.kind_json, pending.payload_json, pending.event.timestamp_ns)
                )
            self.fingerprint = content.hexdigest()


class _Room:
    """Places for a run's unanswered batches: taken at once while one is free and nobody waits
    (so queuing a batch then costs no suspension, which asyncio.Semaphore's acquire does not
    promise), else waited for in arrival order.

    A waiter stays in line until it has resumed with the place it was handed: a batch arriving
    meanwhile queues behind it, so batches enter the run's queue in the order they asked.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, places: int) -> None:
        self._free = places
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self._free and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # never returns before those ahead in line have resumed with their places
        except BaseException:
            self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled():  # handed a place just as the caller left
                self.give()
            raise
        self._waiters.remove(waiter)
        self._hand_over()  # places freed while this one had yet to resume go on, in line order

    def give(self) -> None:
        self._free += 1
        self._hand_over()

    def _hand_over(self) -> None:
        """Free places to the first waiters not yet handed one (or cancelled), in line order."""
        for waiter in self._waiters:
            if not self._free:
                return
            if not waiter.done():
                self._free -= 1
                waiter.set_result(None)


@dataclass(slots=True)
class _RunQueue:
    room: _Room
    pending: list[Batch] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    callers: int = 0  # batches waiting for room or for their answer

    @property
    def idle(self) -> bool:
        return not self.pending and self.task is None and self.callers == 0


@dataclass(slots=True)
class _Plan:
    """The outcome of one pass over a group: what to write, and every answer."""

    head: RunHead
    now_ns: int = 0
    events: list[Event] = field(default_factory=list)
    appends: dict[str, StoredAppend] = field(default_factory=dict)
    answers: list[tuple[Batch, AppendResult | LedgerError]] = field(default_factory=list)
    tokens: tuple[int, int] = (0, 0)  # token usage the new events add to the run


class Writers:
    """The serial writers of all runs, over one database handle."""

    def __init__(
        self, db: Database, hub: Hub, ownership: SoleOwner | None = None, max_pending_batches: int = 256
    ) -> None:
        self._db = db
        self._hub = hub
        self._ownership = ownership or SoleOwner()
        self._queues: dict[str, _RunQueue] = {}
        self._heads: OrderedDict[str, RunHead] = OrderedDict()
        self._max_pending = max_pending_batches
        self._closing = False

    @property
    def active_runs(self) -> int:
        return len(self._queues)

    def try_queue(
        self,
        run_id: str,
        events: list[Pending],
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> asyncio.Future[AppendResult] | None:
        """Queue a batch now unless the run already has `max_pending_batches` unanswered (then None):
        the future of its seqs, where refusals arrive as ledger errors.

        Once queued, the batch is written whether or not anyone awaits the future: cancelling the
        future gives up only the answer, as with a lost response.
        """
        queue = self._queue(run_id)
        if not queue.room.try_take():
            return None
        return self._queued(run_id, queue, events, expected_last_seq, idempotency_key)

    async def submit(
        self,
        run_id: str,
        events: list[Pending],
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Queue a batch and wait for its seqs.

        At most `max_pending_batches` batches wait per run; further callers
        wait for room, which is how a fast producer is slowed down. If the
        caller is cancelled after its batch was queued, the batch may still
        be written: as with a lost response, retry with an idempotency key.
        """
        queue = self._queue(run_id)
        if not queue.room.try_take():
            queue.callers += 1  # waiting for room keeps the queue
            try:
                await queue.room.take()
            except BaseException:
                queue.callers -= 1
                self._drop_if_idle(run_id, queue)
                raise
            queue.callers -= 1  # and `_queued` counts the batch at once: no await between
        answer = self._queued(run_id, queue, events, expected_last_seq, idempotency_key)
        try:
            return await answer  # cancelling the caller cancels only its answer, not the write
        finally:
            # A refusal raised here has this frame in its traceback, and the future holds the
            # refusal: a cycle that would keep the batch's events (megabytes) until the cyclic
            # collector runs, which a flood of refused batches outpaces.
            del answer

    def _queue(self, run_id: str) -> _RunQueue:
        if self._closing:
            raise Unavailable("the daemon is shutting down")
        owner = self._ownership.remote_owner(run_key(run_id))
        if owner is not None:
            raise NotOwner(run_key(run_id), owner)
        queue = self._queues.get(run_id)
        if queue is None:
            queue = self._queues[run_id] = _RunQueue(_Room(self._max_pending))
        return queue

    def _queued(
        self,
        run_id: str,
        queue: _RunQueue,
        events: list[Pending],
        expected_last_seq: int | None,
        idempotency_key: str | None,
    ) -> asyncio.Future[AppendResult]:
        """The batch in the run's queue, holding the place it took until it is answered; its answer's future."""
        answer: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(functools.partial(self._answered, run_id, queue))
        queue.callers += 1
        queue.pending.append(Batch(events, expected_last_seq, idempotency_key, answer))
        if queue.task is None:
            queue.task = asyncio.create_task(self._drain(run_id, queue), name=f"writer:{run_id}")
        return answer

    def _answered(self, run_id: str, queue: _RunQueue, answer: asyncio.Future[AppendResult]) -> None:
        retrieve_exception(answer)  # a refusal whose caller has gone is not logged as never retrieved
        queue.callers -= 1
        queue.room.give()
        self._drop_if_idle(run_id, queue)

    async def close(self) -> None:
        """Refuse new batches and wait until every queued one is answered."""
        self._closing = True
        tasks = [queue.task for queue in self._queues.values() if queue.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def expire(self, run_id: str, seen_deadline_ns: int, changes: dict[str, Any]) -> Run | None:
        """Fail a run the sweeper found idle, unless it is not idle any more; the run, or None.

        Skipped while this daemon has batches of the run queued or being
        committed: those appends will move its deadline. Otherwise the run's
        lock is taken, as for a commit, and the transaction re-checks the
        deadline the sweeper saw (store.runs.expire_run), so an append or a
        Heartbeat committed first, by any daemon, keeps the run alive, and of
        several sweepers at most one fails it. Live subscribers are told.
        """
        key = run_key(run_id)
        if self._closing or run_id in self._queues or self._ownership.remote_owner(key) is not None:
            return None

        async def fail(session: Queries, fence: Fence | None) -> Run:
            return await expire_run(session, run_id, seen_deadline_ns, time.time_ns(), changes, fence)

        try:
            # With replicas, only the run's owner fails it (taking the lease when nobody holds it),
            # fenced like an append: never overlapping a write another replica makes.
            run = await self._ownership.fenced_write(self._db, key, fail)
        except NotOwner:
            return None  # another replica owns the run (or took it just now): it sweeps it
        except (Rejected, StoreConflict):
            return None  # alive, already ended, or another daemon came first
        finally:
            self.forget(run_id)
        self._hub.publish(run_id, None)
        return run

    def forget(self, run_id: str) -> None:
        """Drop the cached head, e.g. after the run was finished elsewhere."""
        self._heads.pop(run_id, None)

    async def _drain(self, run_id: str, queue: _RunQueue) -> None:
        try:
            while queue.pending:
                group: list[Batch] = []
                size = 0
                while queue.pending and (not group or size + len(queue.pending[0].events) <= MAX_GROUP_EVENTS):
                    batch = queue.pending.pop(0)
                    group.append(batch)
                    size += len(batch.events)
                plan = await self._commit(run_id, group)
                if plan is None:
                    continue
                if queue.pending:
                    # Published and answered on the next loop turn: the next group's query must reach
                    # the engine before the work these answers set off (callers resuming, streams
                    # reading and converting more requests), so that work overlaps the engine's.
                    asyncio.get_running_loop().call_soon(self._deliver, run_id, plan)
                else:
                    self._deliver(run_id, plan)  # nothing waits to be written: answer at once
        finally:
            queue.task = None
            self._drop_if_idle(run_id, queue)

    def _drop_if_idle(self, run_id: str, queue: _RunQueue) -> None:
        if queue.idle and self._queues.get(run_id) is queue:
            del self._queues[run_id]

    async def _commit(self, run_id: str, group: list[Batch]) -> _Plan | None:
        """Write one group; the plan whose answers are to be delivered, or None when all are settled.

        The run's lock on the handle is held from planning to commit, so a
        plan that met a concurrent change (another ledger on this handle, or
        another daemon) is redone before anyone else can move the run again.
        """
        key = run_key(run_id)
        try:
            async with self._ownership.fenced(self._db, key) as (session, fence, fresh):
                if fresh:
                    self.forget(run_id)  # another replica may have written since this one last did
                for _attempt in range(MAX_ATTEMPTS):
                    plan = await self._plan(session, run_id, group)
                    if plan is None:
                        return None
                    if not plan.events:
                        break
                    sent = time.monotonic()
                    try:
                        await append(
                            session,
                            run_id,
                            plan.head.last_seq,
                            plan.events,
                            plan.appends,
                            plan.now_ns,
                            plan.head.inactivity_timeout_ms,
                            plan.tokens,
                            fence,
                        )
                    except (Rejected, StoreConflict, DuplicateRecord) as moved:
                        if isinstance(moved, Rejected) and moved.reason == FENCED:
                            raise  # another replica took the run over: nothing of this group was written
                        log.info(
                            "append to run %s met a concurrent change (%s); planning again",
                            run_id,
                            moved,
                            extra={"run_id": run_id},
                        )
                        self.forget(run_id)
                        continue
                    if fence is not None:
                        self._ownership.renewed(key, sent)
                    last = plan.events[-1]
                    self._remember(
                        run_id, RunHead(plan.head.status, last.seq, last.digest, plan.head.inactivity_timeout_ms)
                    )
                    break
                else:
                    raise Unavailable(f"run {run_id!r} kept changing under this writer; retry")
        except Exception as error:
            self.forget(run_id)
            if isinstance(error, LedgerError):
                failure: LedgerError = error
            elif isinstance(error, StoreError):
                failure = ledger_error(error)
            else:
                log.exception("append to run %s failed unexpectedly", run_id, extra={"run_id": run_id})
                failure = Unavailable("the append failed unexpectedly; nothing of it was written")
            for batch in group:
                _settle(batch, failure)
            return None
        return plan

    def _deliver(self, run_id: str, plan: _Plan) -> None:
        if plan.events:
            try:
                self._hub.publish(run_id, plan.events)
            except Exception:  # the events are stored: their writers get their answers regardless
                log.exception("telling subscribers of run %s failed", run_id, extra={"run_id": run_id})
        for batch, outcome in plan.answers:
            _settle(batch, outcome)

    async def _plan(self, session: Exclusive, run_id: str, group: list[Batch]) -> _Plan | None:
        head = await self._head(session, run_id)
        if head is None:
            for batch in group:
                _settle(batch, run_not_found(run_id))
            return None
        keys = [b.idempotency_key for b in group if b.idempotency_key is not None]
        stored = await find_appends(session, run_id, keys) if keys else {}
        now = time.time_ns()
        plan = _Plan(head, now)
        last_seq, digest = head.last_seq, head.events_digest
        for batch in group:
            key = batch.idempotency_key
            earlier = None if key is None else stored.get(key) or plan.appends.get(key)
            if earlier is not None:
                if earlier.fingerprint != batch.fingerprint:
                    plan.answers.append(
                        (
                            batch,
                            InvalidArgument(
                                "idempotency_key", f"{key!r} was used for a different batch on run {run_id!r}"
                            ),
                        )
                    )
                else:
                    plan.answers.append((batch, AppendResult(earlier.first_seq, earlier.last_seq, replayed=True)))
                continue
            if head.status.terminal:
                plan.answers.append(
                    (
                        batch,
                        run_terminal(
                            run_id, head.status, f"run {run_id!r} is {head.status.name}; terminal runs take no events"
                        ),
                    )
                )
                continue
            if batch.expected_last_seq is not None and batch.expected_last_seq != last_seq:
                plan.answers.append((batch, last_seq_mismatch(run_id, last_seq, batch.expected_last_seq)))
                continue
            first = last_seq + 1
            for pending in batch.events:
                last_seq += 1
                new = pending.event
                timestamp_ns = now if new.timestamp_ns is None else new.timestamp_ns
                digest = event_digest(digest, last_seq, pending.kind_json, pending.payload_json, timestamp_ns)
                plan.events.append(Event(run_id, last_seq, new.kind, new.payload, timestamp_ns, digest))
                if new.input_tokens or new.output_tokens:
                    plan.tokens = (plan.tokens[0] + new.input_tokens, plan.tokens[1] + new.output_tokens)
            if key is not None:
                plan.appends[key] = StoredAppend(first, last_seq, batch.fingerprint)
            plan.answers.append((batch, AppendResult(first, last_seq)))
        return plan

    async def _head(self, session: Exclusive, run_id: str) -> RunHead | None:
        head = self._heads.get(run_id)
        if head is None:
            head = await run_head(session, run_id)
            if head is not None:
                self._remember(run_id, head)
        else:
            self._heads.move_to_end(run_id)
        return head

    def _remember(self, run_id: str, head: RunHead) -> None:
        self._heads[run_id] = head
        self._heads.move_to_end(run_id)
        while len(self._heads) > HEAD_CACHE_SIZE:
            self._heads.popitem(last=False)


def _settle(batch: Batch, outcome: AppendResult | LedgerError) -> None:
    if batch.answer.done():
        return
    if isinstance(outcome, AppendResult):
        batch.answer.set_result(outcome)
    else:
        batch.answer.set_exception(outcome)
