"""TLS for the gRPC port, and bearer-token authentication with three roles.

Token file (`--auth-token-file`), one token per line, `ROLE TOKEN`:

    # comments and blank lines are ignored
    read-write  3f1c0b6e0d6c4f0e9a1b2c3d4e5f6a7b
    read-only   9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d
    admin       0f1e2d3c4b5a69788796a5b4c3d2e1f0

A caller sends `authorization: Bearer TOKEN` metadata. No token or an
unknown one is UNAUTHENTICATED; a read-only token on a write RPC is
PERMISSION_DENIED, and so is any token but an admin one on an admin RPC
(restoring a dump, which writes history with its original times); an
admin token may call everything. Health and reflection need no token, so probes and
grpcurl-style discovery keep working. Tokens are compared by their SHA-256
digests, and neither tokens nor their digests are ever logged.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc

from aivcs_ledgerd.methods import ADMIN_METHODS, OPEN_SERVICES, WRITE_METHODS
from aivcs_ledgerd.middleware.interceptors import Handler, refuse

log = logging.getLogger(__name__)


class SecurityError(ValueError):
    """A TLS or token setting cannot be used; the message names the flag."""


class Role(enum.Enum):
    READ_ONLY = "read-only"
    READ_WRITE = "read-write"
    ADMIN = "admin"  # read-write, plus the admin RPCs


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials for the gRPC port; with a client CA, every client must present a certificate it signed."""
    try:
        cert = files.cert.read_bytes()
        key = files.key.read_bytes()
        client_ca = files.client_ca.read_bytes() if files.client_ca is not None else None
    except OSError as error:
        raise SecurityError(f"cannot read a TLS file ({error.filename}): {error.strerror}") from error
    if b"-----BEGIN" not in cert:
        raise SecurityError(f"--tls-cert {files.cert} is not a PEM certificate")
    if b"PRIVATE KEY-----" not in key:
        raise SecurityError(f"--tls-key {files.key} is not a PEM private key")
    if client_ca is not None and b"-----BEGIN" not in client_ca:
        raise SecurityError(f"--tls-client-ca {files.client_ca} is not a PEM certificate bundle")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def load_tokens(path: Path) -> dict[bytes, Role]:
    """The token file's tokens (by SHA-256 digest) and their roles; SecurityError names the bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SecurityError(f"cannot read --auth-token-file {path}: {error}") from error
    tokens: dict[bytes, Role] = {}
    roles = ", ".join(role.value for role in Role)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise SecurityError(f"--auth-token-file {path}, line {number}: expected 'ROLE TOKEN' ({roles})")
        try:
            role = Role(fields[0].lower())
        except ValueError:
            raise SecurityError(
                f"--auth-token-file {path}, line {number}: unknown role {fields[0]!r}; use one of {roles}"
            ) from None
        digest = _digest(fields[1])
        if tokens.get(digest, role) is not role:
            raise SecurityError(f"--auth-token-file {path}, line {number}: the same token appears with two roles")
        tokens[digest] = role
    if not tokens:
        raise SecurityError(f"--auth-token-file {path} holds no token; every call would be refused")
    return tokens


def role_of(tokens: dict[bytes, Role], token: str) -> Role | None:
    """The role `token` has in `tokens` (from load_tokens), or None if it is not one of them."""
    return tokens.get(_digest(token))


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer ...` header, if there is one."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Bearer-token check and role enforcement, before any servicer code runs."""

    def __init__(self, tokens: dict[bytes, Role]) -> None:
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        path = handler_call_details.method
        if handler is None or path.lstrip("/").rpartition("/")[0] in OPEN_SERVICES:
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is None:
            return refuse(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "this daemon requires a bearer token: send 'authorization: Bearer <token>' metadata",
            )
        role = self._tokens.get(_digest(token))
        if role is None:
            return refuse(handler, grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid")
        if role is Role.READ_ONLY and path in WRITE_METHODS:
            return refuse(
                handler, grpc.StatusCode.PERMISSION_DENIED, f"a read-only token may not call {path.rpartition('/')[2]}"
            )
        if role is not Role.ADMIN and path in ADMIN_METHODS:
            return refuse(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{path.rpartition('/')[2]} needs an admin token; this one is {role.value}",
            )
        return handler
