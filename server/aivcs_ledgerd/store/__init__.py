"""SurrealDB access: the handle, the schema and the few queries the ledger needs."""

from aivcs_ledgerd.store.database import Credentials, Database, UnsupportedScheme, check_url
from aivcs_ledgerd.store.errors import (
    DuplicateRecord,
    QueryFailed,
    Rejected,
    StorageFault,
    StorageFull,
    StoreConflict,
    StoreDamaged,
    StoreError,
    StoreUnavailable,
)
from aivcs_ledgerd.store.schema import init_schema

__all__ = [
    "Credentials",
    "Database",
    "DuplicateRecord",
    "QueryFailed",
    "Rejected",
    "StorageFault",
    "StorageFull",
    "StoreConflict",
    "StoreDamaged",
    "StoreError",
    "StoreUnavailable",
    "UnsupportedScheme",
    "check_url",
    "init_schema",
]
