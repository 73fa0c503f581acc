"""README.md's shell blocks, run as a reader would run them: against ``tokenbroker dev``
(OpenBao dev, moto, the dev issuer), with the real ``bao`` and ``aws`` (v1) CLIs.

Every ``sh``/``ini`` block is either run here (its placeholders swapped for the dev stack's
values), exercised by the named test elsewhere, or starts with ``# needs a real cloud``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.devstack import run_command, tokenbroker
from tests.support.openbao import OpenBaoDevServer
from tokenbroker.devstack.platform_issuer import DevPlatformIssuer
from tokenbroker.devstack.seeds import DEMO_ORG_ID as ENV0_ORG_ID
from tokenbroker.devstack.seeds import PROJECT_ID, SEEDS
from tokenbroker.devstack.stack import DevStackState

REPO = Path(__file__).resolve().parents[1]
CLOUD_MARK = "# needs a real cloud"
# first line of a block -> the test that runs it
EXERCISED_BY = {
    "make demo   # the whole flow": "tests/devstack/test_demo.py::"
    "test_the_demo_exchanges_and_uses_every_credential_then_exits_zero",
    "if out=": "test_the_curl_block_appends_a_credential_and_nothing_on_denial",
    "tokenbroker serve --config": "test_the_serve_block_serves_the_example_config",
    "tokenbroker exchange --broker": "test_the_runner_client_block_appends_to_env0_env",
    "[profile deploy]": "test_the_credential_process_profile_serves_boto3_and_the_aws_cli",
    "tokenbroker dev  ": "tests/cli/test_dev.py::"
    "test_sigterm_stops_every_part_and_removes_the_state_file",
    "tokenbroker admin --dev-stack": "test_the_admin_block_lists_the_dev_stack",
    'export ENV0_OIDC_TOKEN="$(': "test_the_local_stack_runner_block_runs_as_printed",
    "vault auth enable -path=jwt jwt": "test_the_vault_block_configures_openbao_with_bao",
    "# AWS CLI v1 fetches": "test_the_aws_iam_block_runs_with_the_aws_cli_v1_against_moto",
    "tokenbroker exchange --credential prod-vault --format shell": "tests/cli/"
    "test_exchange_watch.py::test_watch_keeps_the_file_valid_rereads_the_token_file_and_revokes_at_sigterm",
}


@dataclass(frozen=True)
class Block:
    """A fenced block of README.md."""

    language: str
    text: str

    @property
    def first_line(self) -> str:
        """Its first line."""
        return self.text.splitlines()[0]


def readme_blocks() -> list[Block]:
    """Every fenced block of README.md, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return [Block(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)]


def block(first_line: str) -> str:
    """The one shell block starting with ``first_line``."""
    (found,) = [b.text for b in readme_blocks() if b.first_line.startswith(first_line)]
    return found


def bash(script: str, **env: str) -> tuple[int, str, str]:
    run = run_command(["bash", "-euo", "pipefail", "-c", script], env=env)
    return run.returncode, run.stdout, run.stderr


def env0_token(state: DevStackState, **claims: object) -> str:
    issuer = DevPlatformIssuer(Path(state.keys_dir), state.issuer_base_url)
    return issuer.mint("env0", org=ENV0_ORG_ID, project=PROJECT_ID, claims=claims or None)


