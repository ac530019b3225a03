"""HTTP requests to proto messages and proto messages to JSON, by the proto3 JSON mapping.

Query parameters fill the request message's fields the way the
google.api.http convention does: a field by its proto name or its JSON
(lowerCamelCase) name, a nested field by a dotted path
(`evaluation.agent_phase`), a repeated field by repeating the parameter,
values in their proto3 JSON form (enums by name, Timestamps as RFC 3339).
Path parameters fill their fields the same way. Bodies and answers are
proto3 JSON (google.protobuf.json_format); answers print every field,
defaults included, so a client does not need the schema's defaults.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from aivcs_ledgerd.http.errors import invalid

M = TypeVar("M", bound=Message)


def to_json(message: Message) -> dict[str, Any]:
    """`message` as proto3 JSON, with fields at their defaults printed too."""
    result: dict[str, Any] = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return result


def _field(descriptor: Any, name: str) -> FieldDescriptor | None:
    found: FieldDescriptor | None = descriptor.fields_by_name.get(name)
    if found is None:
        found = next((field for field in descriptor.fields if field.json_name == name), None)
    return found


def _scalar(field: FieldDescriptor, name: str, value: str) -> Any:
    """A query string value in the form json_format expects for `field`."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        if value.lower() not in ("true", "false"):
            raise invalid(name, f"must be true or false, got {value!r}")
        return value.lower() == "true"
    return value


def from_query(message_type: type[M], query: Iterable[tuple[str, str]], path: Mapping[str, str] | None = None) -> M:
    """A request message from query parameters and path parameters; 400 naming the parameter if one is wrong."""
    tree: dict[str, Any] = {}
    for name, value in [*query, *(path or {}).items()]:
        descriptor: Any = message_type.DESCRIPTOR
        node = tree
        parts = name.split(".")
        for depth, part in enumerate(parts):
            field = _field(descriptor, part)
            if field is None:
                raise invalid(name, f"is not a field of {descriptor.full_name}")
            last = depth == len(parts) - 1
            if field.type == FieldDescriptor.TYPE_MESSAGE and not last:
                if field.is_repeated:
                    raise invalid(name, "a repeated message cannot be set from the query")
                descriptor = field.message_type
                node = node.setdefault(field.name, {})
                continue
            if not last:
                raise invalid(name, f"{part} is not a message")
            item = _scalar(field, name, value)
            if field.is_repeated:
                node.setdefault(field.name, []).append(item)
            elif field.name in node:
                raise invalid(name, "is given twice")
            else:
                node[field.name] = item
    return parse(message_type, tree)


def parse(message_type: type[M], value: Any) -> M:
    """A request message from a proto3 JSON value; 400 with json_format's reason if it does not fit."""
    if not isinstance(value, dict):
        raise invalid("body", "must be a JSON object")
    try:
        return json_format.ParseDict(value, message_type())
    except json_format.ParseError as error:
        raise invalid(message_type.DESCRIPTOR.name, str(error)) from None
