"""RFC 8785 (JCS) canonical JSON, fast for the payloads agents actually send.

The `rfc8785` package is the reference but walks every value in Python.
For values whose canonical form the C `json` encoder produces identically
(ASCII keys, integral numbers below 2**53 written as integers, other numbers
between 1e-4 and 1e16) we use that encoder; anything else goes to `rfc8785`.
tests/test_canonical.py checks the two agree on generated values.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import rfc8785

from aivcs_ledgerd.ledger import validation
from aivcs_ledgerd.ledger.errors import InvalidArgument

_EXACT_INT = 2**53
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class _NeedsReference(Exception):
    """The fast encoder might differ from RFC 8785 for this value."""


def canonical_json(field: str, value: Any) -> bytes:
    """The JCS bytes of `value`; INVALID_ARGUMENT naming the field for what JSON cannot hold."""
    try:
        return _encode(_normalise(value)).encode("utf-8")
    except _NeedsReference:
        pass
    validation.json_object(field, value)  # a non-finite number is refused here, by its path
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as error:
        raise InvalidArgument(field, f"has no canonical JSON form: {error}") from None


@functools.lru_cache(maxsize=4096)
def kind_json(kind: str) -> bytes:
    """The JCS bytes of an event kind; a run's kinds repeat, so their encoding is kept."""
    return canonical_json("kind", kind)


def _normalise(value: Any) -> Any:
    # No field paths here: building one per key cost more than the walk; errors find theirs above.
    if isinstance(value, float):
        if value.is_integer():
            if abs(value) < _EXACT_INT:
                return int(value)
            raise _NeedsReference
        if not 1e-4 <= abs(value) < 1e16:  # NaN and infinities too
            raise _NeedsReference
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not key.isascii():
                raise _NeedsReference
            out[key] = _normalise(item)
        return out
    if isinstance(value, list):
        return [_normalise(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _EXACT_INT:
        raise _NeedsReference
    return value
