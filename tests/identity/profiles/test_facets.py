"""Every profile's facets agree with each other: dev tokens identify, job ids, runner sources."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.identity.profiles.test_circleci import V2 as CIRCLECI_EXAMPLE
from tests.identity.profiles.test_env0 import EXAMPLE as ENV0_EXAMPLE
from tests.identity.profiles.test_github import EXAMPLE as GITHUB_EXAMPLE
from tests.identity.profiles.test_gitlab import EXAMPLE as GITLAB_EXAMPLE
from tests.identity.profiles.test_gitpod import ORG as GITPOD_ORG
from tests.identity.profiles.test_gitpod import claims as gitpod_claims
from tokenbroker.clock import FrozenClock
from tokenbroker.devstack.platform_issuer import DEV_PROFILES, DevPlatformIssuer
from tokenbroker.identity.models import Claims
from tokenbroker.identity.profiles import PROFILES

NOW = 1_750_000_000.0


@pytest.mark.parametrize("profile", DEV_PROFILES)
def test_a_dev_token_of_every_profile_identifies_as_its_org_and_project(
    tmp_path: Path, profile: str
) -> None:
    issuer = DevPlatformIssuer(tmp_path, clock=FrozenClock(NOW))
    claims = issuer.claims_for(profile, org="4711", project="4712", environment="env-1")
    # With the options the dev issuer's settings carry (a Kubernetes issuer names its cluster).
    options = issuer.issuer_settings(profile, org="4711").options
    assert PROFILES[profile].option_problems(options) == []
    identity = PROFILES[profile].identify("dev", claims, options)
    assert (identity.org, identity.project) == ("4711", "4712")


@pytest.mark.parametrize("profile", DEV_PROFILES)
def test_a_dev_token_lives_no_longer_than_its_profile_accepts(tmp_path: Path, profile: str) -> None:
    claims = DevPlatformIssuer(tmp_path, clock=FrozenClock(NOW)).claims_for(
        profile, org="o", project="p"
    )
    lifetime = claims["exp"] - claims["iat"]  # type: ignore[operator]
    assert 0 < lifetime <= PROFILES[profile].token_lifetime_seconds


@pytest.mark.parametrize(
    ("profile", "claims", "options", "expected"),
    [
        ("env0", ENV0_EXAMPLE, {}, "96e2b169-5e4a-44a4-876b-4a5d26f4412c"),
        ("github", GITHUB_EXAMPLE, {}, "example-run-id/2"),
        ("gitlab", GITLAB_EXAMPLE, {}, "302"),
        ("gitpod", gitpod_claims(f"org:{GITPOD_ORG}/prj:p-1/env:e-1"), {}, "e-1"),
        ("gitpod", gitpod_claims(f"org:{GITPOD_ORG}/user:u-1"), {}, None),
        ("circleci", CIRCLECI_EXAMPLE, {}, None),
        ("generic", {"sub": "s", "job": {"id": 7}}, {"job_pointer": "/job/id"}, "7"),
        ("generic", {"sub": "s"}, {"job_pointer": "/job/id"}, None),
        ("generic", {"sub": "s", "job": "x"}, {}, None),
    ],
)
def test_each_profile_names_the_job_its_leases_use(
    profile: str, claims: Claims, options: dict[str, str], expected: str | None
) -> None:
    assert PROFILES[profile].job_id(claims, options) == expected


def test_a_github_token_without_a_run_attempt_names_no_job() -> None:
    claims = {k: v for k, v in GITHUB_EXAMPLE.items() if k != "run_attempt"}
    assert PROFILES["github"].job_id(claims, {}) is None


def test_a_generic_job_pointer_must_be_a_json_pointer() -> None:
    assert PROFILES["generic"].option_problems({"org_pointer": "/o", "job_pointer": "job"}) == [
        "job_pointer: must be a JSON pointer starting with '/'"
    ]


def test_no_token_variable_belongs_to_two_platforms() -> None:
    variables = [v for profile in PROFILES.values() for v in profile.runner.variables]
    assert len(variables) == len(set(variables))


def test_the_profiles_import_no_server_code() -> None:
    # The runner's client reads the profiles: they must not drag in the validator, the config
    # models or the server's libraries.
    probe = (
        "import json, sys, tokenbroker.identity.profiles;"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'tokenbroker', 'pydantic', 'aiohttp', 'joserfc', 'sqlalchemy', 'prometheus_client'})))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(run.stdout))
    allowed = {"tokenbroker", "tokenbroker.errors", "tokenbroker.identity"}
    allowed |= {"tokenbroker.identity.models", "tokenbroker.identity.profiles"}
    assert {m for m in loaded if not m.startswith("tokenbroker.identity.profiles.")} <= allowed
