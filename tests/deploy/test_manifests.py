"""deploy/k8s: every manifest valid against the Kubernetes schemas (kubernetes-validate --strict),
the base renders with ``kubectl kustomize``, and what the broker relies on is in the render."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokenbroker.config import parse_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
# Kinds with no schema in kubernetes-validate (custom resources, kustomize's own files).
_NOT_KUBERNETES_KINDS = {"Kustomization", "Component", "ServiceMonitor"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> list[Path]:
    return sorted(
        path
        for path in K8S.rglob("*.yaml")
        if all(doc["kind"] not in _NOT_KUBERNETES_KINDS for doc in _documents(path))
    )


def _kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _render_base(tmp_path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is missing: apt-get install -y kubernetes-client (make deploy-tools)")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    (tmp_path / "rendered.yaml").write_text(rendered)
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def _of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents if doc["kind"] == kind]
    return found


def test_the_manifests_are_found() -> None:
    names = {path.name for path in _manifests()}
    assert {"deployment.yaml", "service.yaml", "db-upgrade-job.yaml"} <= names


@pytest.mark.parametrize("manifest", _manifests(), ids=lambda path: str(path.relative_to(K8S)))
def test_a_manifest_is_valid_kubernetes_strictly(manifest: Path) -> None:
    result = _kubernetes_validate(manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout + result.stderr


def test_the_rendered_base_is_valid_kubernetes_strictly(tmp_path: Path) -> None:
    documents = _render_base(tmp_path)
    assert {doc["kind"] for doc in documents} == {
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Job",
    }
    result = _kubernetes_validate(tmp_path / "rendered.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_configmap_holds_the_deploy_config_and_it_is_valid(tmp_path: Path) -> None:
    configmap = _of_kind(_render_base(tmp_path), "ConfigMap")
    text = configmap["data"]["config.toml"]
    assert text == (BASE / "tokenbroker.toml").read_text()
    settings = parse_settings(
        tomllib.loads(text),
        {
            "TOKENBROKER_STORE__URL": "postgresql+asyncpg://broker@db:5432/tokenbroker",
            "TOKENBROKER_STORE__ENCRYPTION_KEY": "a key from a Secret",
        },
    )
    assert settings.server.host == "0.0.0.0"  # noqa: S104 - a pod listens on its own address
    assert settings.server.worker_count() >= 2


def test_the_pod_is_locked_down_and_outlives_its_drain(tmp_path: Path) -> None:
    documents = _render_base(tmp_path)
    settings = tomllib.loads((BASE / "tokenbroker.toml").read_text())
    pod = _of_kind(documents, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"requests", "limits"} <= set(container["resources"])
    assert pod["topologySpreadConstraints"]
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    pre_stop_seconds = float(pre_stop.rsplit("sleep(", 1)[1].rstrip(")"))
    grace = settings["server"]["shutdown_grace_seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop_seconds + grace
    secrets = {
        env["name"]: env["valueFrom"]["secretKeyRef"]["key"]
        for env in container["env"]
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert secrets == {
        "TOKENBROKER_STORE__URL": "store-url",
        "TOKENBROKER_STORE__ENCRYPTION_KEY": "encryption-key",
        "TOKENBROKER_ADMIN__TOKENS": "admin-tokens",
        "TOKENBROKER_RATE_LIMIT__REDIS_URL": "redis-url",
    }


def test_the_job_upgrades_the_database_and_the_policy_admits_the_broker_port(
    tmp_path: Path,
) -> None:
    documents = _render_base(tmp_path)
    job = _of_kind(documents, "Job")["spec"]["template"]["spec"]
    assert job["containers"][0]["args"][:2] == ["db", "upgrade"]
    policy = _of_kind(documents, "NetworkPolicy")["spec"]
    assert [port["port"] for rule in policy["ingress"] for port in rule["ports"]] == [8400]
    egress_ports = {port["port"] for rule in policy["egress"] for port in rule["ports"]}
    assert {53, 5432, 6379, 443} <= egress_ports


def test_the_optional_servicemonitor_scrapes_the_service_metrics_port() -> None:
    # No schema for the Prometheus Operator's kind offline: checked against the Service instead.
    (monitor,) = _documents(K8S / "components" / "servicemonitor" / "servicemonitor.yaml")
    (service,) = _documents(BASE / "service.yaml")
    (deployment,) = _documents(BASE / "deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= {
            **labels,
            **service["metadata"]["labels"],
        }.items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
