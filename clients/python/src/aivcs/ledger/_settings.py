"""How a buffered writer is tuned: one frozen, checked `WriterSettings`, shared by both writers.

`client.events.writer(run_id, settings=..., **options)` and
`start_run(..., writer_settings=..., **options)` take a `WriterSettings`,
keyword overrides of it (typed by `WriterOptions`), or both; the defaults
live here only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, TypedDict

from aivcs.ledger._heartbeat import HeartbeatInterval, heartbeat_interval_for

__all__ = [
    "DEFAULT_BATCH_EVENTS",
    "WhenFull",
    "WriterOptions",
    "WriterSettings",
    "resolve_settings",
    "settings_for_run",
]

# The daemon commits up to 200 events per transaction, where its storage
# engine is fastest; larger batches stay atomic but cost more per event.
DEFAULT_BATCH_EVENTS = 200

WhenFull = Literal["block", "drop"]
"""What `emit` does when `max_buffered_events` are unacknowledged: wait ("block"),
or drop the event with a rate-limited warning and count it ("drop"). A dropping
writer also keeps retrying while it is open, however long the daemon is away
(`retry_timeout` applies from `close()` on), so `emit` never raises for an outage."""

_WHEN_FULL: tuple[WhenFull, ...] = ("block", "drop")


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterSettings:
    """Tuning of a buffered writer, checked once.

    Sizes bound each batch (`max_batch_events`, `max_batch_bytes`), `linger`
    seconds seal a partial one, `max_buffered_events` bound what waits
    unacknowledged (then `when_full` decides), `max_in_flight` batches go
    ahead of their answers, `retry_timeout` seconds without progress end
    the retries, an idle stream is let go after `idle_stream_timeout`,
    repeated problems are logged at most once per `log_interval`, and
    `heartbeat_interval` paces heartbeats (see `_heartbeat`).
    """

    max_batch_events: int = DEFAULT_BATCH_EVENTS
    max_batch_bytes: int = 1 << 20
    linger: float = 0.05
    max_buffered_events: int = 10_000
    max_in_flight: int = 8
    retry_timeout: float = 60.0
    idle_stream_timeout: float = 5.0
    when_full: WhenFull = "block"
    log_interval: float = 10.0
    heartbeat_interval: HeartbeatInterval = "auto"

    def __post_init__(self) -> None:
        if self.max_batch_events < 1 or self.max_batch_bytes < 1 or self.max_in_flight < 1:
            raise ValueError("max_batch_events, max_batch_bytes and max_in_flight must be at least 1")
        if self.max_buffered_events < self.max_batch_events:
            raise ValueError("max_buffered_events must be at least max_batch_events")
        if self.linger < 0 or self.retry_timeout < 0 or self.idle_stream_timeout <= 0:
            raise ValueError("linger and retry_timeout must not be negative, idle_stream_timeout must be positive")
        if self.when_full not in _WHEN_FULL:
            raise ValueError(f"when_full must be 'block' or 'drop', got {self.when_full!r}")
        if self.log_interval < 0:
            raise ValueError("log_interval must not be negative")
        beat = self.heartbeat_interval
        if beat != "auto" and beat is not None and beat < 0:
            raise ValueError("heartbeat_interval must be 'auto', None or a number of seconds, not negative")
        if not beat:
            object.__setattr__(self, "heartbeat_interval", None)  # 0 means none, like None


class WriterOptions(TypedDict, total=False):
    """`WriterSettings` fields as keyword arguments, for `writer(...)` and `start_run(...)`."""

    max_batch_events: int
    max_batch_bytes: int
    linger: float
    max_buffered_events: int
    max_in_flight: int
    retry_timeout: float
    idle_stream_timeout: float
    when_full: WhenFull
    log_interval: float
    heartbeat_interval: HeartbeatInterval


def resolve_settings(settings: WriterSettings | None, options: WriterOptions) -> WriterSettings:
    """`settings` (default: the defaults) with the keyword `options` put over it."""
    base = settings if settings is not None else WriterSettings()
    return dataclasses.replace(base, **options) if options else base


def settings_for_run(settings: WriterSettings, inactivity_timeout_ms: int) -> WriterSettings:
    """`settings` for the writer of a run just created: "auto" heartbeats become a third of its timeout.

    The run is known, so the writer need not learn its timeout from a first heartbeat.
    """
    if settings.heartbeat_interval != "auto":
        return settings
    return dataclasses.replace(settings, heartbeat_interval=heartbeat_interval_for(inactivity_timeout_ms))
