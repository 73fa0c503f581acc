"""The dev platform issuer: persistent keys, platform-shaped tokens, discovery and JWKS served."""

from __future__ import annotations

import stat
from pathlib import Path

import aiohttp
import pytest

from tests.support.platform import ServedDevIssuer
from tokenbroker.clock import FrozenClock
from tokenbroker.devstack.platform_issuer import DevPlatformIssuer
from tokenbroker.identity.jwks import JwksCache
from tokenbroker.identity.profiles import identify
from tokenbroker.identity.validator import TokenValidator

NOW = 1_750_000_000.0


def test_keys_are_created_0600_on_first_use_and_reused_after(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    first = DevPlatformIssuer(keys_dir)
    kid = first.signing_key("gitpod").kid
    key_file = keys_dir / "gitpod.jwks.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    assert DevPlatformIssuer(keys_dir).signing_key("gitpod").kid == kid


def test_each_profile_has_its_own_key(tmp_path: Path) -> None:
    issuer = DevPlatformIssuer(tmp_path)
    assert issuer.signing_key("env0").kid != issuer.signing_key("github").kid


def test_rotation_keeps_the_previous_key_published_and_persists(tmp_path: Path) -> None:
    issuer = DevPlatformIssuer(tmp_path)
    old = issuer.signing_key("env0").kid
    new = issuer.rotate("env0")
    keys = issuer.public_jwks("env0")["keys"]
    assert isinstance(keys, list)
    published = [key["kid"] for key in keys]
    assert published == [new, old]
    assert DevPlatformIssuer(tmp_path).signing_key("env0").kid == new
    assert stat.S_IMODE((tmp_path / "env0.jwks.json").stat().st_mode) == 0o600


def test_the_public_jwks_holds_no_private_parts(tmp_path: Path) -> None:
    keys = DevPlatformIssuer(tmp_path).public_jwks("circleci")["keys"]
    assert isinstance(keys, list)
    assert all(set(key) <= {"kty", "n", "e", "kid", "use", "alg"} for key in keys)


def test_an_unknown_profile_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dev profile"):
        DevPlatformIssuer(tmp_path).mint("jenkins", org="o", project="p")


def test_env0_tokens_have_env0s_shape(tmp_path: Path) -> None:
    issuer = DevPlatformIssuer(tmp_path, clock=FrozenClock(NOW))
    claims = issuer.claims_for("env0", org="org-1", project="prj-1", environment="env-1")
    assert claims["iss"] == "http://127.0.0.1:8401/env0"
    assert claims["apiKeyType"] == claims["https://env0.com/apiKeyType"] == "oidc"
    assert claims["organizationId"] == claims["https://env0.com/organizationId"] == "org-1"
    assert claims["projectId"] == claims["https://env0.com/projectId"] == "prj-1"
    assert claims["environmentId"] == "env-1"
    assert claims["aud"] == ["https://prod.env0.com"]
    assert (claims["iat"], claims["exp"]) == (NOW, NOW + 24 * 3600)
    tags = claims["https://aws.amazon.com/tags"]
    assert tags == {
        "principal_tags": {
            "organizationId": ["org-1"],
            "projectId": ["prj-1"],
            "templateId": [claims["templateId"]],
            "environmentId": ["env-1"],
            "deployerEmail": [claims["deployerEmail"]],
        }
    }


def test_circleci_tokens_have_a_v2_subject_and_a_per_org_issuer(tmp_path: Path) -> None:
    issuer = DevPlatformIssuer(tmp_path, clock=FrozenClock(NOW))
    claims = issuer.claims_for(
        "circleci", org="o-1", project="p-1", claims={"oidc.circleci.com/vcs-ref": "refs/tags/v1"}
    )
    assert claims["iss"] == "http://127.0.0.1:8401/circleci/org/o-1"
    assert claims["aud"] == "o-1"
    sub = claims["sub"]
    assert isinstance(sub, str)
    assert sub.startswith("org/o-1/project/p-1/user/")
    assert sub.endswith("/vcs-origin/github.com/example-org/example-repo/vcs-ref/refs/tags/v1")
    assert claims["oidc.circleci.com/ssh-rerun"] is False
    assert claims["exp"] == NOW + 3600


def test_gitpod_tokens_have_a_project_environment_subject(tmp_path: Path) -> None:
    issuer = DevPlatformIssuer(tmp_path)
    claims = issuer.claims_for("gitpod", org="o", project="p", environment="e", audience="aud")
    assert (claims["sub"], claims["org"], claims["aud"]) == ("org:o/prj:p/env:e", "o", "aud")


def test_github_tokens_carry_the_owner_and_repository_ids_and_names(tmp_path: Path) -> None:
    issuer = DevPlatformIssuer(tmp_path)
    names = {"repository_owner": "octo-org", "repository": "octo-org/octo-repo"}
    claims = issuer.claims_for("github", org="65", project="74", environment="prod", claims=names)
    assert (claims["repository_owner_id"], claims["repository_id"]) == ("65", "74")
    assert (claims["repository_owner"], claims["repository"]) == ("octo-org", "octo-org/octo-repo")
    assert claims["sub"] == "repo:octo-org/octo-repo:environment:prod"
    without_env = issuer.claims_for("github", org="65", project="74", claims=names)
    assert without_env["sub"] == "repo:octo-org/octo-repo:ref:refs/heads/main"
    assert "environment" not in without_env


def test_gitlab_tokens_have_gitlabs_shape_and_sub(tmp_path: Path) -> None:
    issuer = DevPlatformIssuer(tmp_path, clock=FrozenClock(NOW))
    claims = issuer.claims_for("gitlab", org="72", project="20", environment="production")
    assert claims["iss"] == "http://127.0.0.1:8401/gitlab"
    assert (claims["namespace_id"], claims["project_id"]) == ("72", "20")
    assert claims["sub"] == "project_path:dev-group/deploy:ref_type:branch:ref:main"
    assert (claims["ref"], claims["ref_path"], claims["ref_protected"]) == (
        "main",
        "refs/heads/main",
        "true",
    )
    assert claims["environment"] == "production"
    assert all(isinstance(claims[name], str) for name in ("pipeline_id", "job_id", "user_id"))
    assert (claims["iat"], claims["exp"]) == (NOW, NOW + 3600)


def test_a_gitlab_tokens_sub_follows_overrides_of_its_parts(tmp_path: Path) -> None:
    issuer = DevPlatformIssuer(tmp_path)
    overrides = {"project_path": "g/p", "ref": "v1.0", "ref_type": "tag"}
    claims = issuer.claims_for("gitlab", org="72", project="20", claims=overrides)
    assert claims["sub"] == "project_path:g/p:ref_type:tag:ref:v1.0"
    assert claims["ref_path"] == "refs/tags/v1.0"
    assert "environment" not in claims


def test_claim_overrides_replace_and_none_removes(tmp_path: Path) -> None:
    issuer = DevPlatformIssuer(tmp_path)
    claims = issuer.claims_for("env0", org="o", project="p", claims={"projectId": "x", "gty": None})
    assert claims["projectId"] == "x"
    assert "gty" not in claims


@pytest.mark.parametrize(
    ("profile", "org", "project", "expected_project"),
    [
        ("env0", "org-1", "prj-1", "prj-1"),
        ("circleci", "0b1c-org", "p-1", "p-1"),
        ("gitpod", "org-g", "prj-g", "prj-g"),
        ("github", "65", "74", "74"),
        ("gitlab", "4211", "4212", "4212"),
    ],
)
async def test_every_profiles_token_validates_and_identifies_against_its_served_keys(
    dev_issuer: ServedDevIssuer,
    profile: str,
    org: str,
    project: str,
    expected_project: str,
) -> None:
    clock = FrozenClock(NOW)
    dev_issuer.clock = clock
    settings = dev_issuer.issuer_settings(profile, org=org)
    assert settings.jwks_uri is None  # through discovery, like a real platform
    async with aiohttp.ClientSession() as http:
        validator = TokenValidator(
            [settings], JwksCache(http, clock, allow_private_backends=True), clock
        )
        token = dev_issuer.mint(profile, org=org, project=project)
        validated = await validator.validate_platform_token(token)
    identity = identify(validated.issuer, validated.claims)
    assert (identity.org, identity.project) == (org, expected_project)


async def test_discovery_documents_name_the_issuer_and_its_jwks(
    dev_issuer: ServedDevIssuer,
) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{dev_issuer.base_url}/circleci/org/o-9/.well-known/openid-configuration"
        async with http.get(url) as response:
            document = await response.json()
        async with http.get(document["jwks_uri"]) as response:
            jwks = await response.json()
            cache_control = response.headers["Cache-Control"]
    assert document["issuer"] == f"{dev_issuer.base_url}/circleci/org/o-9"
    assert [key["kid"] for key in jwks["keys"]] == [dev_issuer.signing_key("circleci").kid]
    assert "max-age=" in cache_control
