"""One log line per notable call: run and release lifecycle, and every refused write.

Logged, with `run_id` (or `agent_name`), `method` and `code` as structured
fields under `--log-json`:

- INFO: a run created, completed, failed or cancelled; a release promoted
  or rolled back; a write refused for the caller's reasons (invalid
  argument, not found, already exists, failed precondition, aborted), and
  each refused batch of an IngestEvents stream.
- WARNING: any call refused as unauthenticated or not permitted, and
  refusals that point at the daemon or its database (unavailable,
  resource exhausted, deadline, internal, unknown).

Successful appends and reads are not logged (metrics count them), and no
payload, tag or token ever is: only ids, names, codes and the status
message, which the ledger words without request payloads.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from aivcs_ledgerd.methods import OPEN_SERVICES, STREAM_APPEND, WRITE_METHODS
from aivcs_ledgerd.middleware.interceptors import CallHooks, Context, Hooks, HooksFactory, Method, peer_of
from aivcs_ledgerd.util.codes import CODES_BY_NUMBER
from aivcs_ledgerd.util.text import cut

log = logging.getLogger("aivcs_ledgerd.calls")

CALLER_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
ACCESS_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})

DONE = {
    "CreateRun": "run created",
    "CompleteRun": "run completed",
    "FailRun": "run failed",
    "CancelRun": "run cancelled",
    "Promote": "release promoted",
    "Rollback": "release rolled back",
}

RUN_ENDS = frozenset({"CompleteRun", "FailRun", "CancelRun"})
# A reason may hold 4096 bytes; a log line carries its start and says how long it was.
REASON_LOG_BYTES = 200


def bounded(reason: str, limit: int = REASON_LOG_BYTES) -> str:
    """`reason`, or its first `limit` bytes (whole characters) and its length in bytes when longer."""
    data = reason.encode("utf-8")
    if len(data) <= limit:
        return reason
    return data[:limit].decode("utf-8", "ignore") + f"… ({len(data)} bytes)"


class CallLog(Hooks):
    """Logs the calls of the ledger's services (not health or reflection)."""

    def factory(self, method: Method) -> HooksFactory | None:
        return None if method.service in OPEN_SERVICES else _Logged


MAX_LOGGED_REASON = 1024  # characters of a status message


def _field(message: Any, name: str) -> str | None:
    value = getattr(message, name, None)
    return cut(value) if isinstance(value, str) and value else None


def _ids_of(message: Any) -> dict[str, str]:
    """The run_id and agent_name a request names (cut for the log)."""
    found = {name: _field(message, name) for name in ("run_id", "agent_name")}
    return {name: value for name, value in found.items() if value is not None}


class _Logged(CallHooks):
    def __init__(self, method: Method, context: Context) -> None:
        super().__init__(method, context)
        self._write = method.path in WRITE_METHODS
        self._ids: dict[str, str] = {}
        self._batches: dict[int, str] = {}  # IngestEvents: batch_id -> run_id
        self._end: tuple[int, str] | None = None  # a run's end: (total_events, status_reason)
        self._request: Any = None  # a unary request

    async def received(self, message: Any) -> None:
        if self.method.path == STREAM_APPEND:
            run_id = _field(message, "run_id")
            if run_id is not None:
                self._batches[message.batch_id] = run_id
            return
        if not self.method.streaming:
            self._request = message  # its ids are read only if the call is logged (finished)
            return
        self._ids.update(_ids_of(message))

    def sent(self, message: Any) -> None:
        if self.method.path == STREAM_APPEND:
            run_id = self._batches.pop(message.batch_id, None)
            if message.HasField("error"):
                code = CODES_BY_NUMBER.get(message.error.code, grpc.StatusCode.UNKNOWN)
                extra = {"method": self.method.name, "code": code.name, "run_id": run_id}
                emit_refusal(
                    code,
                    "%s batch %d of run %r refused: %s %s",
                    self.method.name,
                    message.batch_id,
                    run_id,
                    code.name,
                    cut(message.error.message, MAX_LOGGED_REASON),
                    extra=extra,
                )
            return
        run = getattr(message, "run", None)
        if run is not None and run.run_id:
            self._ids["run_id"] = cut(run.run_id)
            if self.method.name in RUN_ENDS:
                self._ids["agent_name"] = cut(run.agent_name)
                self._end = (run.total_events, run.status_reason)
        release = getattr(message, "release", None)
        if release is not None and release.agent_name:
            self._ids["agent_name"] = cut(release.agent_name)
            self._ids["spec_digest"] = cut(release.spec_digest)

    def finished(self, code: grpc.StatusCode) -> None:
        done = DONE.get(self.method.name) if code is grpc.StatusCode.OK else None
        if code is grpc.StatusCode.OK and done is None:
            return  # an ordinary success (most calls): nothing to log, so nothing is built
        if not notable(code, self._write):
            return
        ids = _ids_of(self._request) | self._ids  # what the response named wins over the request
        subject = subject_of(ids)
        extra: dict[str, Any] = {"method": self.method.name, "code": code.name}
        extra.update((key, ids[key]) for key in ("run_id", "agent_name") if key in ids)
        if done is not None:
            if self._end is not None:
                events, reason = self._end
                extra |= {"events": events, "reason": bounded(reason)}
                agent = ids.get("agent_name", "")
                because = f", reason {bounded(reason)!r}" if reason else ""
                log.info("%s: %s of agent %r, %d events%s", done, subject, agent, events, because, extra=extra)
            else:
                digest = f" (spec_digest {ids['spec_digest']})" if "spec_digest" in ids else ""
                log.info("%s: %s%s", done, subject, digest, extra=extra)
            return
        details = self.context.details() or ""
        if isinstance(details, bytes):
            details = details.decode("utf-8", "replace")
        log_refusal(self.method.name, code, details, subject, peer_of(self.context), extra)


def notable(code: grpc.StatusCode, write: bool) -> bool:
    """Whether a call that ended with `code` is worth a line, success aside: not when the caller hung
    up, nor when a read found nothing or was malformed."""
    return code is not grpc.StatusCode.CANCELLED and not (code in CALLER_CODES and not write)


def subject_of(ids: dict[str, str]) -> str:
    """What a line is about: "run 'x'", else "agent 'y'", else nothing."""
    if "run_id" in ids:
        return f"run {ids['run_id']!r}"
    return f"agent {ids['agent_name']!r}" if "agent_name" in ids else ""


def log_refusal(name: str, code: grpc.StatusCode, details: str, subject: str, peer: str, extra: dict[str, Any]) -> None:
    """One line for a refused call (gRPC's or the HTTP API's): an access refusal names the peer."""
    details = cut(details, MAX_LOGGED_REASON)
    if code in ACCESS_CODES:
        extra["peer"] = peer
        log.warning("%s refused from %s: %s %s", name, peer, code.name, details, extra=extra)
        return
    emit_refusal(
        code, "%s%s refused: %s %s", name, f" of {subject}" if subject else "", code.name, details, extra=extra
    )


def emit_refusal(code: grpc.StatusCode, message: str, *args: Any, extra: dict[str, Any]) -> None:
    """Log a refusal: INFO when the caller's request was at fault, WARNING when the daemon or its database was."""
    level = logging.INFO if code in CALLER_CODES else logging.WARNING
    log.log(level, message, *args, extra=extra)
