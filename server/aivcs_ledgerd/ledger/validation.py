"""Checks of caller input shared by every part of the ledger.

Each check names the field it refuses, so a caller can tell which of its
values was wrong without reading the daemon's code.
"""

from __future__ import annotations

import math
import re
from typing import Any

from aivcs_ledgerd.ledger.errors import InvalidArgument

DIGEST = re.compile(r"[0-9a-fA-F]{64}")
MAX_ID_BYTES = 256
MAX_TEXT_BYTES = 4096
MAX_LABEL_BYTES = 256  # a release's version_label
MAX_NOTES_BYTES = 64 * 1024  # a release's notes


def digest(field: str, value: str) -> str:
    """A SHA-256 hex digest, normalised to lower case."""
    if not DIGEST.fullmatch(value):
        raise InvalidArgument(field, f"must be 64 hexadecimal characters (SHA-256), got {_show(value)}")
    return value.lower()


def optional_digest(field: str, value: str | None) -> str | None:
    return None if value is None else digest(field, value)


def expected_digest(field: str, value: str | None) -> str | None:
    """A compare-and-set expectation: None (no expectation), "" (expects nothing yet) or a digest."""
    return digest(field, value) if value else value


def optional_text(field: str, value: str | None, max_bytes: int = MAX_TEXT_BYTES) -> str | None:
    return None if value is None else text(field, value, max_bytes)


def below_2_63(field: str, value: int) -> int:
    """An unsigned count that must fit SurrealDB's signed 64-bit integers."""
    if value >= 2**63:
        raise InvalidArgument(field, f"must be below 2^63, got {value}")
    return value


def identifier(field: str, value: str, max_bytes: int = MAX_ID_BYTES) -> str:
    """A non-empty name or id of bounded size, stored verbatim."""
    if not value:
        raise InvalidArgument(field, "must not be empty")
    return text(field, value, max_bytes)


def text(field: str, value: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """Free text of bounded size; may be empty."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InvalidArgument(field, f"must be at most {max_bytes} bytes, got {size}")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    return value


def json_object(field: str, value: dict[str, Any]) -> dict[str, Any]:
    """A JSON object with finite numbers only (JSON and RFC 8785 have no NaN)."""
    _finite(field, value)
    return value


def _finite(field: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(field, f"numbers must be finite, got {value}")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(f"{field}.{key}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _finite(f"{field}[{index}]", item)


def _show(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")
