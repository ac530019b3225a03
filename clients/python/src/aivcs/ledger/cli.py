"""The `aivcs-ledger` command: create, inspect and end runs, append, read and follow events, manage releases.

Human tables by default, `--json` for scripts: one JSON document for a
single object, a JSON array for `runs list` and `releases history`, and JSON
Lines (one event per line) for `events read|tail|export`; keys sorted, so
the same data always prints the same bytes. Where a run id is expected, an
unambiguous prefix of one will do (see `resolve_run_id`).

Exit codes: 0 success, 1 the daemon refused (the message says why), 2 bad
usage, 3 the daemon could not be reached.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from aivcs.ledger import _backup as backup
from aivcs.ledger import _render as render
from aivcs.ledger._client import Client
from aivcs.ledger._connection import (
    DEFAULT_TARGET,
    ENV_CA_FILE,
    ENV_CERT_FILE,
    ENV_KEY_FILE,
    ENV_TARGET,
    ENV_TLS,
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    Connection,
    read_token_file,
)
from aivcs.ledger._errors import InvalidArgument, LedgerError, NotFound, Unavailable
from aivcs.ledger._models import JSON, NewEvent, RunStatus
from aivcs.ledger._settings import DEFAULT_BATCH_EVENTS

F = TypeVar("F", bound=Callable[..., Any])

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3
_META = "aivcs.ledger.connection"
# A run id prefix is looked up among this many of the newest runs (ListRuns pages).
PREFIX_SEARCH_RUNS = 10_000
PREFIX_CANDIDATES_SHOWN = 5


# -- connection options, accepted before or after the subcommand ------------------


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keep a connection option; the command line beats the environment, the last given wins."""
    if value is None or param.name is None:
        return
    source = ctx.get_parameter_source(param.name)
    given: dict[str, tuple[Any, ParameterSource | None]] = ctx.meta.setdefault(_META, {})
    earlier = given.get(param.name)
    if earlier is not None and earlier[1] == ParameterSource.COMMANDLINE and source != ParameterSource.COMMANDLINE:
        return
    given[param.name] = (value, source)


