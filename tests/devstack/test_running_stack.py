"""A running ``tokenbroker dev`` (child process, real OpenBao and moto): every seeded platform
exchanges its credentials, and ``tokenbroker admin`` works against the stack as printed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import hvac
import pytest

from tests.support.devstack import tokenbroker
from tokenbroker.devstack.platform_issuer import DevPlatformIssuer
from tokenbroker.devstack.seeds import COMMON_CREDENTIALS, SEEDS, DevSeed
from tokenbroker.devstack.stack import DevStackState
from tokenbroker.identity.profiles import PROFILES

pytestmark = pytest.mark.openbao


def platform_token(
    state: DevStackState, seed: DevSeed, claims: dict[str, object] | None = None
) -> str:
    issuer = DevPlatformIssuer(Path(state.keys_dir), state.issuer_base_url)
    return issuer.mint(seed.profile, org=seed.platform_org_id, project=seed.project, claims=claims)


def seed_of(profile: str) -> DevSeed:
    (seed,) = [seed for seed in SEEDS if seed.profile == profile]
    return seed


def run_exchange(
    state: DevStackState, credential: str, *options: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return tokenbroker(
        "exchange", "--broker", state.broker_url, "--credential", credential,
        "--format", "json", "-q", *options, env=env,
    )  # fmt: skip


def exchange(state: DevStackState, token: str, credential: str) -> dict[str, str]:
    run = run_exchange(state, credential, env={"TOKENBROKER_PLATFORM_TOKEN": token})
    assert run.returncode == 0, run.stderr
    values: dict[str, str] = json.loads(run.stdout)["values"]
    return values


def vault_login_path(values: dict[str, str]) -> str:
    looked_up = hvac.Client(url=values["VAULT_ADDR"], token=values["VAULT_TOKEN"]).lookup_token()
    path: str = looked_up["data"]["path"]
    return path


@pytest.mark.parametrize("seed", SEEDS, ids=[seed.profile for seed in SEEDS])
def test_each_platform_gets_a_vault_token_through_its_own_passthrough_mount(
    running_dev_stack: DevStackState, seed: DevSeed
) -> None:
    values = exchange(running_dev_stack, platform_token(running_dev_stack, seed), "dev-vault")
    looked_up = hvac.Client(url=values["VAULT_ADDR"], token=values["VAULT_TOKEN"]).lookup_token()
    assert looked_up["data"]["path"].startswith(f"auth/{seed.vault_auth_path}/login")
    assert "env0-access" in looked_up["data"]["policies"]


@pytest.mark.parametrize("seed", SEEDS, ids=[seed.profile for seed in SEEDS])
def test_each_platform_gets_every_common_minted_credential(
    running_dev_stack: DevStackState, seed: DevSeed
) -> None:
    token = platform_token(running_dev_stack, seed)
    minted = [name for name in COMMON_CREDENTIALS if name != "dev-vault"]
    issued = {name: exchange(running_dev_stack, token, name) for name in minted}
    assert issued["dev-vault-mint"]["VAULT_TOKEN"]
    assert issued["dev-aws"]["AWS_SESSION_TOKEN"]
    assert issued["dev-oidc"]["OIDC_TOKEN"]


def test_a_gitlab_job_exchanges_the_token_its_id_tokens_entry_names_for_vault(
    running_dev_stack: DevStackState,
) -> None:
    # `id_tokens: {BROKER_ID_TOKEN: {aud: ...}}`: the job names the variable, the runner is told.
    seed = seed_of("gitlab")
    run = tokenbroker(
        "exchange", "--broker", running_dev_stack.broker_url, "--credential", "dev-vault",
        "--token-env", "BROKER_ID_TOKEN", "--format", "json", "-q",
        env={"BROKER_ID_TOKEN": platform_token(running_dev_stack, seed),
             "TOKENBROKER_PLATFORM_TOKEN": ""},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    values = json.loads(run.stdout)["values"]
    looked_up = hvac.Client(url=values["VAULT_ADDR"], token=values["VAULT_TOKEN"]).lookup_token()
    # OpenBao's own check of the GitLab token: its mount binds namespace_id.
    assert looked_up["data"]["path"].startswith("auth/jwt-gitlab/login")
    assert looked_up["data"]["meta"]["role"] == "env0-deployer"


# Each platform whose runners hold the token in a variable of their own: the runner finds it
# there, with nothing else set.
RUNNER_VARIABLES = [
    (seed, PROFILES[seed.profile].runner.variables[0])
    for seed in SEEDS
    if PROFILES[seed.profile].runner.variables
]


@pytest.mark.parametrize(
    ("seed", "variable"), RUNNER_VARIABLES, ids=[seed.profile for seed, _ in RUNNER_VARIABLES]
)
def test_the_runner_finds_each_platforms_token_in_its_own_variable(
    running_dev_stack: DevStackState, seed: DevSeed, variable: str
) -> None:
    env = {variable: platform_token(running_dev_stack, seed), "TOKENBROKER_PLATFORM_TOKEN": ""}
    run = run_exchange(running_dev_stack, "dev-vault", env=env)
    assert run.returncode == 0, run.stderr
    assert vault_login_path(json.loads(run.stdout)["values"]).startswith(
        f"auth/{seed.vault_auth_path}/login"
    )


def test_a_kubernetes_pod_exchanges_its_projected_token_file_read_on_every_exchange(
    running_dev_stack: DevStackState, tmp_path: Path
) -> None:
    seed = seed_of("kubernetes")
    token_file = tmp_path / "token"  # the projected volume's file, which the kubelet rotates
    env = {"TOKENBROKER_PLATFORM_TOKEN": ""}
    options = ("--token-file", str(token_file))
    token_file.write_text(platform_token(running_dev_stack, seed))
    first = run_exchange(running_dev_stack, "dev-vault", *options, env=env)
    assert first.returncode == 0, first.stderr
    assert vault_login_path(json.loads(first.stdout)["values"]).startswith("auth/jwt-kubernetes/")
    # The kubelet rotates the file (here to a token the broker refuses): the next exchange
    # reads the file again, and what it holds now decides.
    token_file.write_text(platform_token(running_dev_stack, seed, {"kubernetes.io": None}))
    second = run_exchange(running_dev_stack, "dev-vault", *options, env=env)
    assert second.returncode != 0
    assert "kubernetes.io" in second.stderr


def test_terraform_plan_and_apply_get_different_credentials_by_run_phase(
    running_dev_stack: DevStackState,
) -> None:
    seed = seed_of("terraform")
    admin = {
        "TOKENBROKER_URL": running_dev_stack.broker_url,
        "TOKENBROKER_ADMIN_TOKEN": running_dev_stack.admin_token,
    }
    created = tokenbroker(
        "admin", "credentials", "create", "apply-vault", "--org", seed.organization,
        "--type", "vault_oidc", "--setting", f"address={running_dev_stack.openbao_address}",
        "--setting", "role=env0-deployer", "--setting", f"auth_path={seed.vault_auth_path}",
        "--bound-claim", "terraform_run_phase=apply", env=admin,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assigned = tokenbroker(
        "admin", "assign", seed.organization, seed.project, "apply-vault", env=admin
    )
    assert assigned.returncode == 0, assigned.stderr
    apply = platform_token(running_dev_stack, seed, {"terraform_run_phase": "apply"})
    assert vault_login_path(exchange(running_dev_stack, apply, "apply-vault")).startswith(
        "auth/jwt-terraform/login"
    )
    plan = platform_token(running_dev_stack, seed, {"terraform_run_phase": "plan"})
    denied = run_exchange(
        running_dev_stack, "apply-vault", env={"TOKENBROKER_PLATFORM_TOKEN": plan}
    )
    assert denied.returncode == 4, denied.stderr
    assert "terraform_run_phase" in denied.stderr
    # The plan still gets the workspace's other credentials.
    assert exchange(running_dev_stack, plan, "dev-vault")["VAULT_TOKEN"]


def test_admin_cli_lists_every_seeded_organization_from_the_state_file(
    running_dev_stack: DevStackState,
) -> None:
    run = tokenbroker(
        "admin", "--dev-stack", running_dev_stack.data_dir, "orgs", "list", "--json",
        env={"TOKENBROKER_ADMIN_TOKEN": "", "TOKENBROKER_URL": "http://127.0.0.1:1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    listed = {o["name"]: o["platform_org_id"] for o in json.loads(run.stdout)["organizations"]}
    assert listed == {seed.organization: seed.platform_org_id for seed in SEEDS}


def test_admin_cli_works_with_the_printed_environment_variables(
    running_dev_stack: DevStackState,
) -> None:
    env = {
        "TOKENBROKER_URL": running_dev_stack.broker_url,
        "TOKENBROKER_ADMIN_TOKEN": running_dev_stack.admin_token,
    }
    run = tokenbroker("admin", "assignments", "dev-github", env=env)
    assert run.returncode == 0, run.stderr
    (seed,) = [seed for seed in SEEDS if seed.organization == "dev-github"]
    assert seed.project in run.stdout


def test_admin_cli_refuses_a_wrong_admin_token_with_exit_1(
    running_dev_stack: DevStackState,
) -> None:
    env = {"TOKENBROKER_URL": running_dev_stack.broker_url, "TOKENBROKER_ADMIN_TOKEN": "wrong"}
    run = tokenbroker("admin", "orgs", "list", env=env)
    assert run.returncode == 1
    assert "admin token is not valid" in run.stderr


def test_admin_cli_without_a_running_dev_stack_says_so(tmp_path: Path) -> None:
    run = tokenbroker("admin", "--dev-stack", str(tmp_path), "orgs", "list")
    assert run.returncode == 1
    assert "no dev stack is running there" in run.stderr


def test_a_job_end_revoke_revokes_vault_and_never_hands_out_aws_or_gcp_again(
    running_dev_stack: DevStackState,
) -> None:
    (seed,) = [seed for seed in SEEDS if seed.profile == "env0"]
    token = platform_token(running_dev_stack, seed)
    names = ("dev-vault", "dev-aws", "dev-gcp")
    first = {name: exchange(running_dev_stack, token, name) for name in names}
    run = tokenbroker(
        "revoke", "--broker", running_dev_stack.broker_url,
        env={"TOKENBROKER_PLATFORM_TOKEN": token},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "the broker revoked dev-vault" in run.stderr
    assert "left to expire: dev-aws" in run.stderr
    assert "left to expire: dev-gcp" in run.stderr
    vault = first["dev-vault"]
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=vault["VAULT_ADDR"], token=vault["VAULT_TOKEN"]).lookup_token()
    again = {name: exchange(running_dev_stack, token, name) for name in names}
    assert again["dev-vault"]["VAULT_TOKEN"] != vault["VAULT_TOKEN"]
    assert again["dev-aws"]["AWS_ACCESS_KEY_ID"] != first["dev-aws"]["AWS_ACCESS_KEY_ID"]
    gcp_token = "GOOGLE_OAUTH_ACCESS_TOKEN"
    assert again["dev-gcp"][gcp_token] != first["dev-gcp"][gcp_token]


def test_an_admin_lists_a_jobs_lease_and_revokes_it_at_vault(
    running_dev_stack: DevStackState,
) -> None:
    (seed,) = [seed for seed in SEEDS if seed.profile == "github"]
    run = tokenbroker(
        "exchange", "--broker", running_dev_stack.broker_url, "--credential", "dev-vault",
        "--format", "json", "-q", env={"TOKENBROKER_PLATFORM_TOKEN": platform_token(
            running_dev_stack, seed)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    issued = json.loads(run.stdout)
    lease = issued["lease"]["id"]

    def admin(*argv: str) -> str:
        done = tokenbroker("admin", "--dev-stack", running_dev_stack.data_dir, *argv)
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = json.loads(admin("leases", "list", "--org", seed.organization, "--json"))
    (row,) = [row for row in listed["leases"] if row["id"] == lease]
    assert (row["state"], row["credential"], row["type"]) == ("active", "dev-vault", "vault_oidc")
    assert "sealed" not in row
    assert f"revoked dev-vault (lease {lease})" in admin("leases", "revoke", lease)
    values = issued["values"]
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=values["VAULT_ADDR"], token=values["VAULT_TOKEN"]).lookup_token()
    listed = json.loads(admin("leases", "list", "--state", "revoked", "--json"))
    assert lease in [row["id"] for row in listed["leases"]]
