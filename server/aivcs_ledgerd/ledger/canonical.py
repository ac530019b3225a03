"""RFC 8785 (JCS) canonical JSON, fast for the payloads agents actually send.

The `rfc8785` package is the reference but walks every value in Python.
For values whose canonical form orjson produces identically (ASCII keys,
which it sorts as RFC 8785 does; integral numbers below 2**53 written as
integers; other numbers between 1e-4 and 1e16, where its shortest
round-trip form is RFC 8785's; strings escaped as RFC 8785 escapes them)
we use orjson, which does the work in native code; anything else goes
to `rfc8785` (docs/performance-notes.md has the measurements).
tests/test_canonical.py checks the two agree on generated values.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
import rfc8785

from aivcs_ledgerd.ledger import validation
from aivcs_ledgerd.ledger.errors import InvalidArgument

_EXACT_INT = 2**53
_SORTED = orjson.OPT_SORT_KEYS


class _NeedsReference(Exception):
    """The fast encoder might differ from RFC 8785 for this value."""


def canonical_json(field: str, value: Any) -> bytes:
    """The JCS bytes of `value`; INVALID_ARGUMENT naming the field for what JSON cannot hold."""
    try:
        # Copied: orjson's own bytes object is grown from a large buffer, so keeping a batch's
        # worth of them alive is costly; a copy is a small object of its own.
        return bytes(memoryview(orjson.dumps(_normalise(value), option=_SORTED)))
    except (_NeedsReference, orjson.JSONEncodeError):  # the latter: e.g. a lone surrogate in a str
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
    # Exact types only: anything else (a subclass, a tuple, a non-str key) goes to the reference.
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is float:
        if value.is_integer():
            if abs(value) < _EXACT_INT:
                return int(value)
            raise _NeedsReference
        if not 1e-4 <= abs(value) < 1e16:  # NaN and infinities too
            raise _NeedsReference
        return value
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise _NeedsReference
            out[key] = _normalise(item)
        return out
    if kind is list:
        return [_normalise(item) for item in value]
    if kind is int and abs(value) < _EXACT_INT:
        return value
    raise _NeedsReference
