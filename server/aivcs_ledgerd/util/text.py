"""Untrusted strings in log lines: bounded, so a refused call cannot write megabytes of log."""

from __future__ import annotations

# A request field is logged before the ledger has validated it.
MAX_LOGGED_ID = 128  # characters of an id or name


def cut(value: str, limit: int = MAX_LOGGED_ID) -> str:
    """`value`, or its first `limit` characters and its length in bytes when it is longer."""
    if len(value) <= limit:
        return value
    size = len(value.encode("utf-8", "surrogatepass"))
    return f"{value[:limit]}... ({size} bytes)"
