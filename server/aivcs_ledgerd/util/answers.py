"""Ending a gRPC call with a status by setting it on the context, never by `context.abort`.

grpc.aio's `abort` raises an AbortError and keeps it on the call's state;
the exception's traceback holds frames that hold that state (and the
request), so every aborted call stays in a reference cycle until the cyclic
garbage collector next runs, with the core call and what it read off the
connection. The daemon collects its young generation rarely
(process/collector.py), so a flood of refused big calls would hold their
bodies for a while. A status set here, with the behaviour returning
normally, is freed by reference counting as soon as the call ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc


def answer(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
) -> None:
    """Make `code` and `message` (and `trailing_metadata`) the call's status; the caller then returns.

    gRPC drops a unary response once the code is not OK, so the behaviour
    may return None; a streaming one simply ends.
    """
    context.set_code(code)
    context.set_details(message)
    if trailing_metadata:
        context.set_trailing_metadata(trailing_metadata)
