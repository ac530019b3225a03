"""OTLP attribute values (AnyValue, KeyValue lists) as bounded JSON.

Exporters send whatever their instrumentation recorded, so every value is
bounded before it becomes part of an event payload:

- a string (or the base64 of a bytes value) longer than MAX_VALUE_BYTES of
  UTF-8 is cut there;
- arrays and key-value lists nested deeper than MAX_DEPTH levels are
  replaced by the string DEEPER;
- an attribute list, array or key-value list keeps its first MAX_ITEMS
  entries;
- integers beyond JSON's exact range (|n| >= 2**53) become decimal strings,
  as OTLP/JSON writes 64-bit integers; NaN and infinities become the
  strings "NaN", "Infinity" and "-Infinity", which JSON has no numbers for.

Each cut or replaced value counts in `Bounds.truncated`, and each entry
left out in `Bounds.dropped`, so a payload says when it is not the whole span.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.common.v1 import common_pb2

MAX_VALUE_BYTES = 64 << 10
MAX_DEPTH = 8
MAX_ITEMS = 1000
DEEPER = f"[nested deeper than {MAX_DEPTH} levels]"
_EXACT_INT = 2**53


class Bounds:
    """Counts what bounding left out of one span's values."""

    __slots__ = ("dropped", "truncated")

    def __init__(self) -> None:
        self.truncated = 0
        self.dropped = 0


def bounded_text(value: str, bounds: Bounds, limit: int = MAX_VALUE_BYTES) -> str:
    """`value` cut to at most `limit` bytes of UTF-8, on a character boundary."""
    if len(value) * 4 <= limit:  # no character is longer than 4 bytes: the common case costs nothing
        return value
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return value
    bounds.truncated += 1
    return encoded[:limit].decode("utf-8", "ignore")


def json_int(value: int) -> int | str:
    """An integer JSON holds exactly, else its decimal text."""
    return value if -_EXACT_INT < value < _EXACT_INT else str(value)


def any_value(value: common_pb2.AnyValue, bounds: Bounds, depth: int = 0) -> Any:
    """One AnyValue as JSON; an unset value is null."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return bounded_text(value.string_value, bounds)
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return json_int(value.int_value)
    if which == "double_value":
        number = value.double_value
        if math.isfinite(number):
            return number
        return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
    if which == "bytes_value":
        raw = value.bytes_value
        if len(raw) > MAX_VALUE_BYTES * 3 // 4:
            raw = raw[: MAX_VALUE_BYTES * 3 // 4]
            bounds.truncated += 1
        return base64.b64encode(raw).decode("ascii")
    if which == "array_value":
        if depth >= MAX_DEPTH:
            bounds.truncated += 1
            return DEEPER
        items = value.array_value.values
        if len(items) > MAX_ITEMS:
            bounds.dropped += len(items) - MAX_ITEMS
        return [any_value(item, bounds, depth + 1) for item in items[:MAX_ITEMS]]
    if which == "kvlist_value":
        if depth >= MAX_DEPTH:
            bounds.truncated += 1
            return DEEPER
        return attributes(value.kvlist_value.values, bounds, depth + 1)
    return None  # unset, or a dictionary index that only profiles use


def attributes(pairs: Iterable[common_pb2.KeyValue], bounds: Bounds, depth: int = 0) -> dict[str, Any]:
    """A KeyValue list as a JSON object; a repeated key keeps its last value."""
    result: dict[str, Any] = {}
    for count, pair in enumerate(pairs):
        if count >= MAX_ITEMS:
            bounds.dropped += 1
            continue
        result[bounded_text(pair.key, bounds, 1024)] = any_value(pair.value, bounds, depth)
    return result


def find(pairs: Iterable[common_pb2.KeyValue], key: str) -> common_pb2.AnyValue | None:
    """The value of `key` in a KeyValue list (the last, if repeated)."""
    found = None
    for pair in pairs:
        if pair.key == key:
            found = pair.value
    return found


def find_text(pairs: Iterable[common_pb2.KeyValue], key: str) -> str | None:
    """A string attribute's value; None when absent or not a string."""
    value = find(pairs, key)
    if value is None or value.WhichOneof("value") != "string_value":
        return None
    return value.string_value


def find_count(pairs: Iterable[common_pb2.KeyValue], key: str) -> int:
    """A non-negative integer attribute (a token count); 0 when absent, negative or not a number."""
    value = find(pairs, key)
    if value is None:
        return 0
    which = value.WhichOneof("value")
    if which == "int_value":
        number = value.int_value
    elif which == "double_value" and math.isfinite(value.double_value) and value.double_value.is_integer():
        number = int(value.double_value)
    else:
        return 0
    return number if 0 <= number < 2**40 else 0
