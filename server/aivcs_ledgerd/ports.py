"""Every port the daemon listens on is its own: a second daemon on a taken port does not start.

gRPC core turns SO_REUSEPORT on for the ports it binds. On Linux a second
process then binds the same HOST:PORT without error and the kernel shares
the incoming connections between the two: a second `aivcs-ledgerd` (say an
in-memory one started by mistake) would answer part of the calls, and the
writes it accepts are lost when it exits. So every gRPC server of the
daemon is built with `SERVER_OPTIONS` (which turns it off), its ports are
added through `add_grpc_port`, and an HTTP server (metrics, or any later
HTTP port) checks its bound socket with `check_exclusive`. A port that
cannot be had stops the daemon at start with `PortUnavailable`, whose
message names the flag and the address.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import grpc

# Options every grpc.aio.server of the daemon must carry (main port, health port, any later one).
SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (("grpc.so_reuseport", 0),)


class PortUnavailable(ValueError):
    """A listening address cannot be had for this daemon alone; the message names the flag and the address."""

    def __init__(self, flag: str, address: str, why: str) -> None:
        super().__init__(f"cannot listen on {flag} {address}: {why}")
        self.flag = flag
        self.address = address


def server_options(*options: tuple[str, Any]) -> list[tuple[str, Any]]:
    """`options` plus SERVER_OPTIONS, for grpc.aio.server(options=...)."""
    return [*options, *SERVER_OPTIONS]


def add_grpc_port(
    server: grpc.aio.Server, address: str, flag: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """Bind `address` on `server` (built with server_options) and return the port; PortUnavailable if taken."""
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        # gRPC says only "Failed to bind"; in use is by far the likeliest cause, a foreign address the other.
        raise PortUnavailable(
            flag,
            address,
            "the address is in use (another aivcs-ledgerd or other process "
            "listens there) or is not an address of this host",
        )
    return port


def check_exclusive(sock: socket.socket, flag: str, address: str) -> None:
    """Raise PortUnavailable if the bound socket `sock` lets another process share its port (SO_REUSEPORT)."""
    reuse_port = getattr(socket, "SO_REUSEPORT", None)
    if reuse_port is not None and sock.getsockopt(socket.SOL_SOCKET, reuse_port):
        raise PortUnavailable(flag, address, "the server shares its port with other processes (SO_REUSEPORT)")


def bind_error(flag: str, address: str, error: OSError) -> PortUnavailable:
    """PortUnavailable for an HTTP server whose bind failed with `error`."""
    why = error.strerror or str(error)
    if error.errno == errno.EADDRINUSE:
        why = "the address is in use (another aivcs-ledgerd or other process listens there)"
    return PortUnavailable(flag, address, why)
