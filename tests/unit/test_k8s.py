"""The Kubernetes manifests (compose/k8s/) agree with the code the way the compose files do: settings,
port, probes, graceful termination longer than the node's bounded stop, a disruption budget."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import yaml

from node.settings import Settings
from node.web.app import Stop
from node.web.auth import PROBES
from tests.unit.test_compose import SETTINGS_VARS

K8S = Path(__file__).resolve().parents[2] / "compose" / "k8s" / "cronring.yaml"


def _docs() -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(K8S.read_text()) if d}


def test_the_objects_and_their_selectors() -> None:
    docs = _docs()
    assert set(docs) == {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"}
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for kind in ("Deployment", "PodDisruptionBudget"):
        assert docs[kind]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert docs["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 1


def test_settings_port_probes_and_termination_agree_with_the_node() -> None:
    docs = _docs()
    config, secret = docs["ConfigMap"]["data"], docs["Secret"]["stringData"]
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env_names = set(config) | set(secret) | {e["name"] for e in c["env"]} - {"POD_IP"}
    assert env_names <= SETTINGS_VARS, env_names - SETTINGS_VARS
    assert not set(config) & set(secret)
    assert {"CRONRING_REDIS_URL", "CRONRING_DATABASE_URL", "CRONRING_SIGNING_SECRET"} <= set(secret)  # never in a ConfigMap
    Settings.load([], {**config, **secret})  # the node accepts this configuration as it stands
    port = int(config["CRONRING_PORT"])
    assert c["ports"] == [{"name": "http", "containerPort": port}]
    assert c["command"] == ["cronring", "node"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/livez", "/readyz"} <= set(PROBES)  # probes send no token
    node_id = next(e for e in c["env"] if e["name"] == "CRONRING_NODE_ID")
    assert node_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # one id per pod
    # the kubelet's SIGKILL comes after the node's own bounded stop (node.web.app.Stop.budget)
    budget = Stop(SimpleNamespace(settings=SimpleNamespace(shutdown_grace=float(config["CRONRING_SHUTDOWN_GRACE"]))))
    assert pod["terminationGracePeriodSeconds"] > budget.budget
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "http"