def _connection_options(function: F, hidden: bool) -> F:
    options = [
        click.option(
            "--target",
            envvar=ENV_TARGET,
            metavar="HOST:PORT",
            expose_value=False,
            callback=_remember,
            help=f"The daemon's address [env {ENV_TARGET}; default {DEFAULT_TARGET}].",
        ),
        click.option(
            "--token",
            envvar=ENV_TOKEN,
            expose_value=False,
            callback=_remember,
            help=f"Bearer token sent with every call [env {ENV_TOKEN}].",
        ),
        click.option(
            "--token-file",
            envvar=ENV_TOKEN_FILE,
            expose_value=False,
            callback=_remember,
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"File holding the token, e.g. a mounted secret [env {ENV_TOKEN_FILE}].",
        ),
        click.option(
            "--tls/--no-tls",
            envvar=ENV_TLS,
            default=None,
            expose_value=False,
            callback=_remember,
            help=f"Connect with TLS [env {ENV_TLS}].",
        ),
        click.option(
            "--ca-file",
            envvar=ENV_CA_FILE,
            expose_value=False,
            callback=_remember,
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"CA certificate(s) to trust, PEM; implies --tls [env {ENV_CA_FILE}].",
        ),
        click.option(
            "--cert-file",
            envvar=ENV_CERT_FILE,
            expose_value=False,
            callback=_remember,
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"Client certificate for mutual TLS, PEM; implies --tls [env {ENV_CERT_FILE}].",
        ),
        click.option(
            "--key-file",
            envvar=ENV_KEY_FILE,
            expose_value=False,
            callback=_remember,
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"Private key of --cert-file, PEM [env {ENV_KEY_FILE}].",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            expose_value=False,
            callback=_remember,
            help="Seconds each call may take [default 30].",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    for param in getattr(function, "__click_params__", [])[-len(options) :]:
        param.hidden = hidden
    return function


def connection_options(function: F) -> F:
    """The connection options again on a subcommand, hidden from its help to keep it short."""
    return _connection_options(function, hidden=True)


def _iso_time(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 date or time; local time unless it names a zone (e.g. Z or +02:00)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time such as 2026-01-31 or 2026-01-31T12:00:00Z", ctx, param
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(function)


def _connection(ctx: click.Context) -> Connection:
    given: dict[str, tuple[Any, ParameterSource | None]] = ctx.meta.get(_META, {})

    def get(name: str) -> Any:
        entry = given.get(name)
        return None if entry is None else entry[0]

    token, token_file = given.get("token"), given.get("token_file")
    if token is not None and token_file is not None:
        if token[1] == token_file[1]:
            raise click.UsageError("give --token or --token-file, not both")
        if token_file[1] == ParameterSource.COMMANDLINE:
            token = None
    token_value: str | None = token[0] if token is not None else None
    if token_value is None and token_file is not None:
        try:
            token_value = read_token_file(token_file[0])
        except OSError as error:
            raise click.BadParameter(
                f"cannot read {token_file[0]}: {error.strerror}", param_hint="--token-file"
            ) from None
    if (get("cert_file") is None) != (get("key_file") is None):
        raise click.UsageError("--cert-file and --key-file go together")
    return Connection(
        target=get("target") or DEFAULT_TARGET,
        token=token_value or None,
        tls=bool(get("tls")),
        ca_file=get("ca_file"),
        cert_file=get("cert_file"),
        key_file=get("key_file"),
        timeout=get("timeout") or 30.0,
    )


class _Obj:
    """The client, made on first use so `--help` never needs a daemon."""

    def __init__(self, ctx: click.Context) -> None:
        self._ctx = ctx
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            try:
                self._client = Client(connection=_connection(self._ctx))
            except OSError as error:  # an unreadable --ca-file, --cert-file or --key-file
                raise click.UsageError(f"cannot read {error.filename}: {error.strerror}") from None
            self._ctx.call_on_close(self._client.close)
        return self._client


def _client() -> Client:
    ctx = click.get_current_context()
    obj: _Obj = ctx.find_root().obj
    return obj.client


def resolve_run_id(client: Client, given: str) -> str:
    """`given` if it is a run id, else the one run id among the newest runs that starts with it.

    Looks at most at the newest PREFIX_SEARCH_RUNS runs, so an old run needs its full id.
    """
    try:
        return client.runs.get(given).run_id
    except NotFound:
        pass
    matches: list[str] = []
    for run in client.runs.list(limit=PREFIX_SEARCH_RUNS, page_size=1000):
        if run.run_id.startswith(given):
            matches.append(run.run_id)
            if len(matches) > PREFIX_CANDIDATES_SHOWN:
                break
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise Refused(
            f"no run has the id {given!r}, nor an id starting with it among the newest "
            f"{PREFIX_SEARCH_RUNS:,} runs (NOT_FOUND)"
        )
    shown = ", ".join(matches[:PREFIX_CANDIDATES_SHOWN])
    more = ", ..." if len(matches) > PREFIX_CANDIDATES_SHOWN else ""
    raise click.UsageError(f"run id prefix {given!r} is ambiguous: {shown}{more}; give more characters")


def _note_cut(shown: int, more: bool, what: str) -> None:
    """Say on stderr that a list stopped at -n, so nobody takes it for the whole."""
    if more:
        click.echo(f"showing {shown} {what}, there are more; use -n to see more", err=True)


# -- errors ---------------------------------------------------------------------------


class Refused(click.ClickException):
    """A daemon refusal, shown as one line without a traceback."""

    exit_code = EXIT_REFUSED

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class Unreachable(Refused):
    exit_code = EXIT_UNREACHABLE


def _explain(error: LedgerError, target: str) -> Refused:
    if isinstance(error, Unavailable):
        return Unreachable(
            f"cannot reach the ledger daemon at {target} ({error.message}). "
            f"Is aivcs-ledgerd running there? Set --target or {ENV_TARGET}."
        )
    return Refused(f"{error.message} ({error.code.name})")


class LedgerGroup(click.Group):
    """Turns every LedgerError raised below into a one-line error and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LedgerError as error:
            target = _connection(ctx).target if ctx.meta.get(_META) else DEFAULT_TARGET
            raise _explain(error, target) from None
        except BrokenPipeError:  # `aivcs-ledger events read ... | head`
            sys.stderr.close()
            sys.exit(0)


# -- the commands ---------------------------------------------------------------------


@click.group(cls=LedgerGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@lambda function: _connection_options(function, hidden=False)
@click.version_option(package_name="aivcs-ledger", prog_name="aivcs-ledger")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Create, inspect and end runs, append, read and follow their events, and manage releases of the AIVCS ledger.

    These options may also follow a subcommand, e.g. `aivcs-ledger runs list --target HOST:PORT --json`.
    Exit codes: 0 ok, 1 the daemon refused, 2 bad usage, 3 the daemon is unreachable.
    """
    ctx.obj = _Obj(ctx)


@cli.group(cls=LedgerGroup)
def runs() -> None:
    """Create, list, inspect and end runs."""


def _tag(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, JSON]:
    tags: dict[str, JSON] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", ctx, param)
        tags[key] = text
    return tags


@runs.command("create")
@click.argument("spec_digest")
@click.argument("agent")
@click.option("--git-sha", help="The git commit the agent runs from.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", callback=_tag, help="A label (repeatable).")
@click.option("--run-id", help="Choose the run id; creating it again returns the same run.")
@click.option(
    "--inactivity-timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Fail the run after this long with no append and no heartbeat; 0: never [default: the daemon's].",
)
@json_option
@connection_options
def runs_create(
    spec_digest: str,
    agent: str,
    git_sha: str | None,
    tags: dict[str, JSON],
    run_id: str | None,
    inactivity_timeout: float | None,
    as_json: bool,
) -> None:
    """Create a RUNNING run of AGENT and print its id."""
    run = _client().runs.create(
        spec_digest, agent, git_sha=git_sha, tags=tags or None, run_id=run_id, inactivity_timeout=inactivity_timeout
    )
    click.echo(render.pretty(run.to_dict()) if as_json else run.run_id)


def _print_run(run: Any, as_json: bool) -> None:
    if as_json:
        click.echo(render.pretty(run.to_dict()))
    else:
        reason = f": {run.status_reason}" if run.status_reason else ""
        click.echo(f"run {run.run_id} is {run.status.value}{reason}")


@runs.command("cancel")
@click.argument("run_id")
@click.option("--reason", default="", help="Why, stored with the run.")
@json_option
@connection_options
def runs_cancel(run_id: str, reason: str, as_json: bool) -> None:
    """End a RUNNING run as CANCELLED."""
    client = _client()
    _print_run(client.runs.cancel(resolve_run_id(client, run_id), reason), as_json)


@runs.command("fail")
@click.argument("run_id")
@click.option("--reason", required=True, help="Why it failed, stored with the run.")
@json_option
@connection_options
def runs_fail(run_id: str, reason: str, as_json: bool) -> None:
    """End a RUNNING run as FAILED."""
    client = _client()
    _print_run(client.runs.fail(resolve_run_id(client, run_id), reason), as_json)


@runs.command("heartbeat")
@click.argument("run_id")
@json_option
@connection_options
def runs_heartbeat(run_id: str, as_json: bool) -> None:
    """Tell the daemon the run's agent is alive, so its inactivity timeout starts again."""
    client = _client()
    _print_run(client.runs.heartbeat(resolve_run_id(client, run_id)), as_json)


@runs.command("list")
@click.option("--agent", help="Only runs of this agent.")
@click.option("--spec", "spec_digest", metavar="DIGEST", help="Only runs of this spec digest.")
@click.option("--git-sha", help="Only runs from this git commit.")
@click.option(
    "--status",
    type=click.Choice([s.value for s in RunStatus], case_sensitive=False),
    help="Only runs in this status (any case).",
)
@click.option(
    "--since",
    metavar="TIME",
    callback=_iso_time,
    help="Only runs created at or after this ISO 8601 time (local unless zoned).",
)
@click.option(
    "--until",
    metavar="TIME",
    callback=_iso_time,
    help="Only runs created before this ISO 8601 time (local unless zoned).",
)
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True, help="At most this many.")
@json_option
@connection_options
def runs_list(
    agent: str | None,
    spec_digest: str | None,
    git_sha: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """Runs, newest first."""
    found = list(
        _client().runs.list(
            agent_name=agent,
            spec_digest=spec_digest,
            git_sha=git_sha,
            status=status,
            created_after=since,
            created_before=until,
            limit=limit + 1,
        )
    )
    more, found = len(found) > limit, found[:limit]
    _note_cut(len(found), more, "runs")
    if as_json:
        click.echo(render.pretty([run.to_dict() for run in found]))
    elif not found:
        click.echo("no runs", err=True)
    else:
        render.make_console().print(render.runs_table(found))


@runs.command("show")
@click.argument("run_id")
@click.option("--verify", is_flag=True, help="Also have the daemon recompute the run's hash chain.")
@json_option
@connection_options
def runs_show(run_id: str, verify: bool, as_json: bool) -> None:
    """One run in full."""
    client = _client()
    run_id = resolve_run_id(client, run_id)
    run = client.runs.get(run_id)
    verification = client.runs.verify(run_id) if verify else None
    if as_json:
        document = run.to_dict()
        if verification is not None:
            document["verification"] = verification.to_dict()
        click.echo(render.pretty(document))
    else:
        render.make_console().print(render.run_table(run, verification))


@cli.group(cls=LedgerGroup)
def events() -> None:
    """Append, read, follow and export the events of a run."""


@events.command("read")
@click.argument("run_id")
@click.option("--from-seq", type=click.IntRange(min=0), default=0, help="First seq (default: the start).")
@click.option("--to-seq", type=click.IntRange(min=0), default=0, help="Last seq, inclusive (default: the end).")
@click.option("--kind", "kinds", multiple=True, help="Only events of this kind (repeatable).")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=0, help="At most this many (default: all).")
@json_option
@connection_options
def events_read(run_id: str, from_seq: int, to_seq: int, kinds: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Stored events of a run, in seq order."""
    client = _client()
    run_id = resolve_run_id(client, run_id)
    stream = client.events.read(run_id, from_seq=from_seq, to_seq=to_seq, kinds=kinds, limit=limit + 1 if limit else 0)
    shown = _print_events(stream, as_json, limit or None)
    _note_cut(limit, limit > 0 and shown > limit, "events")


@events.command("tail")
@click.argument("run_id")
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Start with this many of the last stored events.",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the run finishes.")
@json_option
@connection_options
def events_tail(run_id: str, lines: int, follow: bool, as_json: bool) -> None:
    """The last events of a run; with --follow, new ones as they are appended."""
    client = _client()
    run_id = resolve_run_id(client, run_id)
    run = client.runs.get(run_id)
    start = max(1, run.total_events - lines + 1)
    if not follow:
        if lines:
            _print_events(client.events.read(run_id, from_seq=start), as_json)
        return
    _print_events(client.events.subscribe(run_id, from_seq=start), as_json)
    final = client.runs.get(run_id)
    click.echo(f"run {run_id} is {final.status.value} ({final.total_events} events)", err=True)


@events.command("export")
@click.argument("run_id")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=Path("-"),
    help="File to write (default: standard output).",
)
@click.option("--from-seq", type=click.IntRange(min=0), default=0, help="First seq (default: the start).")
@click.option("--to-seq", type=click.IntRange(min=0), default=0, help="Last seq, inclusive (default: the end).")
@click.option("--kind", "kinds", multiple=True, help="Only events of this kind (repeatable).")
@click.option(
    "--progress/--no-progress", default=None, help="Show a progress bar on stderr [default: when stderr is a terminal]."
)
@connection_options
def events_export(
    run_id: str, output: Path, from_seq: int, to_seq: int, kinds: tuple[str, ...], progress: bool | None
) -> None:
    """Events of a run as JSON Lines, one event per line."""
    client = _client()
    run_id = resolve_run_id(client, run_id)
    run = client.runs.get(run_id)
    last = run.total_events if to_seq == 0 else min(to_seq, run.total_events)
    total = max(0, last - max(from_seq, 1) + 1)
    show = sys.stderr.isatty() if progress is None else progress
    stream = client.events.read(run_id, from_seq=from_seq, to_seq=to_seq, kinds=kinds)
    with click.open_file(str(output), "w", encoding="utf-8", atomic=str(output) != "-") as out:
        count = _export(stream, out, total, show and total > 0)
    if str(output) != "-":
        click.echo(f"exported {count} events of run {run_id} to {output}", err=True)


def _export(stream: Iterator[Any], out: IO[str], total: int, show: bool) -> int:
    count = 0
    if not show:
        for event in stream:
            out.write(render.dumps(event.to_dict()) + "\n")
            count += 1
        return count
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("exporting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=render.make_console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task("export", total=total)
        for event in stream:
            out.write(render.dumps(event.to_dict()) + "\n")
            count += 1
            if count % 200 == 0:
                bar.update(task, completed=count)
        bar.update(task, completed=count, total=max(total, count))
    return count


def _print_events(stream: Iterator[Any], as_json: bool, limit: int | None = None) -> int:
    """Print up to `limit` events; return how many the stream had (so one more than `limit` says it was cut)."""
    count = 0
    for event in stream:
        count += 1
        if limit is None or count <= limit:
            click.echo(render.dumps(event.to_dict()) if as_json else render.event_line(event))
    return count


def _event_from_line(number: int, line: str) -> NewEvent:
    try:
        document = json.loads(line)
    except ValueError as error:
        raise click.UsageError(f"stdin line {number}: not JSON ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("kind"), str):
        raise click.UsageError(f'stdin line {number}: expected an object such as {{"kind": "step", "payload": {{}}}}')
    unknown = set(document) - {"kind", "payload", "timestamp"}
    if unknown:
        raise click.UsageError(
            f"stdin line {number}: unknown field(s) {', '.join(sorted(unknown))}; expected kind, payload, timestamp"
        )
    payload = document.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise click.UsageError(f"stdin line {number}: payload must be an object")
    stamp = document.get("timestamp")
    moment: datetime | None = None
    if stamp is not None:
        try:
            moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise click.UsageError(
                f"stdin line {number}: timestamp must be an RFC 3339 time with a zone, e.g. 2026-01-31T12:00:00Z"
            )
    return NewEvent(document["kind"], payload, moment)


@events.command("append")
@click.argument("run_id")
@click.argument("kind", required=False)
@click.option("--payload", metavar="JSON", help="The event's payload, a JSON object (with KIND).")
@click.option(
    "--expect-last-seq",
    type=click.IntRange(min=0),
    default=None,
    help="Refuse (ABORTED) unless the run's last seq is this (0: no events yet).",
)
@json_option
@connection_options
def events_append(
    run_id: str, kind: str | None, payload: str | None, expect_last_seq: int | None, as_json: bool
) -> None:
    """Append one event of KIND, or, without KIND, JSON Lines from stdin.

    Each stdin line is an object {"kind": K, "payload": {...}, "timestamp": "...Z"} (payload and
    timestamp optional). Every line is checked before anything is sent; the events then go in
    batches of at most 200, each atomic and carrying an idempotency key.
    """
    if kind is None:
        if payload is not None:
            raise click.UsageError("--payload goes with KIND; stdin lines carry their own payloads")
        new = [_event_from_line(number, line) for number, line in enumerate(sys.stdin, 1) if line.strip()]
        if not new:
            raise click.UsageError("no KIND given and no JSON lines on stdin")
    else:
        try:
            document = json.loads(payload) if payload is not None else None
        except ValueError as error:
            raise click.BadParameter(f"not JSON ({error})", param_hint="--payload") from None
        if document is not None and not isinstance(document, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--payload")
        new = [NewEvent(kind, document)]
    client = _client()
    run_id = resolve_run_id(client, run_id)
    key = uuid.uuid4().hex
    first = last = 0
    for start in range(0, len(new), DEFAULT_BATCH_EVENTS):
        batch = new[start : start + DEFAULT_BATCH_EVENTS]
        try:
            result = client.events.append(
                run_id,
                batch,
                expected_last_seq=expect_last_seq if start == 0 else None,
                idempotency_key=f"cli-{key}:{start}",
            )
        except LedgerError as error:
            if start:
                error.message += f" (the first {start} of {len(new)} events were appended, up to seq {last})"
            raise
        first, last = first or result.first_seq, result.last_seq
    if as_json:
        click.echo(render.pretty({"run_id": run_id, "count": len(new), "first_seq": first, "last_seq": last}))
    else:
        click.echo(f"appended {len(new)} events to run {run_id}: seqs {first}..{last}")


@cli.group(cls=LedgerGroup)
def releases() -> None:
    """Promote, roll back and inspect the releases of an agent."""


def _default_actor() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = os.environ.get("USER", "")
    return user or "aivcs-ledger"


by_option = click.option(
    "--by",
    "promoted_by",
    default=_default_actor,
    show_default="current user",
    help="Who makes this entry (a person, a pipeline).",
)
expect_option = click.option(
    "--expect-current",
    metavar="DIGEST",
    default=None,
    help="Refuse (ABORTED) unless the current release has this spec digest.",
)


@releases.command("promote")
@click.argument("agent")
@click.argument("spec_digest")
@click.option("--label", "version_label", help="A human label such as v1.4.0.")
@click.option("--notes", help="Free text stored with the release.")
@by_option
@expect_option
@click.option(
    "--require-successful-run",
    is_flag=True,
    help="Refuse unless the ledger holds a completed, successful run of this spec by this agent.",
)
@json_option
@connection_options
def releases_promote(
    agent: str,
    spec_digest: str,
    version_label: str | None,
    notes: str | None,
    promoted_by: str,
    expect_current: str | None,
    require_successful_run: bool,
    as_json: bool,
) -> None:
    """Make SPEC_DIGEST the current release of AGENT."""
    release = _client().releases.promote(
        agent,
        spec_digest,
        promoted_by=promoted_by,
        version_label=version_label,
        notes=notes,
        expected_current_spec_digest=expect_current,
        require_successful_run=require_successful_run,
    )
    _print_release(release, as_json)


@releases.command("rollback")
@click.argument("agent")
@click.option(
    "--to",
    "to_spec_digest",
    metavar="DIGEST",
    help="Go back to the newest earlier release of this spec (default: the previous entry).",
)
@click.option("--notes", help="Free text for the new entry (default: the notes of the entry re-appended).")
@by_option
@expect_option
@json_option
@connection_options
def releases_rollback(
    agent: str,
    to_spec_digest: str | None,
    notes: str | None,
    promoted_by: str,
    expect_current: str | None,
    as_json: bool,
) -> None:
    """Re-append an earlier release of AGENT as current, like `kubectl rollout undo`."""
    release = _client().releases.rollback(
        agent,
        promoted_by=promoted_by,
        to_spec_digest=to_spec_digest,
        expected_current_spec_digest=expect_current,
        notes=notes,
    )
    _print_release(release, as_json)


@releases.command("current")
@click.argument("agent")
@json_option
@connection_options
def releases_current(agent: str, as_json: bool) -> None:
    """The current release of AGENT."""
    _print_release(_client().releases.current(agent), as_json)


@releases.command("history")
@click.argument("agent")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True, help="At most this many.")
@json_option
@connection_options
def releases_history(agent: str, limit: int, as_json: bool) -> None:
    """The release history of AGENT, newest first."""
    found = list(_client().releases.history(agent, limit=limit + 1))
    more, found = len(found) > limit, found[:limit]
    _note_cut(len(found), more, "releases")
    if as_json:
        click.echo(render.pretty([release.to_dict() for release in found]))
    elif not found:
        click.echo(f"no releases of {agent}", err=True)
    else:
        render.make_console().print(render.releases_table(found))


def _print_release(release: Any, as_json: bool) -> None:
    if as_json:
        click.echo(render.pretty(release.to_dict()))
    else:
        render.make_console().print(render.releases_table([release]))


@cli.command("health")
@click.option("--service", default="", help="A service name, e.g. aivcs.ledger.v1.EventStream [default: the daemon].")
@json_option
@connection_options
def health(service: str, as_json: bool) -> None:
    """Ask the daemon's health service; exit 0 when SERVING, 1 otherwise, 3 when unreachable."""
    client = _client()
    status = client.health(service)
    if as_json:
        click.echo(render.pretty({"target": client.target, "service": service, "status": status}))
    else:
        click.echo(f"{client.target}: {status}")
    if status != "SERVING":
        click.get_current_context().exit(EXIT_REFUSED)


# -- backup and restore ---------------------------------------------------------------


class _Ticker:
    """A one-line progress report on stderr, rewritten at most twice a second."""

    def __init__(self, show: bool) -> None:
        self._show = show
        self._last = 0.0
        self._shown = False

    def __call__(self, text: str) -> None:
        now = time.monotonic()
        if self._show and now - self._last >= 0.5:
            self._last = now
            self._shown = True
            click.echo(f"\r{text}\x1b[K", err=True, nl=False)

    def done(self) -> None:
        if self._shown:
            click.echo("", err=True)


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "-"


@cli.command("dump")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=Path("-"),
    help="File to write; .gz compresses it (default: standard output).",
)
@click.option("--agent", help="Only runs of this agent, and only its release history.")
@click.option("--created-after", callback=_iso_time, help="Only runs created at or after this time (ISO 8601).")
@click.option("--created-before", callback=_iso_time, help="Only runs created before this time (ISO 8601).")
@click.option("--no-releases", is_flag=True, help="Leave the release histories out.")
@click.option(
    "--progress/--no-progress", default=None, help="Show progress on stderr [default: when stderr is a terminal]."
)
@connection_options
def dump_command(
    output: Path,
    agent: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    no_releases: bool,
    progress: bool | None,
) -> None:
    """Back the ledger up, online: every run, its events and idempotency records, and release histories.

    JSON Lines with a versioned header (docs/dump-format.md); each run as of its head. A file is
    replaced only once the dump is whole. Needs any valid token (it only reads).
    """
    ticker = _Ticker(sys.stderr.isatty() if progress is None else progress)
    try:
        figures = backup.dump_to_file(
            _connection(click.get_current_context()),
            output,
            agent_name=agent,
            created_after=created_after,
            created_before=created_before,
            releases=not no_releases,
            progress=lambda f: ticker(f"dumping: {f.runs:,} runs, {f.events:,} events"),
        )
    finally:
        ticker.done()
    where = "standard output" if str(output) == "-" else str(output)
    click.echo(
        f"dumped {figures.runs:,} runs, {figures.events:,} events and {figures.releases:,} release entries "
        f"to {where} ({figures.bytes:,} bytes) in {figures.seconds:.1f} s "
        f"({_rate(figures.events, figures.seconds)} events)",
        err=True,
    )


@cli.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--progress/--no-progress", default=None, help="Show progress on stderr [default: when stderr is a terminal]."
)
@json_option
@connection_options
def restore_command(file: Path, progress: bool | None, as_json: bool) -> None:
    """Restore a dump (from `aivcs-ledger dump`; .gz is read compressed) into the daemon. Needs an admin token.

    Every run's hash chain is recomputed; a run that does not match is refused and nothing of it
    is written. Runs already present with the same content are left unchanged, so restoring
    again is safe. Exit 1 when anything was refused or the dump is incomplete.
    """
    ticker = _Ticker(sys.stderr.isatty() if progress is None else progress)
    figures = backup.RestoreFigures()

    def refused(outcome: backup.Outcome) -> None:
        if outcome.verdict == "refused":
            ticker.done()
            click.echo(f"refused {outcome.describe()}", err=True)

    def summary() -> dict[str, Any]:
        return {
            "records": figures.records,
            "events": figures.events,
            "complete": figures.complete,
            "seconds": round(figures.seconds, 3),
            **{key.replace(" ", "_"): n for key, n in figures.counts.items()},
            "refused": [
                {"run_id": o.run_id, "agent_name": o.agent_name, "first_bad_seq": o.first_bad_seq, "reason": o.reason}
                for o in figures.refused
            ],
        }

    try:
        with backup.open_dump_for_reading(file) as lines:
            backup.restore(
                _connection(click.get_current_context()),
                iter(lines),
                figures=figures,
                on_outcome=refused,
                progress=lambda f: ticker(f"restoring: {f.records:,} records, {f.events:,} events"),
            )
    except OSError as error:
        raise Refused(f"cannot read {file}: {error}") from None
    except LedgerError as error:
        ticker.done()
        if isinstance(error, InvalidArgument):
            raise Refused(
                f"{file}: {error.message} (record N is line N of the file); "
                f"{figures.counts.get('runs restored', 0):,} runs were restored before it"
            ) from None
        raise
    finally:
        ticker.done()
    counts = ", ".join(f"{n:,} {key}" for key, n in sorted(figures.counts.items())) or "nothing"
    if as_json:
        click.echo(render.pretty(summary()))
    click.echo(
        f"read {figures.records:,} records ({figures.events:,} events) in {figures.seconds:.1f} s "
        f"({_rate(figures.events, figures.seconds)} events): {counts}",
        err=True,
    )
    if not figures.complete:
        click.echo(
            "error: the dump ended before its end record (truncated?); the run in progress was not restored", err=True
        )
    if figures.refused or not figures.complete:
        click.get_current_context().exit(EXIT_REFUSED)


def main() -> NoReturn:
    cli.main(prog_name="aivcs-ledger")
    raise SystemExit(0)  # cli.main exits by itself; this satisfies the type checker


if __name__ == "__main__":
    main()
