"""JSON values as SurrealDB values and back: JSON null is NULL, which the SDK would send as NONE.

The SDK (and store/wire.py, which encodes as it does) sends Python None as
NONE, and an object field set to NONE is not stored at all; a JSON null in a
payload or a tag must be kept, so it goes as surrealdb.Null (NULL).
"""

from __future__ import annotations

from typing import Any

from surrealdb import Null, NullType


def json_to_surreal(value: Any) -> Any:
    """`value` with every None (JSON null) as NULL."""
    if value is None:
        return Null
    if isinstance(value, dict):
        return {key: json_to_surreal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_to_surreal(item) for item in value]
    return value


def json_from_surreal(value: Any) -> Any:
    """`value` with every NULL as None."""
    if isinstance(value, NullType):
        return None
    if isinstance(value, dict):
        return {key: json_from_surreal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_from_surreal(item) for item in value]
    return value
