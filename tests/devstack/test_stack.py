"""The local stack of ``tokenbroker dev``: what it serves (pure), and one real run in-process."""

from __future__ import annotations

import contextlib
import io
import shlex
import socket
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.processes import command_line
from tokenbroker.cli.main import main as cli_main
from tokenbroker.config import Settings
from tokenbroker.devstack.entra import DevCertificateAuthority
from tokenbroker.devstack.gcp_sts import GcpStsServer
from tokenbroker.devstack.platform_issuer import DEV_PROFILES, DevPlatformIssuer
from tokenbroker.devstack.seeds import (
    AWS_DURATION_SECONDS,
    COMMON_CREDENTIALS,
    CREDENTIALS,
    DENIED_CREDENTIAL,
    GCP_PROVIDER,
    GCP_SERVICE_ACCOUNT,
    PROD_ENVIRONMENT_ID,
    PROJECT_ID,
    SEEDS,
)
from tokenbroker.devstack.seeds import DEMO_ORG_ID as ENV0_ORG_ID
from tokenbroker.devstack.stack import (
    DevStackError,
    DevStackPorts,
    DevStackState,
    admin_commands,
    build_settings,
    dev_stack,
    gcp_sts_config,
    organization_lines,
    platform_token_commands,
    read_state,
    runner_commands,
    state_path,
    write_state,
)
from tokenbroker.identity.profiles.env0 import AUDIENCE as ENV0_AUDIENCE


def a_state(tmp_path: Path, **overrides: object) -> DevStackState:
    values: dict[str, object] = {
        "pid": 4242,
        "data_dir": str(tmp_path),
        "keys_dir": str(tmp_path / "dev issuer"),
        "broker_url": "http://127.0.0.1:8400",
        "issuer_base_url": "http://127.0.0.1:8401",
        "gcp_sts_url": "http://127.0.0.1:8402",
        "moto_url": "http://127.0.0.1:8403",
        "openbao_address": "http://127.0.0.1:8404",
        "openbao_root_token": "root-token-value",
        "openbao_pid": 4343,
        "admin_token": "admin-token-value",
    }
    values.update(overrides)
    return DevStackState(**values)  # type: ignore[arg-type]


# --- ports ------------------------------------------------------------------------------------


def test_a_base_port_gives_the_broker_it_and_the_other_parts_the_next_ones() -> None:
    assert DevStackPorts.from_base(8400) == DevStackPorts(8400, 8401, 8402, 8403, 8404, 8406)


def test_port_zero_lets_every_part_pick_a_free_port() -> None:
    assert DevStackPorts.from_base(0) == DevStackPorts(0, 0, 0, 0, None)


@pytest.mark.parametrize("base", [-1, 65532, 70000])
def test_a_base_port_without_room_for_the_others_is_refused(base: int) -> None:
    with pytest.raises(ValueError, match="port"):
        DevStackPorts.from_base(base)


# --- what the broker is seeded with -----------------------------------------------------------


def dev_settings(tmp_path: Path, **extra: Any) -> Settings:
    """The dev stack's settings with its default ports; ``extra`` goes to ``build_settings``."""
    issuer = DevPlatformIssuer(tmp_path / "keys", "http://127.0.0.1:8401")
    return build_settings(
        data_dir=tmp_path,
        broker_port=8400,
        issuer=issuer,
        openbao_address="http://127.0.0.1:8404",
        moto_url="http://127.0.0.1:8403",
        gcp_sts_url="http://127.0.0.1:8402",
        entra_url="https://127.0.0.1:8406",
        entra_ca_pem=DevCertificateAuthority().ca_pem,
        **extra,
    )


def test_the_broker_trusts_every_dev_issuer(tmp_path: Path) -> None:
    settings = dev_settings(tmp_path)
    assert sorted(issuer.profile for issuer in settings.issuers) == sorted(DEV_PROFILES)
    env0 = next(issuer for issuer in settings.issuers if issuer.profile == "env0")
    assert env0.issuer == "http://127.0.0.1:8401/env0"
    assert env0.required_claims == {"apiKeyType": "oidc"}


def test_an_issuer_whose_profile_needs_options_gets_them_from_its_dev_shape(
    tmp_path: Path,
) -> None:
    # A Kubernetes issuer names its cluster: the seeded organization's id.
    settings = dev_settings(tmp_path)
    (seed,) = [seed for seed in SEEDS if seed.profile == "kubernetes"]
    (issuer,) = [issuer for issuer in settings.issuers if issuer.profile == "kubernetes"]
    assert issuer.options == {"cluster": seed.platform_org_id}
    assert issuer.issuer == f"http://127.0.0.1:8401/kubernetes/{seed.platform_org_id}"


