"""How one OTLP span becomes ledger values: its run's identity, its event, and the run's end.

The mapping (README, "OpenTelemetry in"):

- trace id (16 bytes) -> run_id, 32 lowercase hex characters;
- agent_name: the root span's `gen_ai.agent.name`, else the resource's
  `service.name` (else "unknown_service", as OTel SDKs name a service that
  did not say);
- spec_digest: `aivcs.spec_digest` (span, else resource), 64 hex; without
  it, SHA-256 of the UTF-8 text `agent_name + "\\n" + service.version`
  (`service.version` "" when absent), see `derived_spec_digest`;
- git_sha: the first of `aivcs.git_sha`, `vcs.ref.head.revision`,
  `vcs.repository.ref.revision` (span, else resource);
- tags: TAG_ATTRIBUTES where present, and every `aivcs.tag.NAME` as NAME;
- the event: kind `gen_ai.operation.name` (else "span"), time = the span's
  end, payload = `payload()`; token usage `gen_ai.usage.input_tokens` and
  `gen_ai.usage.output_tokens`;
- a span without a parent is the root: it ends the run, FAILED with its
  status message when its status is ERROR, else COMPLETED, with the root's
  duration.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from aivcs_ledgerd.ledger import validation
from aivcs_ledgerd.ledger.errors import InvalidArgument
from aivcs_ledgerd.model import NewEvent
from aivcs_ledgerd.otlp.values import Bounds, any_value, attributes, bounded_text, find_count, find_text, json_int

DEFAULT_KIND = "span"
UNKNOWN_SERVICE = "unknown_service"
SPEC_DIGEST = "aivcs.spec_digest"
GIT_SHA = ("aivcs.git_sha", "vcs.ref.head.revision", "vcs.repository.ref.revision")
TAG_PREFIX = "aivcs.tag."
TAG_ATTRIBUTES = (
    "service.name",
    "service.namespace",
    "service.version",
    "deployment.environment.name",
    "gen_ai.agent.id",
    "gen_ai.conversation.id",
)
MAX_SPAN_EVENTS = 1000
MAX_EVENT_NS = 2**63 - 1  # event times are signed 64-bit nanoseconds
_STATUS = {
    trace_pb2.Status.STATUS_CODE_UNSET: "UNSET",
    trace_pb2.Status.STATUS_CODE_OK: "OK",
    trace_pb2.Status.STATUS_CODE_ERROR: "ERROR",
}


# The payload's size as compact JSON: what the stored canonical form takes, give or take number formatting.
_size_estimate = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class SpanRefused(ValueError):
    """This span cannot be stored; the message says why, naming the span and field."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What a span says about its run, used when it creates the run (or, the root, ends it)."""

    agent_name: str
    spec_digest: str
    explicit_digest: bool  # from aivcs.spec_digest, not derived
    service_version: str
    git_sha: str | None
    tags: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Ending:
    """How the root span ends its run."""

    failed: bool
    reason: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span, mapped: the run it belongs to, its event, and its idempotency key."""

    run_id: str
    span_id: str
    event: NewEvent
    idempotency_key: str
    identity: Identity
    ending: Ending | None  # set on a root span

    @property
    def root(self) -> bool:
        return self.ending is not None


def derived_spec_digest(agent_name: str, service_version: str) -> str:
    """The spec digest of a run whose spans carry no `aivcs.spec_digest`."""
    return hashlib.sha256(f"{agent_name}\n{service_version}".encode()).hexdigest()


def _hex_id(field: str, raw: bytes, size: int, span: str) -> str:
    if len(raw) != size or not any(raw):
        raise SpanRefused(f"span {span}: {field} must be {size} bytes, not all zero")
    return raw.hex()


def _span_text(span: trace_pb2.Span, resource: resource_pb2.Resource, key: str) -> str | None:
    value = find_text(span.attributes, key)
    return value if value is not None else find_text(resource.attributes, key)


def _rfc3339(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def _identity(span: trace_pb2.Span, resource: resource_pb2.Resource, root: bool, span_name: str) -> Identity:
    service = find_text(resource.attributes, "service.name") or UNKNOWN_SERVICE
    agent = (find_text(span.attributes, "gen_ai.agent.name") if root else None) or service
    try:
        validation.identifier("agent_name", agent)
    except InvalidArgument as error:
        raise SpanRefused(f"span {span_name}: gen_ai.agent.name or service.name as {error}") from None
    version = find_text(resource.attributes, "service.version") or ""
    explicit = _span_text(span, resource, SPEC_DIGEST)
    if explicit is not None:
        try:
            digest = validation.digest(SPEC_DIGEST, explicit)
        except InvalidArgument as error:
            raise SpanRefused(f"span {span_name}: attribute {error}") from None
    else:
        digest = derived_spec_digest(agent, version)
    git_sha = None
    for key in GIT_SHA:
        git_sha = _span_text(span, resource, key)
        if git_sha:
            break
    if git_sha is not None:
        git_sha = bounded_text(git_sha, Bounds(), validation.MAX_ID_BYTES).replace("\x00", "") or None
    tags: dict[str, Any] = {}
    bounds = Bounds()
    for source in (resource.attributes, span.attributes):  # the span's own attributes win
        for pair in source:
            if pair.key in TAG_ATTRIBUTES:
                tags[pair.key] = any_value(pair.value, bounds)
            elif pair.key.startswith(TAG_PREFIX) and len(pair.key) > len(TAG_PREFIX):
                tags[bounded_text(pair.key[len(TAG_PREFIX) :], bounds, 1024)] = any_value(pair.value, bounds)
    return Identity(agent, digest, explicit is not None, version, git_sha, tags)


def _events(span: trace_pb2.Span, bounds: Bounds) -> list[dict[str, Any]]:
    events = []
    for count, event in enumerate(span.events):
        if count >= MAX_SPAN_EVENTS:
            bounds.dropped += len(span.events) - MAX_SPAN_EVENTS
            break
        item: dict[str, Any] = {
            "name": bounded_text(event.name, bounds, 1024),
            "time_unix_nano": str(event.time_unix_nano),
            "attributes": attributes(event.attributes, bounds),
        }
        if event.dropped_attributes_count:
            item["dropped_attributes_count"] = event.dropped_attributes_count
        events.append(item)
    return events


def map_span(
    resource: resource_pb2.Resource,
    scope: common_pb2.InstrumentationScope,
    span: trace_pb2.Span,
    max_payload_bytes: int,
) -> SpanRecord:
    """One span as ledger values; SpanRefused when it cannot be stored."""
    span_hex = span.span_id.hex() or "(no span_id)"
    trace_hex = _hex_id("trace_id", span.trace_id, 16, span_hex)
    span_hex = _hex_id("span_id", span.span_id, 8, span_hex)
    parent = span.parent_span_id
    if parent and len(parent) != 8:
        raise SpanRefused(f"span {span_hex}: parent_span_id must be empty or 8 bytes")
    root = not any(parent)
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if end == 0 or end > MAX_EVENT_NS:
        raise SpanRefused(f"span {span_hex}: end_time_unix_nano must be set and before the year 2262")
    bounds = Bounds()
    payload: dict[str, Any] = {
        "name": bounded_text(span.name, bounds, 1024),
        "trace_id": trace_hex,
        "span_id": span_hex,
        "parent_span_id": "" if root else parent.hex(),
        "kind": trace_pb2.Span.SpanKind.Name(span.kind)
        if span.kind in trace_pb2.Span.SpanKind.values()
        else str(span.kind),
        "start_time": _rfc3339(min(start, MAX_EVENT_NS)),
        "end_time": _rfc3339(end),
        "start_time_unix_nano": str(start),
        "end_time_unix_nano": str(end),
        "duration_ns": json_int(max(0, end - start)),
        "status": {
            "code": _STATUS.get(span.status.code, str(span.status.code)),
            "message": bounded_text(span.status.message, bounds, validation.MAX_TEXT_BYTES),
        },
        "attributes": attributes(span.attributes, bounds),
        "events": _events(span, bounds),
        "service_name": find_text(resource.attributes, "service.name") or UNKNOWN_SERVICE,
    }
    if scope.name:
        payload["scope"] = {
            "name": bounded_text(scope.name, bounds, 1024),
            "version": bounded_text(scope.version, bounds, 1024),
        }
    if span.links:
        payload["links"] = [
            {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()} for link in span.links[:MAX_SPAN_EVENTS]
        ]
    dropped_attributes = span.dropped_attributes_count + bounds.dropped
    if dropped_attributes:
        payload["dropped_attributes_count"] = dropped_attributes
    if span.dropped_events_count:
        payload["dropped_events_count"] = span.dropped_events_count
    if bounds.truncated:
        payload["truncated_values"] = bounds.truncated
    size = len(_size_estimate(payload))
    if size > max_payload_bytes:
        raise SpanRefused(f"span {span_hex}: its payload would be {size} bytes; the limit is {max_payload_bytes}")
    operation = find_text(span.attributes, "gen_ai.operation.name")
    kind = DEFAULT_KIND
    if operation:
        try:
            kind = validation.identifier("kind", operation)
        except InvalidArgument:
            kind = DEFAULT_KIND
    event = NewEvent(
        kind,
        payload,
        end,
        input_tokens=find_count(span.attributes, "gen_ai.usage.input_tokens"),
        output_tokens=find_count(span.attributes, "gen_ai.usage.output_tokens"),
    )
    ending = None
    if root:
        failed = span.status.code == trace_pb2.Status.STATUS_CODE_ERROR
        reason = span.status.message or (f"the root span {span.name!r} ended with status ERROR" if failed else "")
        ending = Ending(
            failed,
            bounded_text(reason, Bounds(), validation.MAX_TEXT_BYTES).replace("\x00", ""),
            max(0, end - start) // 1_000_000,
        )
    identity = _identity(span, resource, root, span_hex)
    return SpanRecord(trace_hex, span_hex, event, f"otlp:{span_hex}", identity, ending)
