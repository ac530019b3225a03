"""The ledger's refusals. The transport maps each class to one gRPC status."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every refusal; the message is safe to show to the caller."""


class InvalidArgument(LedgerError):
    """Malformed input. The message starts with the offending field's name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


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
