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
    check_every_address_free(address, flag)
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


def check_every_address_free(address: str, flag: str) -> None:
    """Raise PortUnavailable if a process listens on any address HOST:PORT stands for.

    gRPC binds every address a host name stands for and succeeds when one
    of them binds: with 127.0.0.1:50051 taken, `--listen localhost:50051`
    would listen on [::1]:50051 alone, and clients of localhost would reach
    the second daemon. So each address is tried first, the way gRPC binds
    it (SO_REUSEADDR, which lets a port in TIME_WAIT be reused but never a
    listening one); an address this host lacks is left to gRPC to skip.
    """
    host, colon, port = address.rpartition(":")
    if not colon or address.startswith(("unix:", "unix-abstract:")) or not port.isdigit() or int(port) == 0:
        return
    host = host.strip("[]")
    # gRPC core binds "localhost" as both loopbacks, whatever the resolver says.
    candidates = [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")] if host == "localhost" else None
    if candidates is None:
        try:
            infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror:
            return  # gRPC reports a name it cannot resolve
        candidates = [(family, str(info[0])) for family, _, _, _, info in infos]
    for family, ip in candidates:
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 here, say
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and ip == "::":
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # gRPC's [::] takes IPv4 too
            try:
                probe.bind((ip, int(port)))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise bind_error(flag, address, error) from error


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
