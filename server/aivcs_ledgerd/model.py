"""Plain values shared by every layer: what a run, an event and a release are.

No logic and no imports from the layers, so the store can return these and
the transport can read them without either knowing the other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

JsonObject = dict[str, Any]


class RunStatus(enum.Enum):
    """Lifecycle state; the value is what SurrealDB stores."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self is not RunStatus.RUNNING


@dataclass(frozen=True, slots=True)
class Evaluation:
    rubric_path: str = ""
    is_promotion_gate: bool = False
    agent_phase: int = 0


@dataclass(frozen=True, slots=True)
class Run:
    run_id: str
    spec_digest: str
    agent_name: str
    git_sha: str | None
    tags: JsonObject
    evaluation: Evaluation
    status: RunStatus
    total_events: int
    final_state_digest: str | None
    duration_ms: int
    success: bool
    created_at: datetime
    completed_at: datetime | None
    events_digest: str
    status_reason: str
    # Strictly increasing creation key (nanoseconds) that orders ListRuns.
    created_ns: int
    # 0: no inactivity timeout. Fixed at creation.
    inactivity_timeout_ms: int = 0
    # The last append or Heartbeat; None: none yet (read as created_at).
    last_activity_at: datetime | None = None
    # Summed token usage of the run's events that carry one (OTLP spans); see Run.input_tokens.
    input_tokens: int = 0
    output_tokens: int = 0


# The two event values are NamedTuples, immutable as the frozen dataclasses around them but built
# several times faster (a frozen dataclass sets each field through object.__setattr__): every
# appended event is built as both, and every event read as an Event.


class NewEvent(NamedTuple):
    """An event as a writer submits it; timestamp_ns None means server time."""

    kind: str
    payload: JsonObject
    timestamp_ns: int | None
    # Token usage this event adds to its run's totals (OTLP spans' gen_ai.usage.*); 0 for most events.
    input_tokens: int = 0
    output_tokens: int = 0


class Event(NamedTuple):
    """A stored event: its run, its place in the run's chain, and what was submitted."""

    run_id: str
    seq: int
    kind: str
    payload: JsonObject
    timestamp_ns: int
    digest: str


@dataclass(frozen=True, slots=True)
class Release:
    agent_name: str
    spec_digest: str
    version_label: str | None
    promoted_by: str
    notes: str | None
    created_at: datetime
    sequence: int
    rollback_of: int | None = None


@dataclass(frozen=True, slots=True)
class RunFilter:
    """ListRuns filters; None means "any"."""

    spec_digest: str | None = None
    agent_name: str | None = None
    git_sha: str | None = None
    status: RunStatus | None = None
    created_after_ns: int | None = None  # inclusive
    created_before_ns: int | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class Page:
    """A keyset page of any listing: items and the cursor after the last."""

    items: list[Any] = field(default_factory=list)
    next_cursor: Any = None
