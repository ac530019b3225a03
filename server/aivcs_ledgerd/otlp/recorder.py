"""Mapped spans into the ledger: a trace's run is created, appended to and ended.

Spans arrive as they end (children before their parents), in several Export
calls, from several processes. So:

- the first span of a trace creates its run (CreateRun with the trace's
  run_id, which is idempotent), using the root's identity when the root is
  in the same request and the first span's otherwise;
- each span is appended as a batch of one event with the idempotency key
  `otlp:<span id>`: a span sent again (exporters retry) answers with its
  original seq and is not stored twice;
- within one request a trace's spans are appended in the order they came,
  its root spans last, each after the one before has its seq;
- the root span ends the run after its event is stored, naming the agent
  (a run created from a child span gets the root's `gen_ai.agent.name`
  then; a derived spec digest follows the new name);
- spans of a run that is already terminal are refused, one by one.

Refusals are counted per span for the partial-success answer. Failures
that a retry may cure (database unavailable, daemon draining) are reported
apart, so the servicer answers UNAVAILABLE and the exporter sends the whole
request again, which the idempotency keys make safe.

With several replicas, a trace whose run another replica owns is not
stored here: it is reported as moved, with the owner's address when known,
and the servicer sends its spans to the owner. Spans of it that were stored
here before the run moved are answered there as resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from aivcs_ledgerd.ledger import Ledger
from aivcs_ledgerd.ledger.errors import (
    AlreadyExists,
    FailedPrecondition,
    LedgerError,
    ResourceExhausted,
    Unavailable,
)
from aivcs_ledgerd.ledger.ownership import NotOwner
from aivcs_ledgerd.ledger.runs import Finish, NewRun
from aivcs_ledgerd.ledger.writer import AppendResult
from aivcs_ledgerd.model import Evaluation, RunStatus
from aivcs_ledgerd.otlp.spans import SpanRecord, derived_spec_digest

log = logging.getLogger(__name__)

# Spans of one trace appended at once: each is its own batch, and the run's
# writer commits whatever is queued in one transaction. They enter the run's
# queue in the order they are submitted (its room is a FIFO semaphore).
WINDOW = 1024
KNOWN_RUNS = 10_000  # trace ids whose run this daemon knows exists: no CreateRun for them
# Traces of one request stored at once: a request of thousands of one-span traces
# must not start thousands of run creations together.
TRACES_IN_FLIGHT = 64


@dataclass(slots=True)
class Outcome:
    """What became of a request's spans."""

    stored: int = 0  # appended now or earlier (a resent span counts as stored)
    refusals: list[str] = field(default_factory=list)  # one message per refused span
    retryable: str | None = None  # set when a retry may store what was not stored
    moved: dict[str, str | None] = field(default_factory=dict)  # run_id -> owner's address: not stored here

    def refuse(self, message: str) -> None:
        self.refusals.append(message)

    def merge(self, other: Outcome) -> None:
        self.stored += other.stored
        self.refusals.extend(other.refusals)
        self.retryable = self.retryable or other.retryable
        self.moved.update(other.moved)


def _retryable(error: Exception) -> bool:
    # A full disk may have room again later; damaged data will not mend itself, so that span is refused.
    return isinstance(error, Unavailable | ResourceExhausted) or not isinstance(error, LedgerError)


