"""The Gitpod profile: the ``org`` claim and all four ``sub`` forms."""

from __future__ import annotations

import pytest

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.profiles.gitpod import identity_from_claims

ORG = "0191e2b2-1c5f-7a0e-9a56-3b1a2c3d4e5f"


def claims(sub: str, **extra: object) -> dict[str, object]:
    """A Gitpod token's claims (issuer, org, sub, times) as `gitpod idp token --decode` shows."""
    return {
        "iss": "https://app.gitpod.io",
        "aud": ["tokenbroker"],
        "org": ORG,
        "sub": sub,
        "iat": 1700000000,
        "exp": 1700003600,
        **extra,
    }


@pytest.mark.parametrize(
    ("sub", "project", "environment", "actor"),
    [
        (f"org:{ORG}/user:u-1", None, None, "u-1"),
        (f"org:{ORG}/rnr:r-1", None, None, "r-1"),
        (f"org:{ORG}/env:e-1", None, "e-1", None),
        (f"org:{ORG}/prj:p-1/env:e-1", "p-1", "e-1", None),
    ],
)
def test_each_subject_form_maps_to_project_environment_and_actor(
    sub: str, project: str | None, environment: str | None, actor: str | None
) -> None:
    identity = identity_from_claims("gitpod", claims(sub), {})
    assert identity.org == ORG
    assert (identity.project, identity.environment, identity.actor) == (
        project,
        environment,
        actor,
    )
    assert identity.subject == sub


def test_subject_of_another_org_than_the_org_claim_is_refused() -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("gitpod", claims("org:other/user:u-1"), {})
    assert caught.value.reason == "claim_invalid"


@pytest.mark.parametrize(
    "sub", [f"org:{ORG}", f"org:{ORG}/prj:p-1", f"org:{ORG}/team:t", f"org:{ORG}/user:u/extra"]
)
def test_unknown_subject_forms_are_refused(sub: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("gitpod", claims(sub), {})
    assert caught.value.reason == "claim_invalid"


def test_missing_org_claim_is_refused() -> None:
    token_claims = claims(f"org:{ORG}/user:u-1")
    del token_claims["org"]
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("gitpod", token_claims, {})
    assert caught.value.reason == "claim_missing"
