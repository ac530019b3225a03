"""Durations as operators write them: `30`, `1.5`, `250ms`, `30s`, `5m`, `1h30m`, `2d`."""

from __future__ import annotations

import re

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration_ms(text: str) -> int:
    """Milliseconds in `text`: a bare number is seconds, else number-unit parts (ms, s, m, h, d).

    ValueError, saying what is accepted, for anything else (negative values included).
    """
    value = text.strip().lower()
    if _NUMBER.fullmatch(value):
        return round(float(value) * 1000)
    parts = list(_PART.finditer(value))
    if not value or "".join(part.group(0) for part in parts) != value:
        raise ValueError(f"{text!r} is not a duration: use seconds (30, 1.5) or units such as 250ms, 30s, 5m, 1h30m")
    return round(sum(float(number) * _UNITS_MS[unit] for number, unit in (p.groups() for p in parts)))


def format_duration_ms(ms: int) -> str:
    """A short human form, exact to the millisecond: 250ms, 30s, 1.5s, 5m, 1h30m."""
    if ms < 1000:
        return f"{ms}ms"
    if ms % 1000 or ms < 60_000:
        return f"{ms // 1000}.{ms % 1000:03d}".rstrip("0").rstrip(".") + "s"
    seconds = ms // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{seconds}s" if seconds else ""]
    return "".join(parts)
