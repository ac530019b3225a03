"""Python access to the AIVCS ledger daemon.

    import hashlib

    from aivcs.ledger import Client

    digest = hashlib.sha256(b"planner spec v1").hexdigest()  # SHA-256 of the agent's spec
    with Client("127.0.0.1:50051") as client:
        with client.start_run(spec_digest=digest, agent_name="planner") as run:
            run.emit("tool_called", {"tool": "search"})

`Client` blocks, `AsyncClient` awaits; both have `runs`, `events` and
`releases`. Every refusal is a `LedgerError` with the gRPC `code` and the
daemon's `message`. The generated stubs live in `aivcs.ledger.v1`.
"""

from aivcs.ledger._async_client import AsyncClient, AsyncRunSession
from aivcs.ledger._async_writer import AsyncEventWriter
from aivcs.ledger._client import Client, RunSession
from aivcs.ledger._connection import DEFAULT_TARGET, Connection
from aivcs.ledger._errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    LedgerError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    WriterClosed,
)
from aivcs.ledger._heartbeat import HeartbeatInterval
from aivcs.ledger._models import (
    AppendResult,
    Evaluation,
    Event,
    NewEvent,
    Release,
    Run,
    RunStatus,
    Verification,
)
from aivcs.ledger._settings import WhenFull, WriterOptions, WriterSettings
from aivcs.ledger._writer import EventWriter

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TARGET",
    "Aborted",
    "AlreadyExists",
    "AppendResult",
    "AsyncClient",
    "AsyncEventWriter",
    "AsyncRunSession",
    "Cancelled",
    "Client",
    "Connection",
    "DeadlineExceeded",
    "Evaluation",
    "Event",
    "EventWriter",
    "FailedPrecondition",
    "HeartbeatInterval",
    "Internal",
    "InvalidArgument",
    "LedgerError",
    "NewEvent",
    "NotFound",
    "PermissionDenied",
    "Release",
    "ResourceExhausted",
    "Run",
    "RunSession",
    "RunStatus",
    "Unauthenticated",
    "Unavailable",
    "Verification",
    "WhenFull",
    "WriterClosed",
    "WriterOptions",
    "WriterSettings",
    "__version__",
]
