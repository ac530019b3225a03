"""The client and the CLI against a daemon that speaks only TLS, wants client certificates and tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aivcs.ledger import Client, RunStatus, Unauthenticated, Unavailable

from harness.daemon import free_port, start_daemon
from harness.data import digest, unique
from harness.pki import make_pki
from tests.client.conftest import cli

TOKEN = "client-test-token"


@dataclass
class Pem:
    cert: Path
    key: Path


@dataclass
class SecureDaemon:
    target: str
    ca: Pem
    client: Pem


@pytest.fixture(scope="module")
def secure_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureDaemon]:
    folder = tmp_path_factory.mktemp("tls")
    pki = make_pki(folder)
    ca = Pem(pki.write("ca.pem", pki.ca.cert), pki.write("ca.key", pki.ca.key))
    server = Pem(pki.write("server.pem", pki.server.cert), pki.write("server.key", pki.server.key))
    agent = Pem(pki.write("agent.pem", pki.client.cert), pki.write("agent.key", pki.client.key))
    tokens = folder / "tokens"
    tokens.write_text(f"read-write {TOKEN}\n")
    health = free_port()  # the gRPC port speaks only TLS: readiness is asked on the plaintext health port
    daemon = start_daemon(
        folder,
        extra=[
            "--tls-cert",
            str(server.cert),
            "--tls-key",
            str(server.key),
            "--tls-client-ca",
            str(ca.cert),
            "--auth-token-file",
            str(tokens),
            "--health-listen",
            f"127.0.0.1:{health}",
        ],
        health_port=health,
    )
    try:
        yield SecureDaemon(daemon.target, ca, agent)
    finally:
        daemon.stop()


def test_library_over_mutual_tls_with_a_token(secure_daemon: SecureDaemon) -> None:
    d = secure_daemon
    with Client(d.target, ca_file=d.ca.cert, cert_file=d.client.cert, key_file=d.client.key, token=TOKEN) as client:
        with client.start_run(spec_digest=digest(), agent_name=unique("tls")) as run:
            for index in range(50):
                run.emit("step", {"index": index})
        assert client.runs.get(run.run_id).status is RunStatus.COMPLETED
        assert [e.seq for e in client.events.read(run.run_id)] == list(range(1, 51))
    with (
        Client(d.target, ca_file=d.ca.cert, cert_file=d.client.cert, key_file=d.client.key) as client,
        pytest.raises(Unauthenticated),
    ):
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
