"""The ledger's refusals. The transport maps each class to one gRPC status.

A refusal a client can act on also names its `reason` (an ErrorReason of
proto/aivcs/ledger/v1/errors.proto, without its prefix) and the `facts` it
needs to act (the run's last seq, its status, ...): the ways in send them
as google.rpc.ErrorInfo, so no client has to parse the message.
"""

from __future__ import annotations

from collections.abc import Mapping

from aivcs_ledgerd.model import RunStatus
from aivcs_ledgerd.util.text import cut


class LedgerError(Exception):
    """Base of every refusal; the message is safe to show to the caller."""

    def __init__(self, message: str, *, reason: str = "", facts: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.facts: dict[str, str] = dict(facts or {})


MAX_FIELD_CHARS = 256


class InvalidArgument(LedgerError):
    """Malformed input. The message starts with the offending field's name.

    The name can hold a caller's keys (`events[0].payload.KEY`): it is cut to
    MAX_FIELD_CHARS, as it travels in the message and twice in the details.
    """

    def __init__(self, field: str, problem: str) -> None:
        field = cut(field, MAX_FIELD_CHARS)
        super().__init__(f"{field}: {problem}", reason="INVALID_FIELD", facts={"field": field})
        self.field = field
        self.problem = problem


class NotFound(LedgerError):
    """The run or agent named does not exist."""


class AlreadyExists(LedgerError):
    """A client-chosen id is taken by something different."""


class FailedPrecondition(LedgerError):
    """The target's state forbids the call (terminal run, nothing to roll back)."""


class Aborted(LedgerError):
    """An optimistic-concurrency expectation did not hold; nothing was written."""


class Unavailable(LedgerError):
    """The database cannot be reached or did not answer in time. Retry later."""


class ResourceExhausted(LedgerError):
    """A limit of the daemon was reached; retry later or send less."""


class DataLoss(LedgerError):
    """Stored data is damaged; the operator must repair or restore the store."""


# The refusals clients act on, each with its reason and facts in one place.


def run_not_found(run_id: str) -> NotFound:
    return NotFound(f"run_id: no run {run_id!r}", reason="RUN_NOT_FOUND", facts={"run_id": run_id})


def run_terminal(run_id: str, status: RunStatus, message: str) -> FailedPrecondition:
    """`status` is the run's own (terminal, or for a heartbeat anything but RUNNING)."""
    facts = {"run_id": run_id, "status": f"RUN_STATUS_{status.name}"}
    return FailedPrecondition(message, reason="RUN_TERMINAL", facts=facts)


def last_seq_mismatch(run_id: str, last_seq: int, expected_last_seq: int) -> Aborted:
    return Aborted(
        f"expected_last_seq: run {run_id!r} is at seq {last_seq}, not {expected_last_seq}",
        reason="LAST_SEQ_MISMATCH",
        facts={"run_id": run_id, "last_seq": str(last_seq), "expected_last_seq": str(expected_last_seq)},
    )
