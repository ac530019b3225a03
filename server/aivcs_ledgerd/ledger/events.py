"""Appending, reading, following and verifying the events of a run."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aivcs_ledgerd.ledger import validation
from aivcs_ledgerd.ledger.canonical import canonical_json, kind_json
from aivcs_ledgerd.ledger.chain import stored_event_digest
from aivcs_ledgerd.ledger.errors import InvalidArgument, Unavailable, run_not_found
from aivcs_ledgerd.ledger.hub import Hub
from aivcs_ledgerd.ledger.limits import Limits
from aivcs_ledgerd.ledger.ownership import SoleOwner
from aivcs_ledgerd.ledger.store_errors import translated, translated_stream
from aivcs_ledgerd.ledger.writer import AppendResult, Pending, Writers
from aivcs_ledgerd.model import Event, NewEvent
from aivcs_ledgerd.store import Database
from aivcs_ledgerd.store.events import first_seq_after, start_read
from aivcs_ledgerd.store.runs import get_run
from aivcs_ledgerd.util.futures import retrieve_exception

# A reader holds one window of storage at a time, sized to about WINDOW_BYTES
# of stored JSON. A window starts as small as the largest allowed payload
# demands and grows fourfold per read (up to MAX_WINDOW events) while events
# are small: a run of small events costs few round trips, and a stalled
# reader of large events pins about a megabyte, not a thousand payloads.
WINDOW_BYTES = 1 << 20
MAX_WINDOW = 1000


class _Window:
    """The adaptive number of seqs one storage read covers, kept per reader."""

    def __init__(self, max_payload_bytes: int) -> None:
        self.span = max(1, min(WINDOW_BYTES // max_payload_bytes, MAX_WINDOW))

    def observe(self, count: int, size: int) -> None:
        fitting = self.span * WINDOW_BYTES // max(size, 1) if count else MAX_WINDOW
        self.span = max(1, min(fitting, self.span * 4, MAX_WINDOW))


# An idle follower waits on the hub (writes of this daemon wake it at once) and re-reads storage
# only this often, with jitter, for writers the hub does not hear of (another daemon on a shared
# database), so thousands of idle subscribers cost no storage reads.
SAFETY_POLL_SECONDS = 30.0
OWNER_POLL_SECONDS = 1.0  # several replicas: how often an idle follower checks who owns the run
# A `kinds` filter is bounded (count and bytes), so one request cannot make every window's query
# costly, and deduplicated. The engine applies it to each window (it then skips the payloads of
# other events), which costs a bystander's appends less than reading every event and filtering
# in the daemon (`python -m bench.bystander`).
MAX_KINDS = 256
MAX_KINDS_BYTES = 16 << 10
# Storage scans (ReadEvents, SubscribeEvents catch-up, VerifyRun) that may run in the engine at
# once, daemon-wide (--max-concurrent-reads); more wait their turn window by window. A scan keeps
# an engine worker busy for a whole window, and an append waits for a free one: with one scan at a
# time, readers however many leave the appends a worker.
MAX_CONCURRENT_READS = 1


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    verified_events: int
    events_digest: str
    first_broken_seq: int | None = None
    reason: str = ""


class Events:
    def __init__(
        self,
        db: Database,
        hub: Hub,
        limits: Limits,
        ownership: SoleOwner | None = None,
        max_concurrent_reads: int = MAX_CONCURRENT_READS,
    ) -> None:
        self._db = db
        self._hub = hub
        self._limits = limits
        self.ownership = ownership or SoleOwner()
        self.writers = Writers(db, hub, self.ownership)
        self._reads = asyncio.Semaphore(max_concurrent_reads)

    @translated
    async def append(
        self,
        run_id: str,
        events: list[NewEvent],
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append one batch atomically; see EventStream.AppendEvents for the rules."""
        pending = self._pending(run_id, events, idempotency_key)
        return await self.writers.submit(run_id, pending, expected_last_seq, idempotency_key)

    def try_queue(
        self,
        run_id: str,
        events: list[NewEvent],
        expected_last_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> asyncio.Future[AppendResult] | None:
        """`append` up to the queuing, without a coroutine: the batch checked and in its run's writer
        now, and the future of its seqs (refusals arrive there as ledger errors); None, and nothing
        queued, when the run's queue is full. A stream queues its batches so, without a task each."""
        pending = self._pending(run_id, events, idempotency_key)
        return self.writers.try_queue(run_id, pending, expected_last_seq, idempotency_key)

    def _pending(self, run_id: str, events: list[NewEvent], idempotency_key: str | None) -> list[Pending]:
        """The batch checked, each event with the canonical JSON of its kind and payload."""
        validation.identifier("run_id", run_id)
        if not events:
            raise InvalidArgument("events", "a batch needs at least one event")
        if len(events) > self._limits.max_batch_events:
            raise InvalidArgument(
                "events", f"a batch holds at most {self._limits.max_batch_events} events, got {len(events)}"
            )
        pending = []
        kinds: dict[str, bytes] = {}  # a batch's kinds repeat: each is checked once
        for index, event in enumerate(events):
            kind = kinds.get(event.kind)
            if kind is None:
                kind = kinds[event.kind] = kind_json(validation.identifier(f"events[{index}].kind", event.kind))
            try:  # the field's path is built only for an error: per event, it cost as much as the check
                payload_json = canonical_json("payload", event.payload)
            except InvalidArgument as error:
                raise InvalidArgument(f"events[{index}].{error.field}", error.problem) from None
            pending.append(Pending(event, kind, payload_json))
        if idempotency_key is not None:
            validation.identifier("idempotency_key", idempotency_key)
        return pending

    @translated_stream
    async def read(
        self, run_id: str, from_seq: int = 0, to_seq: int = 0, kinds: list[str] | None = None, limit: int = 0
    ) -> AsyncIterator[list[Event]]:
        """Stored events in ascending seq, a window of storage at a time."""
        validation.identifier("run_id", run_id)
        if to_seq and from_seq > to_seq:
            raise InvalidArgument("to_seq", f"must be 0 or at least from_seq ({from_seq}), got {to_seq}")
        wanted = _kinds_filter(kinds)
        run = await get_run(self._db, run_id)
        if run is None:
            raise run_not_found(run_id)
        last = run.total_events if to_seq == 0 else min(to_seq, run.total_events)
        remaining = limit or None
        engine_kinds = sorted(wanted) if wanted is not None else None
        async for window in self._scan(run_id, max(from_seq, 1), last, self._window(), engine_kinds):
            if remaining is not None:
                window = window[:remaining]
                remaining -= len(window)
            yield window
            if remaining == 0:
                return

    def _window(self) -> _Window:
        return _Window(self._limits.max_payload_bytes)

    async def _scan(
        self, run_id: str, first: int, last: int, span: _Window, kinds: list[str] | None = None
    ) -> AsyncIterator[list[Event]]:
        """Stored events first..last (of `kinds`), in non-empty windows; see WINDOW_BYTES.

        The next window is read while the caller handles this one: the
        engine runs on its own threads, so storage and conversion overlap.
        At most two windows are held at a time.
        """
        ahead: tuple[asyncio.Future[tuple[list[Event], int]], int] | None = None
        seq = first
        try:
            while seq <= last:
                if ahead is None:
                    ahead = await self._read_ahead(run_id, seq, span, last, kinds)
                reading, end = ahead
                window, size = await reading
                span.observe(len(window), size)
                seq = end + 1
                ahead = None
                if seq <= last:
                    ahead = await self._read_ahead(run_id, seq, span, last, kinds)
                    # The next window's query exists now (Database.start); one loop turn lets its
                    # task hand it to the engine before the caller converts this window, which
                    # never awaits. Behind other readers (no free read slot) it waits its turn.
                    await asyncio.sleep(0)
                if window:
                    yield window
        finally:
            if ahead is not None:
                ahead[0].cancel()

    async def _read_ahead(
        self, run_id: str, first: int, span: _Window, last: int, kinds: list[str] | None
    ) -> tuple[asyncio.Future[tuple[list[Event], int]], int]:
        """Start reading the next window from `first`; a failure nobody waits for is not logged.

        With a read slot free (taken without waiting), the query is started here, before this
        returns; otherwise a task waits for a slot and then starts it. The slot is held until
        the window is read.
        """
        end = min(first + span.span - 1, last)
        if self._reads.locked():
            future = asyncio.ensure_future(self._read_window(run_id, first, end, kinds))
        else:
            await self._reads.acquire()  # free: no wait, no loop turn
            try:
                future = asyncio.ensure_future(start_read(self._db, run_id, first, end, kinds))
            except BaseException:
                self._reads.release()
                raise
            future.add_done_callback(lambda _: self._reads.release())
        future.add_done_callback(retrieve_exception)
        return future, end

    async def _read_window(
        self, run_id: str, first: int, last: int, kinds: list[str] | None
    ) -> tuple[list[Event], int]:
        async with self._reads:
            return await start_read(self._db, run_id, first, last, kinds)

    @translated_stream
    async def follow(
        self, run_id: str, from_seq: int = 0, elsewhere: Callable[[], Awaitable[bool]] | None = None
    ) -> AsyncIterator[list[Event]]:
        """Stored events from from_seq, then live ones, until the run is terminal.

        With several replicas, live events reach this replica's feed only when
        it writes the run: `elsewhere` is asked whenever the feed was idle for
        a poll interval, and when it says another replica owns the run, this
        ends early (not terminal) so that the caller follows that replica.

        The listener is registered before the first storage read, so nothing
        committed in between is missed; events already sent are skipped, so
        nothing is sent twice. When the live feed has a gap (the listener
        overflowed, or another daemon wrote) it reads storage again.
        """
        validation.identifier("run_id", run_id)
        next_seq = max(from_seq, 1)
        span = self._window()
        with self._hub.listen(run_id) as listener:
            catch_up = True
            while True:
                if catch_up:
                    listener.reset()
                    run = await get_run(self._db, run_id)
                    if run is None:
                        raise run_not_found(run_id)
                    async for window in self._scan(run_id, next_seq, run.total_events, span):
                        yield window
                        next_seq = window[-1].seq + 1
                    if run.status.terminal and next_seq > run.total_events:
                        return
                    catch_up = False
                # With replicas, ownership can move while the feed is idle: ask often.
                idle = OWNER_POLL_SECONDS if elsewhere is not None else SAFETY_POLL_SECONDS * random.uniform(0.75, 1.25)
                try:
                    notice = await asyncio.wait_for(listener.mailbox.get(), idle)
                except TimeoutError:
                    if elsewhere is not None and await elsewhere():
                        return
                    catch_up = True  # idle: storage may have writes the hub did not carry
                    continue
                if listener.closed:
                    raise Unavailable(f"the daemon is shutting down; subscribe again from seq {next_seq}")
                if notice is None and elsewhere is not None and await elsewhere():
                    return
                if notice is None or listener.overflowed:
                    catch_up = True  # terminal, or fell behind: storage has the truth
                    continue
                fresh = [event for event in notice if event.seq >= next_seq]
                if fresh and fresh[0].seq != next_seq:
                    catch_up = True
                    continue
                if fresh:
                    yield fresh
                    next_seq = fresh[-1].seq + 1

    @translated
    async def verify(self, run_id: str) -> Verdict:
        """Recompute the hash chain from storage as of the run's head when called; report the first break.

        Events appended while the call runs are not checked, but one stored
        beyond the head the run records afterwards is reported: an append
        writes its events and the head in one transaction, so no consistent
        state has events past total_events.
        """
        validation.identifier("run_id", run_id)
        run = await get_run(self._db, run_id)
        if run is None:
            raise run_not_found(run_id)
        digest, expected_seq = "", 1
        async for window in self._scan(run_id, 1, run.total_events, self._window()):
            for event in window:
                if event.seq != expected_seq:
                    return Verdict(False, expected_seq - 1, digest, expected_seq, f"event {expected_seq} is missing")
                recomputed = stored_event_digest(digest, event)
                if recomputed != event.digest:
                    return Verdict(
                        False,
                        expected_seq - 1,
                        digest,
                        event.seq,
                        f"event {event.seq}'s content does not match its stored digest",
                    )
                digest, expected_seq = recomputed, expected_seq + 1
        verified = expected_seq - 1
        if verified != run.total_events:
            return Verdict(False, verified, digest, verified + 1, f"event {verified + 1} is missing")
        beyond = await first_seq_after(self._db, run_id, verified)
        if beyond is not None:
            now = await get_run(self._db, run_id)  # read after the probe: a later head covers `beyond`
            if now is None or now.total_events < beyond:
                recorded = run.total_events if now is None else now.total_events
                return Verdict(
                    False,
                    verified,
                    digest,
                    verified + 1,
                    f"event {beyond} is stored but the run records {recorded} events",
                )
        if digest != run.events_digest:
            return Verdict(
                False, verified, digest, verified + 1, "the run's events_digest does not match the last event's digest"
            )
        return Verdict(True, verified, digest)

    async def close(self) -> None:
        await self.writers.close()


def _kinds_filter(kinds: list[str] | None) -> frozenset[str] | None:
    """The distinct kinds a read asks for, bounded; InvalidArgument names `kinds`."""
    if not kinds:
        return None
    if len(kinds) > MAX_KINDS:
        raise InvalidArgument("kinds", f"at most {MAX_KINDS} kinds per read, got {len(kinds)}")
    size = sum(len(kind.encode("utf-8", "surrogatepass")) for kind in kinds)
    if size > MAX_KINDS_BYTES:
        raise InvalidArgument("kinds", f"at most {MAX_KINDS_BYTES} bytes of kinds per read, got {size}")
    return frozenset(kinds)
