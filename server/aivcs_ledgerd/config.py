"""The daemon's settings: one frozen value built from flags and environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aivcs_ledgerd.ledger.limits import Limits

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DB = "surrealkv://aivcs-ledger-data"


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str = DEFAULT_LISTEN
    db: str = DEFAULT_DB
    db_namespace: str = "aivcs"
    db_database: str = "ledger"
    db_user: str | None = None
    db_password: str | None = None
    db_access_level: str = "root"
    db_timeout: float = 10.0
    grace_period: float = 10.0
    reflection: bool = True
    log_level: str = "INFO"
    log_json: bool = False
    limits: Limits = field(default_factory=Limits)
    # Operations (process/operations.py and the modules it wires): health, metrics, TLS, tokens, limits.
    health_interval: float = 2.0
    health_listen: str | None = None  # plaintext health-only port, for probes when --tls-cert is set
    metrics_listen: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_token_file: Path | None = None
    max_streams_per_connection: int = 256  # 0: no limit
    max_inflight_appends: int = 1024  # per connection; 0: no limit
    http_listen: str | None = None  # JSON API and web console (http/); off unless set
    checkpoint_wal_mb: int = 48  # durable embedded engines: flush the memtable at this much log; 0: never
    # Inactivity timeout of runs created without one (ledger/inactivity.py); 0: none.
    run_inactivity_timeout_ms: int = 0
    # Budgets (middleware/budget.py, README "Limits and budgets").
    max_inflight_request_bytes: int = 128 << 20  # request bytes received and not yet answered, daemon-wide
    max_connections: int = 1024  # accepted connections at once on the gRPC port; 0: no limit
    max_concurrent_reads: int = 1  # storage scans in the engine at once (ledger/events.py)
    # Several replicas on one remote database (ledger/ownership.py): the gRPC address other
    # replicas reach this one at (None: derived from --listen), and how long a run's lease lasts.
    advertise_address: str | None = None
    lease_seconds: float = 3.0
    peer_ca: Path | None = None  # with --tls-cert: the CA that signed the replicas' certificates
    seed_indexes: bool = False  # keep the seed's run_events indexes (store/schema.py, SEED_EVENT_INDEXES)


def read_secret(path: Path) -> str:
    """A secret from a mounted file, without the trailing newline editors add."""
    return path.read_text(encoding="utf-8").rstrip("\r\n")
