"""The `aivcs-ledgerd` command: flags, environment fallbacks, exit codes."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from aivcs_ledgerd import __version__
from aivcs_ledgerd.config import DEFAULT_DB, DEFAULT_LISTEN, Settings, read_secret
from aivcs_ledgerd.ledger.limits import Limits
from aivcs_ledgerd.ledger.runs import MAX_INACTIVITY_TIMEOUT_MS
from aivcs_ledgerd.process import event_loop, stderr_relay
from aivcs_ledgerd.process.app import ShutdownError, StartupError, run
from aivcs_ledgerd.process.logs import configure_logging
from aivcs_ledgerd.store import StoreError, UnsupportedScheme
from aivcs_ledgerd.store.location import resolve as resolve_db
from aivcs_ledgerd.util.durations import parse_duration_ms

ENV = "AIVCS_LEDGER_"


def check_listen(address: str, flag: str = "--listen") -> None:
    """Refuse a HOST:PORT that gRPC would misread: it takes port 99999 as 34463, for one."""
    if address.startswith(("unix:", "unix-abstract:")):
        return
    _, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{address!r} is not HOST:PORT with a port from 0 to 65535", param_hint=flag)


class Duration(click.ParamType[int, object]):
    """Seconds (30, 1.5) or a duration with units (250ms, 30s, 5m, 1h30m), as milliseconds."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            ms = parse_duration_ms(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)
        if ms > MAX_INACTIVITY_TIMEOUT_MS:
            self.fail(f"{value!r} is longer than ten years; 0 means none", param, ctx)
        return ms


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "--listen",
    envvar=ENV + "LISTEN",
    default=DEFAULT_LISTEN,
    show_envvar=True,
    help="HOST:PORT to serve gRPC on. Port 0 picks a free port.",
)
@click.option(
    "--db",
    envvar=ENV + "DB",
    default=DEFAULT_DB,
    show_envvar=True,
    help="SurrealDB URL: mem:// (ephemeral), surrealkv://PATH or file://PATH "
    "(embedded, durable), ws://, wss://, http://, https:// (a server or cluster).",
)
@click.option(
    "--db-namespace", envvar=ENV + "DB_NAMESPACE", default="aivcs", show_envvar=True, help="SurrealDB namespace."
)
@click.option(
    "--db-database", envvar=ENV + "DB_DATABASE", default="ledger", show_envvar=True, help="SurrealDB database."
)
@click.option(
    "--db-user", envvar=ENV + "DB_USER", default=None, show_envvar=True, help="User to sign in with on a remote server."
)
@click.option(
    "--db-user-file",
    envvar=ENV + "DB_USER_FILE",
    default=None,
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the user name (e.g. a mounted Kubernetes secret); overrides --db-user.",
)
@click.option(
    "--db-password",
    envvar=ENV + "DB_PASSWORD",
    default=None,
    show_envvar=True,
    help="Password for --db-user. Prefer --db-password-file.",
)
@click.option(
    "--db-password-file",
    envvar=ENV + "DB_PASSWORD_FILE",
    default=None,
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the password (e.g. a mounted Kubernetes secret).",
)
@click.option(
    "--db-access-level",
    envvar=ENV + "DB_ACCESS_LEVEL",
    default="root",
    show_envvar=True,
    type=click.Choice(["root", "database"]),
    help="Whether --db-user is a root user or a user of the namespace and database.",
)
@click.option(
    "--db-timeout",
    envvar=ENV + "DB_TIMEOUT",
    default=10.0,
    show_envvar=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a database round trip may take before the call answers UNAVAILABLE.",
)
@click.option(
    "--grace-period",
    envvar=ENV + "GRACE_PERIOD",
    default=10.0,
    show_envvar=True,
    type=click.FloatRange(min=0),
    help="Seconds in-flight calls get to finish on SIGTERM/SIGINT.",
)
@click.option(
    "--max-batch-events",
    envvar=ENV + "MAX_BATCH_EVENTS",
    default=Limits().max_batch_events,
    show_envvar=True,
    type=click.IntRange(min=1),
    help="Most events one append batch may carry.",
)
@click.option(
    "--max-payload-bytes",
    envvar=ENV + "MAX_PAYLOAD_BYTES",
    default=Limits().max_payload_bytes,
    show_envvar=True,
    type=click.IntRange(min=1),
    help="Largest serialized payload of one event.",
)
@click.option(
    "--max-message-bytes",
    envvar=ENV + "MAX_MESSAGE_BYTES",
    default=Limits().max_message_bytes,
    show_envvar=True,
    type=click.IntRange(min=1024),
    help="Largest gRPC message received or sent.",
)
@click.option(
    "--reflection/--no-reflection",
    envvar=ENV + "REFLECTION",
    default=True,
    show_envvar=True,
    help="Serve gRPC server reflection.",
)
@click.option(
    "--log-level",
    envvar=ENV + "LOG_LEVEL",
    default="INFO",
    show_envvar=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Least severe level logged. Payloads are never logged.",
)
@click.option(
    "--log-json/--no-log-json",
    envvar=ENV + "LOG_JSON",
    default=False,
    show_envvar=True,
    help="Log one JSON object per line.",
)
@click.option(
    "--health-interval",
    envvar=ENV + "HEALTH_INTERVAL",
    default=2.0,
    show_envvar=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between database health checks; NOT_SERVING follows a failure within about this.",
)
@click.option(
    "--health-listen",
    envvar=ENV + "HEALTH_LISTEN",
    default=None,
    show_envvar=True,
    help="HOST:PORT for a plaintext port serving only grpc.health.v1, for probes that cannot "
    "speak TLS (Kubernetes gRPC probes). Off by default.",
)
@click.option(
    "--metrics-listen",
    envvar=ENV + "METRICS_LISTEN",
    default=None,
    show_envvar=True,
    help="HOST:PORT to serve Prometheus metrics on (HTTP, /metrics). Off by default.",
)
@click.option(
    "--tls-cert",
    envvar=ENV + "TLS_CERT",
    default=None,
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM certificate (chain) for the gRPC port; with --tls-key, the port speaks only TLS.",
)
@click.option(
    "--tls-key",
    envvar=ENV + "TLS_KEY",
    default=None,
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM private key of --tls-cert.",
)
@click.option(
    "--tls-client-ca",
    envvar=ENV + "TLS_CLIENT_CA",
    default=None,
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS).",
)
@click.option(
    "--auth-token-file",
    envvar=ENV + "AUTH_TOKEN_FILE",
    default=None,
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of bearer tokens, one 'ROLE TOKEN' per line, ROLE read-only, read-write or admin (# comments). "
    "When set, every call but health and reflection needs 'authorization: Bearer TOKEN'.",
)
@click.option(
    "--max-streams-per-connection",
    envvar=ENV + "MAX_STREAMS_PER_CONNECTION",
    default=256,
    show_envvar=True,
    type=click.IntRange(min=0),
    help="Calls (HTTP/2 streams) one connection may have in flight; more are RESOURCE_EXHAUSTED. 0: no limit.",
)
@click.option(
    "--max-inflight-appends",
    envvar=ENV + "MAX_INFLIGHT_APPENDS",
    default=1024,
    show_envvar=True,
    type=click.IntRange(min=0),
    help="Append batches one connection may have awaiting their seqs; more AppendEvents calls are "
    "RESOURCE_EXHAUSTED, IngestEvents streams are slowed. 0: no limit.",
)
@click.option(
    "--checkpoint-wal-mb",
    envvar=ENV + "CHECKPOINT_WAL_MB",
    default=48,
    show_envvar=True,
    type=click.IntRange(min=0),
    help="surrealkv:// and file:// only: close and reopen the engine, which writes its memtable to "
    "disk, once its write-ahead log holds this many MB or has rotated. Keeps the engine from "
    "stalling and bounds memory and restart time (see README). 0: never.",
)
@click.option(
    "--run-inactivity-timeout",
    envvar=ENV + "RUN_INACTIVITY_TIMEOUT",
    default="0",
    show_envvar=True,
    type=Duration(),
    help="Fail a RUNNING run that has had no append and no Heartbeat for this long (seconds, or "
    "250ms, 30s, 5m, 1h30m), for runs created without their own inactivity_timeout_ms. 0: never.",
)
@click.option(
    "--max-inflight-request-bytes",
    envvar=ENV + "MAX_INFLIGHT_REQUEST_BYTES",
    default=Settings().max_inflight_request_bytes,
    show_envvar=True,
    type=click.IntRange(min=1024),
    help="Request bytes the daemon holds at once (received, not yet answered), over all calls; "
    "beyond it AppendEvents and other unary calls are RESOURCE_EXHAUSTED and streams are slowed. "
    "At least --max-message-bytes.",
)
@click.option(
    "--max-connections",
    envvar=ENV + "MAX_CONNECTIONS",
    default=Settings().max_connections,
    show_envvar=True,
    type=click.IntRange(min=0),
    help="Connections the gRPC port accepts at once; more wait to be accepted. 0: no limit.",
)
@click.option(
    "--max-concurrent-reads",
    envvar=ENV + "MAX_CONCURRENT_READS",
    default=Settings().max_concurrent_reads,
    show_envvar=True,
    type=click.IntRange(min=1),
    help="Storage scans (ReadEvents, VerifyRun, subscription catch-up) run in the engine at once; "
    "more wait their turn. Higher favours readers, lower keeps appends responsive.",
)
@click.option(
    "--advertise-address",
    envvar=ENV + "ADVERTISE_ADDRESS",
    default=None,
    show_envvar=True,
    help="HOST:PORT other replicas forward a run's writes to (remote --db only). Default: the "
    "--listen host, or this host's address when listening on all interfaces, with the bound port. "
    "In Kubernetes: the pod IP from the downward API.",
)
@click.option(
    "--lease-seconds",
    envvar=ENV + "LEASE_SECONDS",
    default=3.0,
    show_envvar=True,
    type=click.FloatRange(min=0.5, max=60),
    help="How long a replica's ownership of a run lasts without renewal (remote --db only): "
    "another replica takes over a dead owner's runs after this long.",
)
@click.option(
    "--peer-ca",
    envvar=ENV + "PEER_CA",
    default=None,
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --tls-cert and a remote --db: PEM file of the CA that signed the replicas' "
    "certificates, which replicas check when they forward to each other (default: the "
    "system's roots). The certificates must name the --advertise-address.",
)
@click.option(
    "--http-listen",
    envvar=ENV + "HTTP_LISTEN",
    default=None,
    show_envvar=True,
    help="HOST:PORT to serve the HTTP/JSON API (/v1/...) and the web console (/) on; "
    "same tokens and TLS as gRPC. Off by default.",
)
@click.option(
    "--seed-indexes",
    envvar=ENV + "SEED_INDEXES",
    is_flag=True,
    default=False,
    show_envvar=True,
    help="Keep (and create) all of the seed's run_events indexes, for tools that query the database "
    "directly with the seed's own crate. Off: they are removed at start-up, since the record id "
    "serves every query of the daemon and each index costs every append a write.",
)
@click.option(
    "--event-loop",
    "event_loop_choice",
    envvar=ENV + "EVENT_LOOP",
    default="auto",
    show_default=True,
    show_envvar=True,
    type=click.Choice(event_loop.CHOICES),
    help="The asyncio event loop every call's Python work runs on: uvloop (faster; installed with "
    "the daemon except on Windows), the standard asyncio loop, or auto (uvloop where installed).",
)
@click.version_option(__version__)
def command(
    listen: str,
    db: str,
    db_namespace: str,
    db_database: str,
    db_user: str | None,
    db_password: str | None,
    db_password_file: Path | None,
    db_access_level: str,
    db_timeout: float,
    grace_period: float,
    max_batch_events: int,
    max_payload_bytes: int,
    max_message_bytes: int,
    reflection: bool,
    log_level: str,
    log_json: bool,
    db_user_file: Path | None = None,
    health_interval: float = 2.0,
    health_listen: str | None = None,
    metrics_listen: str | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_client_ca: Path | None = None,
    auth_token_file: Path | None = None,
    max_streams_per_connection: int = 256,
    max_inflight_appends: int = 1024,
    checkpoint_wal_mb: int = 48,
    run_inactivity_timeout: int = 0,
    max_inflight_request_bytes: int = Settings().max_inflight_request_bytes,
    max_connections: int = Settings().max_connections,
    max_concurrent_reads: int = Settings().max_concurrent_reads,
    advertise_address: str | None = None,
    lease_seconds: float = 3.0,
    peer_ca: Path | None = None,
    http_listen: str | None = None,
    seed_indexes: bool = False,
    event_loop_choice: str = "auto",
) -> None:
    """Serve the AIVCS run ledger (runs, events, releases) over gRPC, backed by SurrealDB.

    `aivcs-ledgerd repair --db surrealkv://PATH` repairs an embedded store whose write-ahead log is damaged.
    """
    if log_json:
        stderr_relay.start()  # gRPC core's and the engine's own lines become JSON too
    configure_logging(log_level.upper(), log_json)
    check_listen(listen)
    for address, flag in (
        (health_listen, "--health-listen"),
        (metrics_listen, "--metrics-listen"),
        (http_listen, "--http-listen"),
    ):
        if address is not None:
            check_listen(address, flag)
    if http_listen is not None and http_listen.startswith(("unix:", "unix-abstract:")):
        raise click.BadParameter("the HTTP side listens on TCP only: give HOST:PORT", param_hint="--http-listen")
    try:
        db = resolve_db(db)  # a durable folder made absolute, so the log says where the data is
    except UnsupportedScheme as error:
        raise click.BadParameter(str(error), param_hint="--db") from error
    if advertise_address is not None:
        check_listen(advertise_address, "--advertise-address")
    if db_password_file is not None:
        db_password = read_secret(db_password_file)
    if db_user_file is not None:
        db_user = read_secret(db_user_file)
    if (tls_cert is None) != (tls_key is None):
        raise click.BadParameter("--tls-cert and --tls-key go together", param_hint="--tls-cert/--tls-key")
    if tls_client_ca is not None and tls_cert is None:
        raise click.BadParameter("mutual TLS needs --tls-cert and --tls-key too", param_hint="--tls-client-ca")
    settings = Settings(
        listen=listen,
        db=db,
        db_namespace=db_namespace,
        db_database=db_database,
        db_user=db_user,
        db_password=db_password,
        db_access_level=db_access_level,
        db_timeout=db_timeout,
        grace_period=grace_period,
        reflection=reflection,
        log_level=log_level.upper(),
        log_json=log_json,
        limits=Limits(max_batch_events, max_payload_bytes, max_message_bytes),
        health_interval=health_interval,
        health_listen=health_listen,
        metrics_listen=metrics_listen,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        auth_token_file=auth_token_file,
        max_streams_per_connection=max_streams_per_connection,
        max_inflight_appends=max_inflight_appends,
        checkpoint_wal_mb=checkpoint_wal_mb,
        run_inactivity_timeout_ms=run_inactivity_timeout,
        max_inflight_request_bytes=max_inflight_request_bytes,
        max_connections=max_connections,
        max_concurrent_reads=max_concurrent_reads,
        advertise_address=advertise_address,
        lease_seconds=lease_seconds,
        peer_ca=peer_ca,
        http_listen=http_listen,
        seed_indexes=seed_indexes,
    )
    try:
        factory = event_loop.loop_factory(event_loop_choice)
    except event_loop.EventLoopUnavailable as error:
        raise click.BadParameter(str(error), param_hint="--event-loop") from error
    try:
        event_loop.run(run(settings), factory)
    except ShutdownError:
        sys.exit(1)  # logged by Daemon.stop
    except (StartupError, StoreError) as error:
        logging.getLogger("aivcs_ledgerd").error("cannot start: %s", error)
        sys.exit(1)


def main() -> int:
    """The console script: run the command, then leave without the interpreter's own shutdown.

    The embedded engine's Rust threads can panic while Python finalizes ("panic in a
    function that cannot unwind", SIGABRT, exit 134), seen in about one exit in ten
    under load, after the daemon has drained and closed the database. Everything is
    written and closed by then, so flush what is buffered and exit at once.
    """
    try:
        if sys.argv[1:2] == ["repair"]:
            from aivcs_ledgerd.process.repair import command as repair

            repair(args=sys.argv[2:], prog_name="aivcs-ledgerd repair")
        else:
            command()
        code = 0
    except SystemExit as done:
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    stderr_relay.stop()
    os._exit(code)
