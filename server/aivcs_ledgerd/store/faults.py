"""Which engine errors are storage faults: the embedded engine reports them only as text.

SurrealKV (in surrealdb-embedded 3.0.0b10) surfaces a failed WAL write as the
COMMIT statement's error, with the echo kind "NotExecuted" that otherwise
only repeats an earlier statement's failure, e.g.

    Cannot COMMIT: There was a problem with a transaction: WAL error: IO error:
    kind=no storage space, message=No space left on device (os error 28)

and a failed open as an SDK exception with "IO error: No space left on device
(os error 28)". Checksum failures of table files and the manifest say
"checksum" or "corrupt". These patterns are all the engine gives; they are
matched here, once.
"""

from __future__ import annotations

import re

from aivcs_ledgerd.store.errors import StorageFault, StorageFull, StoreDamaged, StoreError

_FULL = re.compile(
    r"no space left on device|os error 28\b|no storage space|disk quota exceeded|os error 122\b", re.IGNORECASE
)
_DAMAGED = re.compile(r"checksum|corrupt|invalid batch record|bad magic", re.IGNORECASE)
_IO = re.compile(r"\bIO error\b|\bWAL error\b|\bos error \d+|input/output error|read-only file system", re.IGNORECASE)


def storage_fault(text: str) -> StoreError | None:
    """The storage fault `text` reports, or None when it reports none."""
    if _FULL.search(text):
        return StorageFull(f"disk full: {text}")
    if _DAMAGED.search(text):
        return StoreDamaged(f"stored data is damaged: {text}")
    if _IO.search(text):
        return StorageFault(f"storage I/O error: {text}")
    return None