def test_the_env0_project_is_assigned_one_credential_of_each_type(tmp_path: Path) -> None:
    settings = dev_settings(tmp_path)
    env0 = [c for c in settings.credentials if c.organization == "dev"]
    assert {credential.type for credential in env0} == {
        "vault_oidc",
        "aws_oidc",
        "gcp_oidc",
        "azure_oidc",
        "oidc_token",
    }
    assert {c.name: c.type for c in env0} == dict(CREDENTIALS)
    assignment = next(a for a in settings.assignments if a.organization == "dev")
    assert assignment.project == PROJECT_ID
    assert assignment.credentials == list(CREDENTIALS)
    organization = next(o for o in settings.organizations if o.name == "dev")
    assert organization.platform_org_id == ENV0_ORG_ID


def test_every_dev_profile_has_a_seeded_organization_and_project(tmp_path: Path) -> None:
    assert sorted(seed.profile for seed in SEEDS) == sorted(DEV_PROFILES)
    settings = dev_settings(tmp_path)
    issuers = {issuer.name: issuer for issuer in settings.issuers}
    organizations = {o.name: o for o in settings.organizations}
    for seed in SEEDS:
        organization = organizations[seed.organization]
        assert organization.platform_org_id == seed.platform_org_id
        assert issuers[organization.issuer].profile == seed.profile
        (assignment,) = [a for a in settings.assignments if a.organization == seed.organization]
        assert assignment.project == seed.project
        assert set(COMMON_CREDENTIALS) <= set(assignment.credentials)


def test_each_platforms_passthrough_vault_credential_uses_its_own_mount(tmp_path: Path) -> None:
    settings = dev_settings(tmp_path)
    paths = {
        c.organization: c.settings["auth_path"]
        for c in settings.credentials
        if c.name == "dev-vault"
    }
    assert paths == {seed.organization: seed.vault_auth_path for seed in SEEDS}
    assert len(set(paths.values())) == len(SEEDS)


def test_the_admin_token_is_configured_by_its_digest_only(tmp_path: Path) -> None:
    settings = dev_settings(tmp_path, admin_token_digests=["sha256:" + "ab" * 32])
    assert settings.admin.tokens == ["sha256:" + "ab" * 32]


def test_dev_aws_outlasts_botocores_refresh_window(tmp_path: Path) -> None:
    # botocore refreshes a credential_process credential 15 minutes before it expires.
    credentials = {c.name: c for c in dev_settings(tmp_path).credentials if c.organization == "dev"}
    assert credentials["dev-aws"].settings["duration_seconds"] == AWS_DURATION_SECONDS == 3600


def test_vault_is_reached_both_by_passthrough_and_by_a_minted_token(tmp_path: Path) -> None:
    credentials = {c.name: c for c in dev_settings(tmp_path).credentials if c.organization == "dev"}
    assert credentials["dev-vault"].token == "passthrough"
    assert credentials["dev-vault"].settings["auth_path"] == "jwt"
    assert credentials["dev-vault-mint"].token == "mint"
    assert credentials["dev-vault-mint"].settings["auth_path"] == "broker"
    assert credentials["dev-aws"].settings["sts_endpoint"] == "http://127.0.0.1:8403"
    assert credentials["dev-gcp"].settings["token_url"] == "http://127.0.0.1:8402/v1/token"


def test_the_denied_credential_is_bound_to_the_prod_environment(tmp_path: Path) -> None:
    credentials = {c.name: c for c in dev_settings(tmp_path).credentials if c.organization == "dev"}
    assert credentials[DENIED_CREDENTIAL].bound_claims == {"environmentId": PROD_ENVIRONMENT_ID}


def test_the_broker_issuer_is_its_own_loopback_url(tmp_path: Path) -> None:
    settings = dev_settings(tmp_path)
    assert settings.server.issuer_url == "http://127.0.0.1:8400"
    assert settings.server.data_dir == tmp_path


def test_the_gcp_provider_trusts_the_env0_issuer_for_the_dev_org_only(tmp_path: Path) -> None:
    issuer = DevPlatformIssuer(tmp_path / "keys", "http://127.0.0.1:8401")
    config = gcp_sts_config(issuer)
    (provider,) = config.providers
    assert provider.audience == GCP_PROVIDER
    assert provider.issuer == issuer.issuer_url("env0")
    assert provider.jwks_uri == issuer.jwks_url("env0")
    assert provider.accepted_audiences == (ENV0_AUDIENCE,)
    assert provider.attribute_condition == {"organizationId": ENV0_ORG_ID}
    (account,) = config.service_accounts
    assert account.email == GCP_SERVICE_ACCOUNT
    assert account.members[0].endswith(f"/attribute.project/{PROJECT_ID}")
    GcpStsServer(config)  # it builds


# --- the state file ---------------------------------------------------------------------------


def test_the_state_file_round_trips_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    state = a_state(tmp_path)
    path = write_state(tmp_path, state)
    assert path == state_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_state(tmp_path) == state


