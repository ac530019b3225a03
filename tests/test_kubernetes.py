"""The Kubernetes manifests: one folder per deployment mode, probes on the health service, no committed secret."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from aivcs_ledgerd.methods import LEDGER_SERVICES
from aivcs_ledgerd.process.operations import LIVENESS

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
# Each folder is applied on its own (`kubectl apply -f deploy/kubernetes/<mode>/`) and holds one workload.
MODES = {"embedded": "StatefulSet", "remote": "Deployment"}


def manifests(mode: str) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted((KUBERNETES / mode).glob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def workload(documents: list[dict[str, Any]]) -> dict[str, Any]:
    [found] = [doc for doc in documents if doc["kind"] in MODES.values()]
    return found


def pod_labels(documents: list[dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = workload(documents)["spec"]["template"]["metadata"]["labels"]
    return labels


def test_each_mode_has_its_own_folder_and_the_parent_deploys_nothing() -> None:
    assert sorted(path.name for path in KUBERNETES.iterdir() if path.is_dir()) == sorted(MODES)
    assert not list(KUBERNETES.glob("*.y*ml")), "`kubectl apply -f deploy/kubernetes/` must not deploy both modes"
    for mode, kind in MODES.items():
        kinds = [doc["kind"] for doc in manifests(mode)]
        assert kinds.count(kind) == 1, mode
        assert not set(kinds) & (set(MODES.values()) - {kind}), f"{mode} holds another mode's workload"
    # A Service of one mode must not route to the other mode's pods.
    for mode in MODES:
        for other in set(MODES) - {mode}:
            for service in (doc for doc in manifests(mode) if doc["kind"] == "Service"):
                assert service["spec"]["selector"].items() <= pod_labels(manifests(mode)).items()
                assert not service["spec"]["selector"].items() <= pod_labels(manifests(other)).items()


def test_no_secret_is_committed_and_the_readme_says_how_to_create_each() -> None:
    readme = (ROOT / "README.md").read_text()
    created = set(re.findall(r"kubectl create secret generic ([a-z0-9-]+)", readme))
    for mode in MODES:
        documents = manifests(mode)
        assert "Secret" not in {doc["kind"] for doc in documents}, mode
        for path in (KUBERNETES / mode).glob("*.yaml"):
            assert "CHANGE-ME" not in path.read_text(), path
        pod = workload(documents)["spec"]["template"]["spec"]
        secrets = {volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume}
        assert secrets, f"{mode}: the tokens come from a Secret mounted as files"
        assert secrets <= created, f"{mode}: the README must show a command creating {sorted(secrets - created)}"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_manifests_probe_the_grpc_health_service(mode: str) -> None:
    documents = manifests(mode)
    found = workload(documents)
    spec = found["spec"]
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    [container] = [c for c in pod["containers"] if c["name"] == "ledgerd"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == 50051
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        grpc_probe = container[probe]["grpc"]
        assert grpc_probe["port"] == ports["grpc"], probe
        assert grpc_probe.get("service", "") in ("", LIVENESS, *LEDGER_SERVICES), probe
    # Readiness follows the database; liveness does not, so an outage restarts nothing.
    assert container["readinessProbe"]["grpc"].get("service", "") == ""
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS
    assert container["resources"]["requests"] and container["resources"]["limits"]
    args = container["args"]
    assert "--listen" in args and args[args.index("--listen") + 1].endswith(":50051")
    if found["kind"] == "Deployment":
        assert spec["replicas"] >= 2
        assert args[args.index("--db") + 1].startswith(("ws://", "wss://"))
        env = {e["name"]: e for e in container["env"]}
        assert env["AIVCS_LEDGER_DB_USER_FILE"]["value"].startswith("/var/run/secrets/")
        assert env["AIVCS_LEDGER_DB_PASSWORD_FILE"]["value"].startswith("/var/run/secrets/")
        pdbs = [doc for doc in documents if doc["kind"] == "PodDisruptionBudget"]
        assert any(pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels(documents).items() for pdb in pdbs)
    else:
        assert spec["replicas"] == 1
        assert args[args.index("--db") + 1].startswith(("surrealkv://", "file://"))
        assert spec["volumeClaimTemplates"]
