"""identify(): the issuer's profile decides how claims become an Identity."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.identity.profiles.test_github import EXAMPLE as GITHUB_EXAMPLE
from tokenbroker.clock import FrozenClock
from tokenbroker.config.models import IssuerSettings
from tokenbroker.errors import ConfigError
from tokenbroker.identity.jwks import JwksCache
from tokenbroker.identity.profiles import (
    PROFILES,
    circleci,
    env0,
    generic,
    github,
    gitlab,
    gitpod,
    identify,
    profile_option_problems,
)
from tokenbroker.identity.validator import TokenValidator


def issuer(profile: str, **options: str | bool | int) -> IssuerSettings:
    """Settings for an issuer with the profile."""
    return IssuerSettings(
        name=f"i-{profile}",
        issuer="https://issuer.example",
        audiences=["broker"],
        profile=profile,
        options=options,
    )


def test_every_configurable_profile_is_registered_under_its_own_name() -> None:
    assert all(name == profile.name for name, profile in PROFILES.items())
    assert "generic" in PROFILES


def test_identify_dispatches_on_the_issuers_profile_and_names_the_issuer() -> None:
    identity = identify(issuer("github"), GITHUB_EXAMPLE)
    assert (identity.issuer, identity.org) == ("i-github", "65")


def test_generic_identify_uses_the_issuers_options() -> None:
    identity = identify(issuer("generic", org_pointer="/repository_owner"), GITHUB_EXAMPLE)
    assert identity.org == "octo-org"


def test_option_problems_name_the_issuer() -> None:
    assert profile_option_problems(issuer("generic")) == [
        "issuers.i-generic.options.org_pointer: required unless sub_pattern has a named group 'org'"
    ]


async def test_a_validator_refuses_an_unusable_generic_issuer(
    jwks: JwksCache, clock: FrozenClock
) -> None:
    with pytest.raises(ConfigError):
        TokenValidator([issuer("generic")], jwks, clock)


@pytest.mark.parametrize("module", [env0, circleci, gitpod, github, gitlab, generic])
def test_every_profile_is_registered_under_its_name_with_a_token_lifetime(
    module: ModuleType,
) -> None:
    profile = module.PROFILE
    assert PROFILES[profile.name] is profile
    assert profile.token_lifetime_seconds >= 60


async def test_a_validator_refuses_an_issuer_of_an_unknown_profile_naming_the_known_ones(
    jwks: JwksCache, clock: FrozenClock
) -> None:
    with pytest.raises(ConfigError) as caught:
        TokenValidator([issuer("jenkins")], jwks, clock)
    [problem] = caught.value.problems
    assert problem.startswith("issuers.i-jenkins.profile: unknown profile 'jenkins' (env0, ")
    assert all(name in problem for name in PROFILES)
