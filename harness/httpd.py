"""The real daemon with its HTTP side on, a small JSON client for it (stdlib only), and gRPC to write what it shows."""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import grpc
from aivcs.ledger.v1 import (
    event_pb2,
    event_stream_pb2,
    event_stream_pb2_grpc,
    release_registry_pb2_grpc,
    run_ledger_pb2,
    run_ledger_pb2_grpc,
)
from google.protobuf import struct_pb2

from harness.daemon import DaemonProcess, start_daemon

HTTP_LINE = re.compile(r"HTTP API and console on (https?)://[^ ]*:(\d+)/")
SPEC_A = "a" * 64
SPEC_B = "b" * 64
SPEC_C = "c" * 64


@dataclass
class HttpDaemon:
    daemon: DaemonProcess
    base: str  # e.g. http://127.0.0.1:PORT

    @property
    def port(self) -> int:
        return int(self.base.rpartition(":")[2])


def start_http_daemon(tmp: Path, extra: Sequence[str] = (), db: str = "mem://") -> HttpDaemon:
    """A daemon (mem:// unless `db` says otherwise) with --http-listen on a free loopback port, once both answer."""
    daemon = start_daemon(tmp, db=db, extra=["--http-listen", "127.0.0.1:0", *extra], timeout=60)
    match = HTTP_LINE.search(daemon.log())
    assert match, daemon.log()
    return HttpDaemon(daemon, f"{match.group(1)}://127.0.0.1:{match.group(2)}")


@dataclass
class Answer:
    status: int
    headers: Message
    body: Any


def call(
    base: str,
    path: str,
    *,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    context: ssl.SSLContext | None = None,
) -> Answer:
    """One HTTP call; a JSON body is sent as application/json unless `headers` says otherwise."""
    sent = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(base + path, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            text = response.read()
            status, got = response.status, response.headers
    except urllib.error.HTTPError as error:
        text, status, got = error.read(), error.code, error.headers
    kind = got.get("Content-Type", "")
    return Answer(status, got, json.loads(text) if kind.startswith("application/json") else text)


class Stubs:
    """The three services' blocking stubs on one channel: how the HTTP tests write what they read back."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
        self.events = event_stream_pb2_grpc.EventStreamStub(channel)
        self.releases = release_registry_pb2_grpc.ReleaseRegistryStub(channel)


def create(stubs: Stubs, agent: str, spec: str = SPEC_A, git_sha: str | None = None) -> str:
    request = run_ledger_pb2.CreateRunRequest(spec_digest=spec, agent_name=agent)
    if git_sha is not None:
        request.git_sha = git_sha
    return stubs.runs.CreateRun(request, timeout=10).run.run_id


def append(stubs: Stubs, run_id: str, *items: tuple[str, dict[str, Any]]) -> None:
    inputs = []
    for kind, payload in items:
        value = struct_pb2.Struct()
        value.update(payload)
        inputs.append(event_pb2.EventInput(kind=kind, payload=value))
    stubs.events.AppendEvents(event_stream_pb2.AppendEventsRequest(run_id=run_id, events=inputs), timeout=10)
