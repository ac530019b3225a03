"""Runs recorded from framework callbacks without the framework waiting for the ledger.

The adapters (`aivcs.ledger.langchain`, `aivcs.ledger.openai_agents`) are
called on the agent's own path, once per step. A `Recorder` takes their
starts, events and ends into one in-memory queue and does every ledger call
on its own thread: it creates the run (with a client-chosen run id, so the
id is known at once and a retried create returns the same run), feeds a
buffered `EventWriter` per run, and ends the run after flushing it.

What happens when the ledger is slow or away is the writer's `when_full`:
"block": at most `max_buffered_events` events wait in the queue, then the
caller waits for room (nothing is lost); "drop": past that bound an event is
dropped at once, counted in `dropped` and logged (rate-limited). Starts and
ends are never dropped. A run whose creation fails for good (after
`retry_timeout` of retries, or at once for a refusal) records nothing: its
events are counted as dropped and its `end` future carries the error.
Events keep the order they were queued in, which is the order of the seqs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc

from aivcs.ledger._batching import Backoff
from aivcs.ledger._client import Client
from aivcs.ledger._errors import LedgerError
from aivcs.ledger._models import JSON, Run
from aivcs.ledger._reports import Throttle
from aivcs.ledger._session import Ending, run_end
from aivcs.ledger._settings import WriterSettings, settings_for_run
from aivcs.ledger._writer import EventWriter

__all__ = ["LOGGER", "Recorder"]

LOGGER = logging.getLogger("aivcs.ledger.adapters")

_RETRY_CREATE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(slots=True)
class _Start:
    key: str
    create: dict[str, Any]


@dataclass(slots=True)
class _Emit:
    key: str
    kind: str
    payload: dict[str, JSON]
    timestamp_ns: int


@dataclass(slots=True)
class _End:
    key: str
    ending: Ending
    duration_ms: int
    done: Future[Run]


@dataclass(slots=True)
class _Recording:
    run_id: str
    writer: EventWriter | None = None  # None: the run could not be created
    error: LedgerError | None = None


_Command = _Start | _Emit | _End


class Recorder:
    """One queue and one thread that turn starts, events and ends into ledger calls (module docstring)."""

    def __init__(self, client: Client, settings: WriterSettings) -> None:
        self._client = client
        self._settings = settings
        self._cond = threading.Condition()
        self._queue: deque[_Command] = deque()
        self._queued_events = 0
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._recordings: dict[str, _Recording] = {}
        self._starts: dict[str, float] = {}
        self._queue_drops = 0
        self._lost = 0
        self._writer_drops = 0
        self._drop_throttle = Throttle(settings.log_interval)
        self._warned_closed = False

    @property
    def settings(self) -> WriterSettings:
        return self._settings

    @property
    def dropped(self) -> int:
        """Events not stored: dropped while the queue or a writer was full, or of runs never created."""
        with self._cond:
            live = sum(r.writer.dropped for r in self._recordings.values() if r.writer is not None)
            return self._queue_drops + self._lost + self._writer_drops + live

    def start(self, key: str, **create: Any) -> None:
        """Queue the creation of a run (`runs.create` arguments, with its `run_id`) for `key`."""
        with self._cond:
            self._starts[key] = time.monotonic()
            self._put(_Start(key, create))

    def emit(self, key: str, kind: str, payload: dict[str, JSON], timestamp_ns: int | None = None) -> bool:
        """Queue one event of `key`'s run, stamped `timestamp_ns` (default: now); False if it was dropped."""
        stamp = time.time_ns() if timestamp_ns is None else timestamp_ns
        with self._cond:
            while self._queued_events >= self._settings.max_buffered_events and not self._closed:
                if self._settings.when_full == "drop":
                    self._queue_drops += 1
                    if self._drop_throttle.due():
                        LOGGER.warning(
                            "ledger adapter: %d events waiting, dropped %d events so far",
                            self._queued_events,
                            self._queue_drops,
                        )
                    return False
                self._cond.wait()
            self._queued_events += 1
            self._put(_Emit(key, kind, payload, stamp))
        return True

    def end(self, key: str, ending: Ending) -> Future[Run]:
        """Queue the end of `key`'s run; the future gets the ended run, or the error that kept it from it."""
        done: Future[Run] = Future()
        with self._cond:
            began = self._starts.pop(key, time.monotonic())
            self._put(_End(key, ending, int((time.monotonic() - began) * 1000), done))
        return done

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far has been handled; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Handle what is queued, then stop the thread; False if that took longer than `timeout`."""
        drained = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if drained and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return drained

    def _put(self, command: _Command) -> None:
        if self._closed:  # a handler left attached after close() must not break the agent
            if not self._warned_closed:
                LOGGER.warning("ledger adapter: closed, no longer recording")
                self._warned_closed = True
            if isinstance(command, _Emit):
                self._queued_events -= 1
                self._queue_drops += 1
            elif isinstance(command, _End):
                command.done.set_exception(LedgerError("the ledger adapter was closed before the run ended"))
            return
        self._queue.append(command)
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="aivcs-ledger-recorder", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    # -- the recorder's thread ------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                command = self._queue.popleft()
                if isinstance(command, _Emit):
                    self._queued_events -= 1
                self._busy = True
                self._cond.notify_all()
            try:
                self._handle(command)
            except Exception:  # keep recording the other runs
                LOGGER.exception("ledger adapter: could not handle %s", type(command).__name__)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _handle(self, command: _Command) -> None:
        if isinstance(command, _Start):
            created = self._create(command.create)
            with self._cond:
                self._recordings[command.key] = created
        elif isinstance(command, _Emit):
            recording = self._recordings.get(command.key)
            if recording is None or recording.writer is None:
                self._lost += 1
                return
            try:
                recording.writer.emit(command.kind, command.payload, timestamp=command.timestamp_ns)
            except LedgerError as error:
                recording.error = recording.error or error
                self._lost += 1
        else:
            with self._cond:
                ended = self._recordings.pop(command.key, None)
            try:
                command.done.set_result(self._finish(ended, command))
            except LedgerError as error:
                command.done.set_exception(error)

    def _create(self, create: dict[str, Any]) -> _Recording:
        recording = _Recording(run_id=str(create["run_id"]))
        backoff = Backoff(self._settings.retry_timeout)
        warned = False
        while True:
            try:
                run = self._client.runs.create(**create)
                break
            except LedgerError as error:
                delay = backoff.next_delay() if error.code in _RETRY_CREATE else None
                if delay is None:
                    LOGGER.error(
                        "ledger adapter: run %s could not be created, its events are dropped: %s",
                        recording.run_id,
                        error,
                    )
                    recording.error = error
                    return recording
                if not warned:
                    LOGGER.warning("ledger adapter: creating run %s failed, retrying: %s", recording.run_id, error)
                    warned = True
                time.sleep(delay)
        settings = settings_for_run(self._settings, run.inactivity_timeout_ms)
        recording.writer = self._client.events.writer(run.run_id, settings=settings)
        return recording

    def _finish(self, recording: _Recording | None, command: _End) -> Run:
        if recording is None:
            raise LedgerError("the run was never started")
        writer = recording.writer
        if writer is None:
            assert recording.error is not None
            raise recording.error
        expected: int | None = None
        try:
            writer.close()
            expected = writer.acknowledged
        except LedgerError as error:
            recording.error = recording.error or error
        finally:
            with self._cond:
                self._writer_drops += writer.dropped
        end = run_end(
            command.ending, duration_ms=command.duration_ms, acknowledged=expected, not_stored=recording.error
        )
        return end.apply(recording.run_id, self._client.runs)
