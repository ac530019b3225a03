"""Certificates for TLS tests: a CA, a server certificate for localhost and 127.0.0.1, client certificates."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Pem:
    cert: bytes
    key: bytes


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def issue(subject: str, issuer: Pem | None, *, ca: bool, server: bool = False) -> Pem:
    """A P-256 certificate valid for a day, signed by `issuer` (self-signed without one).

    `server` adds the names a loopback server is reached by: localhost and 127.0.0.1.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_cert = x509.load_pem_x509_certificate(issuer.cert) if issuer else None
    issuer_key = serialization.load_pem_private_key(issuer.key, None) if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)
    cert = builder.sign(issuer_key, hashes.SHA256())
    return Pem(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


@dataclass
class Pki:
    ca: Pem
    server: Pem
    client: Pem
    stranger: Pem  # a client certificate from another CA
    dir: Path

    def write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        return path


def make_pki(folder: Path) -> Pki:
    """A CA with a server and a client certificate, and a client certificate of another CA; files go in `folder`."""
    ca = issue("test ca", None, ca=True)
    other_ca = issue("other ca", None, ca=True)
    return Pki(
        ca=ca,
        server=issue("localhost", ca, ca=False, server=True),
        client=issue("agent", ca, ca=False),
        stranger=issue("stranger", other_ca, ca=False),
        dir=folder,
    )


def tls_settings(pki: Pki, mutual: bool = False) -> dict[str, Any]:
    """The daemon's TLS settings (`Settings` fields) for the server certificate; `mutual` asks for client ones."""
    settings: dict[str, Any] = {
        "tls_cert": pki.write("server.pem", pki.server.cert),
        "tls_key": pki.write("server.key", pki.server.key),
    }
    if mutual:
        settings["tls_client_ca"] = pki.write("ca.pem", pki.ca.cert)
    return settings


def secure(port: int, pki: Pki, client: Pem | None = None) -> grpc.aio.Channel:
    """A TLS channel of its own to localhost:`port`, trusting the CA, presenting `client` if given."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert,
        private_key=client.key if client else None,
        certificate_chain=client.cert if client else None,
    )
    options = [("grpc.use_local_subchannel_pool", 1)]
    return grpc.aio.secure_channel(f"localhost:{port}", credentials, options=options)
