"""Framework values (messages, pydantic models, dataclasses, anything) as bounded JSON payloads,
and the canonical digest the adapters use for spec digests.

The adapters record what a framework hands to its callbacks, which may be
any Python object, very large, or hold numbers a `Struct` cannot carry
exactly. `jsonable` keeps the shape of mappings and sequences, turns
models and dataclasses into their fields, cuts long text and long lists
(noting how much was cut), sends integers beyond 2**53 and non-finite
floats as strings, and falls back to `repr` for the rest; it never raises.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from aivcs.ledger._models import JSON

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "MAX_TEXT", "digest_of", "jsonable"]

MAX_TEXT = 4096  # characters of one string kept
MAX_ITEMS = 100  # items of one list or mapping kept
MAX_DEPTH = 8  # nesting kept; deeper values become their repr
_EXACT = 2**53


def _text(value: str) -> str:
    if len(value) <= MAX_TEXT:
        return value
    return f"{value[:MAX_TEXT]}... [{len(value) - MAX_TEXT} more characters]"


def jsonable(value: Any, depth: int = 0) -> JSON:
    """`value` as a JSON value a payload can hold, bounded in size (see the module docstring)."""
    try:
        return _convert(value, depth)
    except Exception as error:  # a broken __repr__ or model_dump must not break the agent
        return f"<unrepresentable {type(value).__name__}: {error!r}>"


def _convert(value: Any, depth: int) -> JSON:
    if value is None or isinstance(value, bool | str):
        return _text(value) if isinstance(value, str) else value
    if isinstance(value, int):
        return value if -_EXACT <= value <= _EXACT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DEPTH:
        return _text(repr(value))
    if isinstance(value, Mapping):
        items = list(value.items())
        out: dict[str, JSON] = {str(k): _convert(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            out["..."] = f"{len(items) - MAX_ITEMS} more entries"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        kept: list[JSON] = [_convert(v, depth + 1) for v in seq[:MAX_ITEMS]]
        if len(seq) > MAX_ITEMS:
            kept.append(f"... {len(seq) - MAX_ITEMS} more items")
        return kept
    dump = getattr(value, "model_dump", None)  # pydantic models: LangChain messages, documents, SDK items
    if callable(dump):
        return _convert(dump(), depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _convert({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, depth + 1)
    return _text(repr(value))


def digest_of(document: JSON) -> str:
    """SHA-256 (64 hex characters) of `document` as canonical JSON: keys sorted, no spaces, UTF-8."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
