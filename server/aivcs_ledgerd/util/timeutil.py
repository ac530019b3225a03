"""Nanoseconds since the Unix epoch <-> timezone-aware datetimes (microsecond precision)."""

from __future__ import annotations

from datetime import UTC, datetime

NANOS = 1_000_000_000


def ns_to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // NANOS, UTC).replace(microsecond=(ns % NANOS) // 1000)


def datetime_to_ns(value: datetime) -> int:
    return int(value.timestamp()) * NANOS + value.microsecond * 1000
