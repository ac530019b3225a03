"""The client and the CLI against a daemon that speaks only TLS, wants client certificates and tokens."""

from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aivcs.ledger import Client, RunStatus, Unauthenticated, Unavailable
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.client.conftest import cli, digest, unique
from tests.daemon import PORT_LINE, free_port

TOKEN = "client-test-token"


@dataclass
class Pem:
    cert: Path
    key: Path


def issue(folder: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
          *, server: bool = False) -> tuple[Pem, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    pem = Pem(folder / f"{name}.pem", folder / f"{name}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pem, cert, key


@dataclass
class SecureDaemon:
    target: str
    ca: Pem
    client: Pem


@pytest.fixture(scope="module")
def secure_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureDaemon]:
    folder = tmp_path_factory.mktemp("tls")
    ca, ca_cert, ca_key = issue(folder, "ca", None)
    server, _, _ = issue(folder, "server", (ca_cert, ca_key), server=True)
    agent, _, _ = issue(folder, "agent", (ca_cert, ca_key))
    tokens = folder / "tokens"
    tokens.write_text(f"read-write {TOKEN}\n")
    port = free_port()
    log_path = folder / "daemon.log"
    args = [sys.executable, "-m", "aivcs_ledgerd", "--listen", f"127.0.0.1:{port}", "--db", "mem://",
            "--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-client-ca", str(ca.cert),
            "--auth-token-file", str(tokens)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    try:
        deadline = time.monotonic() + 30
        while not PORT_LINE.search(log_path.read_bytes()):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        yield SecureDaemon(f"127.0.0.1:{port}", ca, agent)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_library_over_mutual_tls_with_a_token(secure_daemon: SecureDaemon) -> None:
    d = secure_daemon
    with Client(d.target, ca_file=d.ca.cert, cert_file=d.client.cert, key_file=d.client.key, token=TOKEN) as client:
        with client.start_run(spec_digest=digest(), agent_name=unique("tls")) as run:
            for index in range(50):
                run.emit("step", {"index": index})
        assert client.runs.get(run.run_id).status is RunStatus.COMPLETED
        assert [e.seq for e in client.events.read(run.run_id)] == list(range(1, 51))
    with Client(d.target, ca_file=d.ca.cert, cert_file=d.client.cert, key_file=d.client.key) as client, \
            pytest.raises(Unauthenticated):
        client.runs.get(run.run_id)
    with Client(d.target, token=TOKEN, timeout=5) as client, pytest.raises(Unavailable):
        client.runs.get(run.run_id)  # plaintext to a TLS port


def test_cli_over_mutual_tls_with_a_token(secure_daemon: SecureDaemon) -> None:
    d = secure_daemon
    with Client(d.target, ca_file=d.ca.cert, cert_file=d.client.cert, key_file=d.client.key, token=TOKEN) as client:
        run = client.runs.create(digest(), unique("tls-cli"))
    tls = ["--ca-file", str(d.ca.cert), "--cert-file", str(d.client.cert), "--key-file", str(d.client.key)]
    shown = cli("runs", "show", run.run_id, "--json", *tls, target=d.target, env={"AIVCS_LEDGER_TOKEN": TOKEN})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run_id"] == run.run_id
    refused = cli("runs", "show", run.run_id, *tls, target=d.target)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr and "Traceback" not in refused.stderr
    half = cli("runs", "list", "--cert-file", str(d.client.cert), target=d.target)
    assert half.returncode == 2 and "--key-file" in half.stderr