class TraceRecorder:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._known: OrderedDict[str, None] = OrderedDict()

    async def record(self, spans: list[SpanRecord]) -> Outcome:
        """Store the spans of one request; traces in parallel, each trace's spans in order."""
        traces: dict[str, list[SpanRecord]] = {}
        for span in spans:
            traces.setdefault(span.run_id, []).append(span)
        room = asyncio.Semaphore(TRACES_IN_FLIGHT)

        async def one(run_id: str, group: list[SpanRecord]) -> Outcome:
            async with room:
                return await self._trace(run_id, group)

        outcome = Outcome()
        for result in await asyncio.gather(*(one(run_id, group) for run_id, group in traces.items())):
            outcome.merge(result)
        return outcome

    async def _trace(self, run_id: str, spans: list[SpanRecord]) -> Outcome:
        try:
            return await self._trace_here(run_id, spans)
        except NotOwner as owned:
            return Outcome(moved={run_id: owned.address})

    async def _trace_here(self, run_id: str, spans: list[SpanRecord]) -> Outcome:
        """Store one trace's spans on this replica; NotOwner when another replica owns its run."""
        outcome = Outcome()
        children = [span for span in spans if not span.root]
        roots = [span for span in spans if span.root]
        try:
            await self._ensure_run(run_id, roots[0] if roots else spans[0])
        except Exception as error:
            self._fail_all(outcome, spans, error, f"run {run_id!r} cannot be created")
            return outcome
        for start in range(0, len(children), WINDOW):
            window = children[start : start + WINDOW]
            answers = await asyncio.gather(*(self._append(span) for span in window), return_exceptions=True)
            for span, answer in zip(window, answers, strict=True):
                self._count(outcome, span, answer)
        if outcome.retryable is not None:
            # Ending the run now would refuse the children a retry brings: leave the roots to the retry.
            return outcome
        for root in roots:
            try:
                appended = await self._append(root)
            except Exception as error:
                self._count(outcome, root, error)
                continue
            try:
                await self._finish(root, appended)
            except NotOwner:
                raise
            except Exception as error:
                if _retryable(error):
                    outcome.retryable = outcome.retryable or str(error)
                    continue
                log.info(
                    "root span %s of run %s was stored but did not end the run: %s",
                    root.span_id,
                    run_id,
                    error,
                    extra={"run_id": run_id},
                )
            outcome.stored += 1
        return outcome

    def _count(self, outcome: Outcome, span: SpanRecord, answer: AppendResult | BaseException) -> None:
        if isinstance(answer, NotOwner):
            raise answer
        if isinstance(answer, AppendResult):
            outcome.stored += 1
        elif isinstance(answer, Exception) and not _retryable(answer):
            outcome.refuse(f"span {span.span_id} of trace {span.run_id}: {answer}")
        elif isinstance(answer, Exception):
            if not isinstance(answer, LedgerError):
                log.error(
                    "storing span %s of run %s failed unexpectedly",
                    span.span_id,
                    span.run_id,
                    exc_info=answer,
                    extra={"run_id": span.run_id},
                )
            outcome.retryable = outcome.retryable or str(answer)
        else:
            raise answer  # cancellation

    def _fail_all(self, outcome: Outcome, spans: list[SpanRecord], error: Exception, what: str) -> None:
        if _retryable(error):
            outcome.retryable = outcome.retryable or f"{what}: {error}"
        else:
            for span in spans:
                outcome.refuse(f"span {span.span_id} of trace {span.run_id}: {what}: {error}")

    async def _append(self, span: SpanRecord) -> AppendResult:
        return await self._ledger.events.append(span.run_id, [span.event], None, span.idempotency_key)

    async def _ensure_run(self, run_id: str, first: SpanRecord) -> None:
        if run_id in self._known:
            self._known.move_to_end(run_id)
            return
        identity = first.identity
        new = NewRun(
            spec_digest=identity.spec_digest,
            agent_name=identity.agent_name,
            git_sha=identity.git_sha,
            tags=identity.tags,
            evaluation=Evaluation(),
            run_id=run_id,
        )
        # AlreadyExists: created from another span of the trace (another process, or renamed by its root).
        with contextlib.suppress(AlreadyExists):
            await self._ledger.runs.create(new)
        self._known[run_id] = None
        while len(self._known) > KNOWN_RUNS:
            self._known.popitem(last=False)

    async def _finish(self, root: SpanRecord, appended: AppendResult) -> None:
        """End the run as the root span says; a resent root of an ended run is a no-op."""
        ending = root.ending
        assert ending is not None
        run = await self._ledger.runs.get(root.run_id)
        if run.status is not RunStatus.RUNNING:
            if appended.replayed:
                return  # this root ended the run already; the exporter resent it
            raise FailedPrecondition(f"run {root.run_id!r} is already {run.status.name}")
        identity = root.identity
        agent = identity.agent_name
        digest = identity.spec_digest
        if not identity.explicit_digest and run.spec_digest != derived_spec_digest(
            run.agent_name, identity.service_version
        ):
            digest = run.spec_digest  # given explicitly by the span that created the run: keep it
        finish = Finish(
            RunStatus.FAILED if ending.failed else RunStatus.COMPLETED,
            ending.duration_ms,
            reason=ending.reason,
            agent_name=agent if agent != run.agent_name else None,
            spec_digest=digest if digest != run.spec_digest else None,
        )
        try:
            await self._ledger.runs.finish(root.run_id, finish)
        except FailedPrecondition:
            if not appended.replayed:
                raise
            return
        log.info(
            "run %s: run %r (root span of its OTLP trace)",
            "failed" if ending.failed else "completed",
            root.run_id,
            extra={"run_id": root.run_id, "agent_name": agent, "method": "Export"},
        )
