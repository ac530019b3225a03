"""Where the daemon is and how to talk to it: target, token, TLS, channels.

One frozen value, resolved once from arguments and the environment, makes
both the blocking and the asyncio channel, so `Client` and `AsyncClient`
(and the CLI) agree on every setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

__all__ = [
    "DEFAULT_TARGET",
    "ENV_CA_FILE",
    "ENV_CERT_FILE",
    "ENV_KEY_FILE",
    "ENV_TARGET",
    "ENV_TLS",
    "ENV_TOKEN",
    "ENV_TOKEN_FILE",
    "Connection",
]

DEFAULT_TARGET = "127.0.0.1:50051"
ENV_TARGET = "AIVCS_LEDGER_TARGET"
ENV_TOKEN = "AIVCS_LEDGER_TOKEN"
ENV_TOKEN_FILE = "AIVCS_LEDGER_TOKEN_FILE"
ENV_TLS = "AIVCS_LEDGER_TLS"
ENV_CA_FILE = "AIVCS_LEDGER_CA_FILE"
ENV_CERT_FILE = "AIVCS_LEDGER_CERT_FILE"
ENV_KEY_FILE = "AIVCS_LEDGER_KEY_FILE"

# Reconnect quickly after a daemon restart: gRPC's default backoff grows to
# two minutes, which would keep a writer waiting long after the daemon is back.
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
)
_TRUE = {"1", "true", "yes", "on"}


def _path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


def read_token_file(path: str | os.PathLike[str]) -> str:
    """A token from a mounted secret file, without the trailing newline editors add."""
    return Path(path).read_text(encoding="utf-8").strip()


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach one daemon.

    `token` is sent on every call as `authorization: Bearer <token>`.
    `tls` (implied by `ca_file` or `cert_file`) makes a TLS channel, trusting
    `ca_file` or the system roots; `cert_file` and `key_file` are the
    client's certificate for mutual TLS. `timeout` bounds each unary call,
    in seconds.
    """

    target: str = DEFAULT_TARGET
    token: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    timeout: float | None = 30.0
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def resolve(
        cls,
        target: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls: bool | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        timeout: float | None = 30.0,
        options: Sequence[tuple[str, Any]] = (),
        env: Mapping[str, str] | None = None,
    ) -> Connection:
        """Arguments first, then AIVCS_LEDGER_* environment variables, then defaults."""
        env = os.environ if env is None else env
        if token is None and token_file is None:
            token = env.get(ENV_TOKEN) or None
            token_file = env.get(ENV_TOKEN_FILE) or None
        if token is None and token_file is not None:
            token = read_token_file(token_file) or None
        ca_file = ca_file or env.get(ENV_CA_FILE) or None
        cert_file = cert_file or env.get(ENV_CERT_FILE) or None
        key_file = key_file or env.get(ENV_KEY_FILE) or None
        if tls is None:
            tls = env.get(ENV_TLS, "").strip().lower() in _TRUE
        return cls(
            target=target or env.get(ENV_TARGET) or DEFAULT_TARGET,
            token=token,
            tls=tls,
            ca_file=_path(ca_file),
            cert_file=_path(cert_file),
            key_file=_path(key_file),
            timeout=timeout,
            options=tuple(options),
        )

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")
        if not self.tls and (self.ca_file is not None or self.cert_file is not None):
            object.__setattr__(self, "tls", True)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        if not self.token:
            return ()
        return (("authorization", f"Bearer {self.token}"),)

    def _channel_options(self) -> list[tuple[str, Any]]:
        given = {name for name, _ in self.options}
        return [*self.options, *((name, value) for name, value in _CHANNEL_OPTIONS if name not in given)]

    def _credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes() if self.ca_file is not None else None,
            private_key=self.key_file.read_bytes() if self.key_file is not None else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file is not None else None,
        )

    def channel(self) -> grpc.Channel:
        """A blocking channel; it connects lazily, on the first call."""
        if self.tls:
            return grpc.secure_channel(self.target, self._credentials(), options=self._channel_options())
        return grpc.insecure_channel(self.target, options=self._channel_options())

    def aio_channel(self) -> grpc.aio.Channel:
        """An asyncio channel; create it inside the event loop that will use it."""
        if self.tls:
            return grpc.aio.secure_channel(self.target, self._credentials(), options=self._channel_options())
        return grpc.aio.insecure_channel(self.target, options=self._channel_options())
