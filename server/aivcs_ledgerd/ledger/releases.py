"""The release registry's rules (to be built: issue 5)."""

from __future__ import annotations

from aivcs_ledgerd.store import Database


class Releases:
    def __init__(self, db: Database) -> None:
        self.db = db
