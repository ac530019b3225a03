"""Conversions between proto well-known types and domain values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

NANOS = 1_000_000_000


def timestamp_ns(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * NANOS + ts.nanos


def to_timestamp(ns: int) -> timestamp_pb2.Timestamp:
    seconds, nanos = divmod(ns, NANOS)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def datetime_to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def timestamp_to_datetime(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(value)
    return result


def dict_to_struct(value: dict[str, Any], into: struct_pb2.Struct) -> None:
    into.update(value)
