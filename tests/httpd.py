"""The real daemon with its HTTP side on, and a small JSON client for it (stdlib only)."""

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

from tests.daemon import DaemonProcess, start_daemon

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
