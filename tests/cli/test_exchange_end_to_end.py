"""The runner's client against the real broker: botocore's credential_process, OpenBao, moto.

The broker serves on the test's loop; the CLI (in-process, in a worker thread) and botocore
(which runs ``python -m tokenbroker exchange`` as a subprocess, synchronously) run off it, as
does the CLI in a subprocess where the server's packages cannot be imported.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.exceptions
import hvac
import pytest
from bench.procs import free_port
from pytest_aiohttp import AiohttpServer
from tests.client.fakes import clear_client_environment
from tests.client.test_imports import SERVER_MODULES
from tests.support.aws import MotoServer
from tests.support.openbao import (
    OpenBaoDevServer,
    create_namespace,
    trust_env0_tokens,
)
from tests.support.platform import ServedDevIssuer

from tokenbroker.cli.main import main
from tokenbroker.client.revoke import AWS_NOTE
from tokenbroker.config import parse_settings
from tokenbroker.web.app import create_app

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
PROD_ENV = "9c3ca3cf-870d-4db4-9c60-5adf37faab45"
ROLE = "env0-deployer"
POLICY = "env0-access"
KV = "secrets-for-client"

pytestmark = pytest.mark.openbao

AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CI or AWS variables of the machine running the tests leak into them."""
    clear_client_environment(monkeypatch)
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@dataclass
class Broker:
    """A running broker trusting the dev env0 issuer, with Vault and AWS credentials."""

    url: str
    issuer: ServedDevIssuer
    openbao: OpenBaoDevServer
    moto: MotoServer

    def token(self, **kw: object) -> str:
        return self.issuer.mint("env0", org=ORG, project=PROJECT, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def broker(
    tmp_path: Path,
    dev_issuer: ServedDevIssuer,
    openbao: OpenBaoDevServer,
    moto_server: MotoServer,
    aiohttp_server: AiohttpServer,
) -> Broker:
    auth_path = f"env0-client-{uuid.uuid4().hex[:8]}"
    port = free_port()
    issuer = dev_issuer.issuer_settings("env0")
    role_arn = moto_server.create_role(f"deployer-{uuid.uuid4().hex[:8]}")
    vault = {"address": openbao.address, "role": ROLE, "auth_path": auth_path}
    settings = parse_settings(
        {
            # The backends and issuers of this test listen on loopback.
            "security": {"allow_private_backends": True},
            "server": {
                "data_dir": str(tmp_path),
                "public_url": f"http://127.0.0.1:{port}",
                "port": port,
            },
            "issuers": [issuer.model_dump(mode="json")],
            "organizations": [{"name": "acme", "issuer": issuer.name, "platform_org_id": ORG}],
            "credentials": [
                {"organization": "acme", "name": "prod-vault", "type": "vault_oidc",
                 "settings": vault},
                {"organization": "acme", "name": "prod-only-vault", "type": "vault_oidc",
                 "settings": vault, "bound_claims": {"environmentId": PROD_ENV}},
                {"organization": "acme", "name": "prod-aws", "type": "aws_oidc",
                 "settings": {"role_arn": role_arn, "sts_endpoint": moto_server.url,
                              "region": "us-east-1"}},
                {"organization": "acme", "name": "other-aws", "type": "aws_oidc",
                 "settings": {"role_arn": role_arn, "sts_endpoint": moto_server.url}},
            ],
            "assignments": [
                {"organization": "acme", "project": PROJECT,
                 "credentials": ["prod-vault", "prod-only-vault", "prod-aws"]},
            ],
        },
        {},
    )  # fmt: skip
    await aiohttp_server(create_app(settings), port=port)
    await trust_env0_tokens(
        openbao, dev_issuer, auth_path, role=ROLE, org=ORG, policy=POLICY, kv_mount=KV
    )
    return Broker(f"http://127.0.0.1:{port}", dev_issuer, openbao, moto_server)


async def tokenbroker(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI off the loop; return (exit code, stdout, stderr)."""
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / f"token-{uuid.uuid4().hex[:6]}"
    path.write_text(token)
    return path


def vault_token_is_alive(
    openbao: OpenBaoDevServer, token: str, namespace: str | None = None
) -> bool:
    try:
        openbao.client(token=token, namespace=namespace).auth.token.lookup_self()
    except hvac.exceptions.Forbidden:
        return False
    return True


# --- AWS credential_process through botocore ----------------------------------------------------


def aws_profile(tmp_path: Path, broker: Broker, credential: str, token: str) -> Path:
    """An AWS config whose profile ``runner`` gets credentials from ``tokenbroker exchange``."""
    command = (
        f"{sys.executable} -m tokenbroker exchange --broker {broker.url} "
        f"--credential {credential} --format aws-credential-process "
        f"--token-file {token_file(tmp_path, token)}"
    )
    config = tmp_path / "aws-config"
    config.write_text(f"[profile runner]\ncredential_process = {command}\nregion = us-east-1\n")
    return config


async def test_botocores_credential_process_gets_credentials_that_call_sts(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AWS_CONFIG_FILE", str(aws_profile(tmp_path, broker, "prod-aws", broker.token()))
    )

    def caller_identity() -> tuple[str, str]:
        session = boto3.Session(profile_name="runner")
        credentials = session.get_credentials()
        assert credentials is not None
        sts = session.client("sts", endpoint_url=broker.moto.url)
        return credentials.method, sts.get_caller_identity()["Arn"]

    method, arn = await asyncio.to_thread(caller_identity)
    assert method == "custom-process"
    assert arn.startswith("arn:aws:sts::123456789012:assumed-role/deployer-")


async def test_botocore_reports_the_brokers_refusal_without_the_token(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = broker.token()
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_profile(tmp_path, broker, "other-aws", token)))

    def credentials() -> object:
        return boto3.Session(profile_name="runner").get_credentials()

    with pytest.raises(botocore.exceptions.CredentialRetrievalError) as caught:
        await asyncio.to_thread(credentials)
    message = str(caught.value)
    assert "credential_not_assigned" in message
    assert "fix: pick an assigned credential" in message
    for part in (token, *token.split(".")):
        assert part not in message


# --- the real broker's answers through the CLI --------------------------------------------------


async def test_aws_credentials_as_env_lines_work_against_sts(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await tokenbroker(
        capsys, "exchange", "--broker", broker.url, "--credential", "prod-aws", "--format", "env",
        "--token-file", str(token_file(tmp_path, broker.token())),
    )  # fmt: skip
    assert code == 0, err
    values = dict(line.split("=", 1) for line in out.splitlines())
    sts = broker.moto.client(
        "sts",
        access_key=values["AWS_ACCESS_KEY_ID"],
        secret_key=values["AWS_SECRET_ACCESS_KEY"],
        session_token=values["AWS_SESSION_TOKEN"],
    )
    assert "assumed-role" in sts.get_caller_identity()["Arn"]


async def test_dry_run_explains_a_bound_claim_refusal_with_expected_and_actual(
    broker: Broker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENV0_OIDC_TOKEN", broker.token(environment="staging-env"))
    code, out, _ = await tokenbroker(
        capsys, "exchange", "--broker", broker.url, "--credential", "prod-only-vault", "--dry-run"
    )
    assert code == 4
    lines = out.splitlines()
    assert lines[0] == "dry run: credential 'prod-only-vault' (vault_oidc) would be REFUSED"
    assert [line.split()[0:2] for line in lines[1:6]] == [
        ["✓", "token"],
        ["✓", "identity"],
        ["✓", "organization"],
        ["✓", "assignment"],
        ["✗", "bound_claims"],
    ]
    assert f"✗ environmentId  expected [{PROD_ENV}], actual staging-env" in out


async def test_dry_run_of_an_allowed_exchange_is_exit_0(
    broker: Broker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENV0_OIDC_TOKEN", broker.token(environment=PROD_ENV))
    code, out, _ = await tokenbroker(
        capsys, "exchange", "--broker", broker.url, "--credential", "prod-only-vault", "--dry-run"
    )
    assert code == 0
    assert "would be ISSUED" in out


async def test_an_expired_token_is_exit_4_naming_the_cause_and_fix(
    broker: Broker, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = broker.token(lifetime_seconds=1, issued_at=broker.issuer.clock.now() - 3600)
    monkeypatch.setenv("ENV0_OIDC_TOKEN", token)
    code, _, err = await tokenbroker(
        capsys, "exchange", "--broker", broker.url, "--credential", "prod-vault"
    )
    assert code == 4
    assert "invalid_token (token_expired)" in err
    assert "get a fresh one" in err
    assert token.split(".")[1] not in err


# --- revoke against OpenBao ---------------------------------------------------------------------


async def exchange_vault_to_file(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, str]:
    """Exchange for prod-vault as env lines in a file; return the file and the Vault token."""
    written = tmp_path / "vault.env"
    code, _, err = await tokenbroker(
        capsys, "exchange", "--broker", broker.url, "--credential", "prod-vault",
        "--format", "env", "--output", str(written),
        "--token-file", str(token_file(tmp_path, broker.token())),
    )  # fmt: skip
    assert code == 0, err
    values = dict(line.split("=", 1) for line in written.read_text().splitlines())
    return written, values["VAULT_TOKEN"]


async def test_revoke_from_the_file_exchange_wrote_kills_the_vault_token(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written, vault_token = await exchange_vault_to_file(broker, tmp_path, capsys)
    assert vault_token_is_alive(broker.openbao, vault_token)

    code, _, err = await tokenbroker(capsys, "revoke", "--from", str(written))
    assert code == 0, err
    assert f"revoked the Vault token at {broker.openbao.address}" in err
    assert vault_token not in err
    assert not vault_token_is_alive(broker.openbao, vault_token)
    # Revoking again is harmless: revoke-self on a dead token counts as revoked.
    assert (await tokenbroker(capsys, "revoke", "--from", str(written)))[0] == 0


async def test_revoke_of_github_env_revokes_vault_and_says_aws_cannot_be(
    broker: Broker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    github_env = tmp_path / "github_env"
    monkeypatch.setenv("GITHUB_ENV", str(github_env))
    monkeypatch.setenv("ENV0_OIDC_TOKEN", broker.token())
    for credential in ("prod-vault", "prod-aws"):
        code, _, err = await tokenbroker(
            capsys, "exchange", "--broker", broker.url, "--credential", credential, "--append-env"
        )
        assert code == 0, err
    code, _, err = await tokenbroker(capsys, "revoke", "--from", str(github_env))
    assert code == 0, err
    assert "revoked the Vault token" in err
    assert AWS_NOTE in err
    vault_token = next(
        line.split("=", 1)[1]
        for line in github_env.read_text().splitlines()
        if line.startswith("VAULT_TOKEN=")
    )
    assert not vault_token_is_alive(broker.openbao, vault_token)


async def test_revoke_reads_the_vault_variables_from_the_environment(
    broker: Broker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENV0_OIDC_TOKEN", broker.token())
    code, out, _ = await tokenbroker(
        capsys, "exchange", "--broker", broker.url, "--credential", "prod-vault"
    )
    assert code == 0
    values = json.loads(out)["values"]
    monkeypatch.setenv("VAULT_ADDR", values["VAULT_ADDR"])
    monkeypatch.setenv("VAULT_TOKEN", values["VAULT_TOKEN"])
    code, _, err = await tokenbroker(capsys, "revoke")
    assert code == 0, err
    assert not vault_token_is_alive(broker.openbao, values["VAULT_TOKEN"])


def child_token(server: OpenBaoDevServer) -> str:
    created = server.client().auth.token.create(policies=["default"], ttl="10m")
    token: str = created["auth"]["client_token"]
    return token


async def test_revoke_verifies_vault_tls_against_vault_cacert(
    openbao_tls: OpenBaoDevServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = child_token(openbao_tls)
    monkeypatch.setenv("VAULT_ADDR", openbao_tls.address)
    monkeypatch.setenv("VAULT_TOKEN", token)

    code, _, err = await tokenbroker(capsys, "revoke")
    assert code == 5
    assert "TLS verification" in err
    assert vault_token_is_alive(openbao_tls, token)

    assert openbao_tls.ca_cert_pem is not None
    ca = tmp_path / "vault-ca.pem"
    ca.write_text(openbao_tls.ca_cert_pem)
    monkeypatch.setenv("VAULT_CACERT", str(ca))
    code, _, err = await tokenbroker(capsys, "revoke")
    assert code == 0, err
    assert not vault_token_is_alive(openbao_tls, token)


async def test_revoke_kills_a_token_of_a_namespace_named_by_vault_namespace(
    openbao: OpenBaoDevServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = f"team-{uuid.uuid4().hex[:8]}"
    create_namespace(openbao.client(), namespace)
    created = openbao.client(namespace=namespace).auth.token.create(policies=["default"], ttl="10m")
    token = created["auth"]["client_token"]
    assert vault_token_is_alive(openbao, token, namespace)
    monkeypatch.setenv("VAULT_ADDR", openbao.address)
    monkeypatch.setenv("VAULT_TOKEN", token)
    monkeypatch.setenv("VAULT_NAMESPACE", namespace)
    code, _, err = await tokenbroker(capsys, "revoke")
    assert code == 0, err
    assert not vault_token_is_alive(openbao, token, namespace)


async def test_revoke_never_sends_the_token_over_plain_http_off_loopback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://vault.internal:8200")
    monkeypatch.setenv("VAULT_TOKEN", "s.not-sent-anywhere")
    code, _, err = await tokenbroker(capsys, "revoke")
    assert code == 2
    assert "cannot revoke at VAULT_ADDR=http://vault.internal:8200: not an https URL" in err
    assert "s.not-sent-anywhere" not in err


async def test_revoke_with_only_aws_credentials_is_exit_0_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = tmp_path / "aws.env"
    written.write_text("AWS_ACCESS_KEY_ID=ASIAEXAMPLE\nAWS_SECRET_ACCESS_KEY=x\n")
    code, _, err = await tokenbroker(capsys, "revoke", "--from", str(written))
    assert code == 0
    assert f"not revoked: {AWS_NOTE}" in err


async def test_revoke_with_nothing_to_revoke_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = tmp_path / "empty.env"
    written.write_text("OTHER=1\n")
    code, _, err = await tokenbroker(capsys, "revoke", "--from", str(written))
    assert code == 2
    assert "nothing to revoke" in err


async def test_revoke_then_exchange_again_gets_a_new_working_vault_token(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The runner's repro: revoke, then the same exchange with the same platform token.
    token_path = str(token_file(tmp_path, broker.token()))
    exchange = (
        "exchange", "--broker", broker.url, "--credential", "prod-vault",
        "--format", "json", "--token-file", token_path,
    )  # fmt: skip
    code, out, err = await tokenbroker(capsys, *exchange)
    assert code == 0, err
    first = json.loads(out)["values"]["VAULT_TOKEN"]
    code, _, err = await tokenbroker(
        capsys, "revoke", "--broker", broker.url, "--token-file", token_path
    )
    assert code == 0, err
    lease = json.loads(out)["lease"]["id"]
    assert f"the broker revoked prod-vault (lease {lease})" in err
    assert not vault_token_is_alive(broker.openbao, first)
    code, out, err = await tokenbroker(capsys, *exchange)
    assert code == 0, err
    second = json.loads(out)["values"]["VAULT_TOKEN"]
    assert second != first
    assert vault_token_is_alive(broker.openbao, second)


# --- the runner's CLI without the server's packages -------------------------------------------

# Runs the CLI (argv after the report path) with the server's libraries unimportable (the
# undotted names of SERVER_MODULES), then reports which of them were asked for, and which
# SERVER_MODULES got loaded anyway (tokenbroker's server packages and aiohttp.web cannot be
# hidden without hiding the client's own package, so for them loading is the failure).
WITHOUT_SERVER_PACKAGES = """
import importlib.abc, json, sys

SERVER_MODULES = tuple(json.loads(sys.argv[1]))
POISONED = frozenset(name.partition(".")[0] for name in SERVER_MODULES if "." not in name)
attempted = []

class Unimportable(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in POISONED:
            attempted.append(name)
            raise ImportError(f"{name} is unimportable in this test")
        return None

sys.meta_path.insert(0, Unimportable())
code = 1
try:
    import tokenbroker.cli.exchange
    from tokenbroker.cli.main import main
    code = main(sys.argv[3:])
finally:
    loaded = sorted(
        name for name in sys.modules
        if any(name == server or name.startswith(server + ".") for server in SERVER_MODULES)
    )
    with open(sys.argv[2], "w") as report:
        json.dump({"attempted": attempted, "loaded": loaded}, report)
sys.exit(code)
"""


@dataclass
class RunWithoutServer:
    """One CLI run in a subprocess without the server's packages."""

    code: int
    stdout: str
    stderr: str
    attempted: list[str]
    loaded: list[str]


async def tokenbroker_without_server_packages(tmp_path: Path, *argv: str) -> RunWithoutServer:
    """Run ``tokenbroker *argv`` in a subprocess where SQLAlchemy, alembic, ... are unimportable."""
    report = tmp_path / f"imports-{uuid.uuid4().hex[:6]}.json"
    command = [
        sys.executable, "-c", WITHOUT_SERVER_PACKAGES,
        json.dumps(SERVER_MODULES), str(report), *argv,
    ]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60
    )
    imports = json.loads(report.read_text())
    return RunWithoutServer(
        done.returncode, done.stdout, done.stderr, imports["attempted"], imports["loaded"]
    )


async def test_a_server_verb_cannot_even_load_where_the_server_packages_are_unimportable(
    tmp_path: Path,
) -> None:
    # The runs below would prove nothing if the subprocess never hid anything.
    run = await tokenbroker_without_server_packages(tmp_path, "db", "--help")
    assert run.code == 1
    assert "sqlalchemy is unimportable in this test" in run.stderr
    assert "sqlalchemy" in run.attempted


async def test_exchange_runs_with_sqlalchemy_alembic_and_prometheus_client_unimportable(
    broker: Broker, tmp_path: Path
) -> None:
    run = await tokenbroker_without_server_packages(
        tmp_path, "exchange", "--broker", broker.url, "--credential", "prod-vault",
        "--format", "json", "--token-file", str(token_file(tmp_path, broker.token())),
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert (run.attempted, run.loaded) == ([], [])
    assert vault_token_is_alive(broker.openbao, json.loads(run.stdout)["values"]["VAULT_TOKEN"])


async def test_revoke_runs_against_openbao_with_the_server_packages_unimportable(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written, vault_token = await exchange_vault_to_file(broker, tmp_path, capsys)
    run = await tokenbroker_without_server_packages(tmp_path, "revoke", "--from", str(written))
    assert run.code == 0, run.stderr
    assert f"revoked the Vault token at {broker.openbao.address}" in run.stderr
    assert (run.attempted, run.loaded) == ([], [])
    assert not vault_token_is_alive(broker.openbao, vault_token)
