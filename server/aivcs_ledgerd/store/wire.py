"""Query frames for an embedded engine in cbor2's C codec, instead of the SDK's pure-Python one.

The embedded SDK connection encodes every request and decodes every answer
with a CBOR codec written in Python, on the daemon's one loop thread; for a
one-event append that was a large share of the thread's work per call. This
module sends the same frames through the same engine entry point
(`AsyncEmbeddedDB.execute`), encoded and decoded by cbor2's C extension.

What is guaranteed to match the SDK: the request bytes for every value it
encodes (str, bytes, int in SurrealDB's signed 64-bit range, float, bool,
None as NONE, surrealdb.Null as NULL, RecordID, and dicts with str keys and
lists of those, and tags of the SDK's CBOR package such as `datetime_ns`); and
the values decoded from an answer, tags included (the SDK's own tag decoder
is used), except that a NULL comes back as None where the SDK gives
surrealdb.Null. A query whose variables hold anything else is sent through
the SDK unchanged.

A top-level variable may also be `Native`: a value its maker built in
cbor2's own types, which this codec sends as it is, without walking it
(for a batch of event rows that walk was a large share of an append's
CPU), and which the SDK's encoder gets in its own types instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import cbor2
from surrealdb import NullType, RecordID
from surrealdb.cbor import CBORTag as SdkTag
from surrealdb.connections.async_embedded import AsyncEmbeddedSurrealConnection
from surrealdb.connections.utils_mixin import mapped_engine_errors
from surrealdb.data.cbor import tag_decoder
from surrealdb.data.types.constants import TAG_DATETIME_COMPACT, TAG_NONE, TAG_RECORD_ID
from surrealdb.errors import SurrealError, UnexpectedResponseError

_NONE = cbor2.CBORTag(TAG_NONE, None)  # SurrealDB's NONE; a CBOR null is its NULL
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1  # SurrealDB's integers; the SDK refuses any other
_ids = itertools.count(1)


class _Unlike(Exception):
    """A value this codec would not encode as the SDK does."""


class Native:
    """A variable in two forms of one value: `value` in cbor2's own types, sent by this codec as it
    is, and `sdk()`, the same value in the SDK's types, for a query the SDK encodes.

    Whoever builds one guarantees that cbor2 encodes `value` to the bytes the SDK makes of `sdk()`
    (tests hold the event rows of store/events.py to it).
    """

    __slots__ = ("_sdk", "value")

    def __init__(self, value: Any, sdk: Callable[[], Any]) -> None:
        self.value = value
        self._sdk = sdk

    def sdk(self) -> Any:
        return self._sdk()


def _value(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is bytes or kind is float or kind is bool:
        return value
    if kind is Native:
        return value.value
    if kind is int:
        if _I64_MIN <= value <= _I64_MAX:
            return value
        raise _Unlike  # the SDK refuses it with its own message
    if value is None:
        return _NONE
    if kind is dict:
        if not all(type(key) is str for key in value):
            raise _Unlike
        return {key: _value(item) for key, item in value.items()}
    if kind is list:
        return [_value(item) for item in value]
    if kind is NullType:
        return None
    if kind is RecordID:
        return cbor2.CBORTag(TAG_RECORD_ID, [_value(value.table_name), _value(value.id)])
    if kind is SdkTag:
        return cbor2.CBORTag(value.tag, _value(value.value))
    raise _Unlike


def datetime_ns(timestamp_ns: int) -> SdkTag:
    """A datetime to the nanosecond in the engine's compact CBOR form (tag 12: [seconds, nanoseconds]).

    A tag of the SDK's own CBOR package, which its encoder sends as it is, so this value goes the
    same way through the SDK (a remote server) and through this codec.
    """
    seconds, nanos = divmod(timestamp_ns, 1_000_000_000)
    return SdkTag(TAG_DATETIME_COMPACT, [seconds, nanos])


def native_datetime_ns(timestamp_ns: int) -> cbor2.CBORTag:
    """`datetime_ns` in cbor2's own types, for a Native value: the same bytes."""
    seconds, nanos = divmod(timestamp_ns, 1_000_000_000)
    return cbor2.CBORTag(TAG_DATETIME_COMPACT, [seconds, nanos])


def request(sql: str, variables: dict[str, Any]) -> bytes | None:
    """The query frame for `sql` with `variables`, or None when the SDK must encode it."""
    try:
        params = _value(variables)
    except _Unlike:
        return None
    return cbor2.dumps({"id": str(next(_ids)), "method": "query", "params": [sql, params]})


def _tag(first: Any, second: Any) -> Any:
    # cbor2 5 calls a tag hook with (decoder, tag), cbor2 6 with (tag, immutable) and the tag's
    # arrays and maps decoded immutable; the SDK's decoder reads only the tag's number and value,
    # and has them mutable (a RecordID's array id is a list).
    tag = first if isinstance(first, cbor2.CBORTag) else second
    if tag.tag == _NONE.tag:
        return None  # every statement's answer carries some: decoded as the SDK does, without it
    return tag_decoder(None, cbor2.CBORTag(tag.tag, _thawed(tag.value)))  # type: ignore[arg-type]


def _thawed(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_thawed(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _thawed(item) for key, item in value.items()}
    return value


def answer(frame: bytes) -> dict[str, Any]:
    """The decoded answer frame (NULL as None); an undecodable one raises the SDK's UnexpectedResponseError."""
    try:
        response = cbor2.loads(frame, tag_hook=_tag)
    except SurrealError:
        raise
    except (cbor2.CBORDecodeError, ValueError) as error:
        # cbor2 may wrap what the tag decoder raised (an unknown tag): the SDK's error for it either way
        if isinstance(error.__cause__, SurrealError):
            raise error.__cause__ from error
        raise UnexpectedResponseError(f"the engine's answer did not decode: {error}") from error
    return response if isinstance(response, dict) else {}


async def query_raw(connection: Any, sql: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """`connection.query_raw(sql, variables)`, through the C codec when the connection is embedded."""
    variables = variables or {}
    frame = request(sql, variables) if isinstance(connection, AsyncEmbeddedSurrealConnection) else None
    if frame is None:
        sdk_variables = {name: value.sdk() if type(value) is Native else value for name, value in variables.items()}
        response: dict[str, Any] = await connection.query_raw(sql, sdk_variables)
        return response
    with mapped_engine_errors("query"):
        reply = await connection._db.execute(frame)
    return answer(reply)