def audited_successes(state: DevStackState, credential: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - the dev stack's loopback URL
        f"{state.broker_url}/v1/admin/audit?credential={credential}&outcome=success&limit=500",
        headers={"Authorization": f"Bearer {state.admin_token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return len(json.loads(response.read())["events"])


# --- the inventory ------------------------------------------------------------------------------


def test_every_shell_block_is_run_by_a_test_or_marked_as_needing_a_real_cloud() -> None:
    here = (REPO / "tests" / "test_readme.py").read_text(encoding="utf-8")
    for found in readme_blocks():
        if found.language not in ("sh", "ini"):
            continue
        if found.first_line.startswith(CLOUD_MARK):
            continue
        keys = [key for key in EXERCISED_BY if found.first_line.startswith(key)]
        assert len(keys) == 1, f"README block {found.first_line!r} is neither tested nor marked"
        test = EXERCISED_BY[keys[0]]
        path, _, name = test.rpartition("::")
        source = (REPO / path).read_text(encoding="utf-8") if path else here
        assert f"def {name}(" in source, test


# --- the blocks, run ----------------------------------------------------------------------------


def test_the_curl_block_appends_a_credential_and_nothing_on_denial(
    running_dev_stack: DevStackState, tmp_path: Path
) -> None:
    script = block("if out=")
    env_file = tmp_path / "env0.env"
    env = {
        "BROKER": running_dev_stack.broker_url,
        "ENV0_OIDC_TOKEN": env0_token(running_dev_stack),
        "ENV0_ENV": str(env_file),
    }
    code, _, _ = bash(script.replace('"prod-vault"', '"dev-vault"'), **env)
    assert code == 0
    assert "VAULT_TOKEN=" in env_file.read_text()
    env_file.write_text("")
    code, _, stderr = bash(script, **env)  # prod-vault: bound to another environment
    assert code == 1
    assert json.loads(stderr.splitlines()[-1])["error"] == "access_denied"
    assert env_file.read_text() == ""


def test_the_serve_block_serves_the_example_config(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "config.example.toml").write_bytes((REPO / "config.example.toml").read_bytes())
    command = block("tokenbroker serve --config").split()
    assert command[:3] == ["tokenbroker", "serve", "--config"]
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenbroker", *command[1:]],
        cwd=tmp_path,
        env={**os.environ, "TOKENBROKER_SERVER__PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and status is None and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    status = r.status
            except OSError:
                time.sleep(0.2)  # polling a starting process, not papering over a race
        assert status == 200
        # The example trusts the platforms' real issuers, which this machine cannot reach:
        # the broker serves, and its readiness names exactly those issuers' keys as missing.
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10)
        checks = json.loads(caught.value.read())["checks"]
        failing = {name for name, result in checks.items() if result != "ok"}
        assert failing, checks
        assert all(name.startswith("jwks:") for name in failing), checks
        assert checks["store"] == checks["keys"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_runner_client_block_appends_to_env0_env(
    running_dev_stack: DevStackState, tmp_path: Path
) -> None:
    script = block("tokenbroker exchange --broker")
    script = script.replace("https://broker.example.com", running_dev_stack.broker_url)
    env_file = tmp_path / "env0.env"
    env_file.write_text("")
    code, _, stderr = bash(
        script.replace("prod-vault", "dev-vault"),
        ENV0_OIDC_TOKEN=env0_token(running_dev_stack),
        ENV0_ENV=str(env_file),
    )
    assert code == 0, stderr
    assert "VAULT_TOKEN=" in env_file.read_text()


def test_the_credential_process_profile_serves_boto3_and_the_aws_cli(
    running_dev_stack: DevStackState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    config = tmp_path / "aws-config"
    config.write_text(block("[profile deploy]").replace("prod-aws", "dev-aws"))
    env = {
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_ENDPOINT_URL": running_dev_stack.moto_url,
        "TOKENBROKER_URL": running_dev_stack.broker_url,
        "ENV0_OIDC_TOKEN": env0_token(running_dev_stack),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    # botocore runs credential_process through PATH, as a shell would.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    before = audited_successes(running_dev_stack, "dev-aws")
    sts = boto3.Session(profile_name="deploy").client("sts")
    arns = {sts.get_caller_identity()["Arn"] for _ in range(3)}
    assert len(arns) == 1
    assert ":assumed-role/env0-deployer/" in arns.pop()
    # One exchange for three calls: an hour-long credential is outside botocore's window.
    assert audited_successes(running_dev_stack, "dev-aws") == before + 1
    code, stdout, stderr = bash("aws --profile deploy sts get-caller-identity", **env)
    assert code == 0, stderr
    assert ":assumed-role/env0-deployer/" in json.loads(stdout)["Arn"]


def test_the_admin_block_lists_the_dev_stack(running_dev_stack: DevStackState) -> None:
    script = block("tokenbroker admin --dev-stack").replace(
        ".tokenbroker/dev", running_dev_stack.data_dir
    )
    code, stdout, stderr = bash(script, TOKENBROKER_ADMIN_TOKEN="")
    assert code == 0, stderr
    for seed in SEEDS:
        assert seed.platform_org_id in stdout
    (circleci,) = [seed for seed in SEEDS if seed.profile == "circleci"]
    assert circleci.project in stdout


def test_the_local_stack_runner_block_runs_as_printed(running_dev_stack: DevStackState) -> None:
    state = running_dev_stack
    script = (
        block('export ENV0_OIDC_TOKEN="$(')
        .replace("<org>", state.org_id)
        .replace("<project>", state.project_id)
        .replace(".tokenbroker/dev/dev-issuer", state.keys_dir)
        .replace("http://127.0.0.1:8401", state.issuer_base_url)
        .replace("http://127.0.0.1:8400", state.broker_url)
    )
    code, stdout, stderr = bash(
        script + '\necho "VAULT=${VAULT_TOKEN:+set} AWS=${AWS_SESSION_TOKEN:+set}"'
    )
    assert code == 0, stderr
    assert "VAULT=set AWS=set" in stdout
    assert "bound_claims" in stdout  # the dry run of prod-vault explains its denial


def test_the_vault_block_configures_openbao_with_bao(running_dev_stack: DevStackState) -> None:
    state = running_dev_stack
    env0_issuer = DevPlatformIssuer(Path(state.keys_dir), state.issuer_base_url).issuer_url("env0")
    script = (
        block("vault auth enable -path=jwt jwt")
        .replace("vault ", "bao ")
        .replace("https://login.app.env0.com/", env0_issuer)
        .replace("https://broker.example.com", state.broker_url)
        .replace("<env0 org id>", ENV0_ORG_ID)
        .replace("<platform org id>", ENV0_ORG_ID)
        .replace("<project id>", PROJECT_ID)
        # dev-oidc's minted token stands for a mint credential of audience "vault"
        .replace('"bound_audiences": ["vault"]', '"bound_audiences": ["dev-audience"]')
        .replace('"/tokenbroker/credential": "prod-vault"', '"/tokenbroker/credential": "dev-oidc"')
    )
    run = tokenbroker(
        "exchange", "--broker", state.broker_url, "--credential", "dev-oidc", "--format", "json",
        "-q", env={"ENV0_OIDC_TOKEN": env0_token(state)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    minted = json.loads(run.stdout)["values"]["OIDC_TOKEN"]
    with OpenBaoDevServer() as bao:
        env = {"BAO_ADDR": bao.address, "BAO_TOKEN": bao.root_token}
        code, _, stderr = bash(script, **env)
        assert code == 0, stderr
        code, stdout, stderr = bash("bao read -format=json auth/jwt/role/env0-deployer", **env)
        assert code == 0, stderr
        bound = json.loads(stdout)["data"]["bound_claims"]
        assert bound == {"organizationId": ENV0_ORG_ID, "apiKeyType": "oidc"}
        for path, jwt in (("jwt", env0_token(state)), ("broker", minted)):
            code, stdout, stderr = bash(
                f'bao write -format=json auth/{path}/login role=env0-deployer jwt="$JWT"',
                JWT=jwt,
                **env,
            )
            assert code == 0, (path, stderr)
            assert "env0-access" in json.loads(stdout)["auth"]["policies"]


def test_the_aws_iam_block_runs_with_the_aws_cli_v1_against_moto(
    running_dev_stack: DevStackState, tmp_path: Path
) -> None:
    env = {
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_ENDPOINT_URL": running_dev_stack.moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    code, _, stderr = bash(block("# AWS CLI v1 fetches"), **env)
    assert code == 0, stderr
    code, stdout, stderr = bash("aws iam list-open-id-connect-providers", **env)
    assert code == 0, stderr
    arns = [p["Arn"] for p in json.loads(stdout)["OpenIDConnectProviderList"]]
    assert any(arn.endswith("oidc-provider/login.app.env0.com/") for arn in arns), arns
    assert any(arn.endswith("oidc-provider/broker.example.com") for arn in arns), arns
