"""deploy/compose.yaml and deploy/haproxy.cfg: the brokers run the Kubernetes base's TOML (one
config, not two), HAProxy balances every broker on readiness, and its config is valid."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def _brokers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if name.startswith("broker-")}


def test_compose_runs_two_brokers_with_the_kubernetes_config_read_only() -> None:
    compose = _compose()
    brokers = _brokers(compose)
    assert len(brokers) == 2
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "base" / "kustomization.yaml").read_text())
    (generated,) = kustomization["configMapGenerator"][0]["files"]
    config_file = generated.split("=")[1]
    for service in [*brokers.values(), compose["services"]["db-upgrade"]]:
        assert f"./k8s/base/{config_file}:/etc/tokenbroker/config.toml:ro" in service["volumes"]
        assert service["read_only"] is True
        assert service["user"].startswith("10001")
    assert {"postgres", "redis", "openbao", "haproxy"} <= set(compose["services"])


def test_haproxy_balances_every_compose_broker_on_readiness(tmp_path: Path) -> None:
    config = (DEPLOY / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s*server (\S+) (\S+):8400$", config, re.M)
    assert {name for name, _ in servers} == set(_brokers(_compose()))
    assert "option httpchk GET /readyz" in config
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.fail("haproxy is missing: apt-get install -y haproxy (make deploy-tools)")
    # The compose service names resolve only inside compose: checked with loopback in place.
    local = tmp_path / "haproxy.cfg"
    local.write_text(re.sub(r" (broker-\d+):8400$", r" 127.0.0.1:8400", config, flags=re.M))
    result = subprocess.run(
        [haproxy, "-c", "-f", str(local)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
