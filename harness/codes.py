"""gRPC status codes the tests and campaigns judge answers by."""

from __future__ import annotations

import grpc

Code = grpc.StatusCode
# Codes no request may ever get (docs/architecture.md, "Errors").
FORBIDDEN = frozenset({Code.UNKNOWN, Code.INTERNAL})
# What a client may see when the daemon dies or restarts under it; it retries these.
TRANSIENT = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.CANCELLED})
TRANSIENT_NUMBERS = frozenset(code.value[0] for code in TRANSIENT)


def code_of(number: int) -> Code:
    """The status code with this number (as IngestError.code carries it)."""
    return next(code for code in Code if code.value[0] == number)


def code_name(number: int) -> str:
    """The code's name, or CODE_<number> for a number gRPC does not define."""
    for code in Code:
        if code.value[0] == number:
            return code.name
    return f"CODE_{number}"
