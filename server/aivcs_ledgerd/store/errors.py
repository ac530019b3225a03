"""What can go wrong below the ledger, in terms the ledger can act on."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises."""


class StoreUnavailable(StoreError):
    """The database cannot be reached, timed out, or is closed. Retry later."""


class StoreConflict(StoreError):
    """A transaction met a concurrent one and was rolled back. Retry it."""


class Rejected(StoreError):
    """A transaction refused itself with THROW: its precondition did not hold.

    `reason` is the text after the `aivcs:` prefix, e.g. "not_found".
    Nothing of the transaction was written.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DuplicateRecord(StoreError):
    """A CREATE met an existing record id; nothing was written."""


class QueryFailed(StoreError):
    """Any other statement error: a bug in a query, not the caller's input."""


class StorageFault(StoreUnavailable):
    """The embedded engine could not write (or read) its files: an I/O error.

    A write that met it was not acknowledged. The handle refuses every call
    from then on, until the store has been closed, reopened and read back
    (Database.recover). `reason` names the kind for logs and metrics.
    """

    reason = "io_error"


class StorageFull(StorageFault):
    """The file system of an embedded store is full (ENOSPC)."""

    reason = "disk_full"


class StoreDamaged(StoreError):
    """Stored data failed its checksums or cannot be read: data may be lost. Needs an operator."""

    reason = "damaged"