@pytest.mark.parametrize("content", [None, "", "[]", '{"pid": 1}', "not json"])
def test_no_or_a_broken_state_file_reads_as_no_stack(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        state_path(tmp_path).write_text(content)
    assert read_state(tmp_path) is None


def test_the_states_repr_never_shows_the_root_or_admin_token(tmp_path: Path) -> None:
    assert "root-token-value" not in repr(a_state(tmp_path))
    assert "admin-token-value" not in repr(a_state(tmp_path))


def test_the_state_file_names_every_seeded_organization(tmp_path: Path) -> None:
    state = a_state(tmp_path)
    write_state(tmp_path, state)
    read = read_state(tmp_path)
    assert read is not None
    assert read.admin_token == "admin-token-value"
    assert [(o["profile"], o["org_id"], o["project"]) for o in read.organizations] == [
        (seed.profile, seed.platform_org_id, seed.project) for seed in SEEDS
    ]


# --- the printed commands ---------------------------------------------------------------------


def test_the_printed_commands_mint_a_token_and_exchange_every_credential(tmp_path: Path) -> None:
    lines = runner_commands(a_state(tmp_path))
    mint = next(line for line in lines if "token mint" in line)
    assert "--profile env0" in mint
    assert f"--org {ENV0_ORG_ID}" in mint
    assert f"--project {PROJECT_ID}" in mint
    # The keys dir has a space in it here: it must arrive as one argument.
    assert shlex.quote(str(tmp_path / "dev issuer")) in mint
    for name in ("dev-vault", "dev-vault-mint", "dev-aws", "dev-gcp", "dev-oidc"):
        assert any(
            f"tokenbroker exchange --broker http://127.0.0.1:8400 --credential {name} " in line
            for line in lines
        ), name
    curls = [line for line in lines if line.startswith("curl ")]
    assert any("/v1/exchange?format=env" in line for line in curls)
    assert any("dry_run=true" in line and DENIED_CREDENTIAL in line for line in curls)
    assert "root-token-value" not in "\n".join(lines)


def test_the_printed_lines_name_each_platforms_org_and_project(tmp_path: Path) -> None:
    state = a_state(tmp_path)
    lines = organization_lines(state)
    mints = platform_token_commands(state)
    for seed in SEEDS:
        (line,) = [line for line in lines if line.startswith(f"{seed.profile} ")]
        assert seed.platform_org_id in line
        assert seed.project in line
        (mint,) = [m for m in mints if f"--profile {seed.profile} " in m]
        assert shlex.split(mint)[6:9:2] == [seed.platform_org_id, seed.project]


def test_the_admin_lines_export_the_url_and_the_admin_token(tmp_path: Path) -> None:
    lines = admin_commands(a_state(tmp_path))
    assert "export TOKENBROKER_URL=http://127.0.0.1:8400" in lines
    assert "export TOKENBROKER_ADMIN_TOKEN=admin-token-value" in lines


# --- a real run -------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(argv) == 0
    return out.getvalue().strip()


@pytest.mark.openbao
async def test_the_stack_serves_exchanges_and_leaves_nothing_running(tmp_path: Path) -> None:
    progress: list[str] = []
    async with dev_stack(tmp_path / "dev", port=0, progress=progress.append) as state:
        assert read_state(tmp_path / "dev") == state
        assert [line[:5] for line in progress] == [f"[{n}/8]" for n in range(1, 9)]
        assert "bao" in " ".join(command_line(state.openbao_pid))
        # The printed mint command, as a runner would run it.
        mint = next(line for line in runner_commands(state) if "token mint" in line)
        argv = shlex.split(mint.split("$(", 1)[1].rstrip(')"'))[1:]
        token = run_cli(argv)
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {token}"}
            for name in ("dev-vault", "dev-vault-mint", "dev-oidc"):
                async with http.post(
                    f"{state.broker_url}/v1/exchange", json={"credential": name}, headers=headers
                ) as response:
                    assert response.status == 200, await response.text()
                    body = await response.json()
            async with http.get(f"{state.broker_url}/.well-known/jwks.json") as response:
                broker_keys = KeySet.import_key_set(await response.json())
        minted = jwt.decode(body["values"]["OIDC_TOKEN"], broker_keys)
        assert minted.claims["iss"] == state.broker_url
        assert minted.claims["aud"] == "dev-audience"
    assert read_state(tmp_path / "dev") is None
    assert command_line(state.openbao_pid) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(state.broker_url.rsplit(":", 1)[1])), 1)


async def test_a_taken_port_is_reported_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        progress: list[str] = []
        with pytest.raises(DevStackError, match=f"port {port}"):
            async with dev_stack(tmp_path, port=port, progress=progress.append):
                pass
    assert progress == []
