"""The env0 profile, from env0's published example token."""

from __future__ import annotations

import pytest

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.profiles.env0 import identity_from_claims

# env0's published example payload (docs), verbatim apart from the deploymentLogId below.
EXAMPLE: dict[str, object] = {
    "https://aws.amazon.com/tags": {
        "principal_tags": {
            "organizationId": ["66a38abf-69bc-4cb7-ad73-7f61e389079f"],
            "projectId": ["5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"],
            "templateId": ["dc9808e2-44d3-48dd-b12a-31a08927ee6e"],
            "environmentId": ["9c3ca3cf-870d-4db4-9c60-5adf37faab45"],
            "deployerEmail": ["user@example.com"],
        }
    },
    "apiKeyType": "oidc",
    "organization": "66a38abf-69bc-4cb7-ad73-7f61e389079f",
    "organizationId": "66a38abf-69bc-4cb7-ad73-7f61e389079f",
    "projectId": "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c",
    "projectName": "Test Project",
    "templateId": "dc9808e2-44d3-48dd-b12a-31a08927ee6e",
    "templateName": "Test Tempalte",
    "environmentId": "9c3ca3cf-870d-4db4-9c60-5adf37faab45",
    "environmentName": "Dev Test Environment",
    "workspaceName": "env09c3ca3",
    "deployerEmail": "user@example.com",
    "deploymentLogId": "96e2b169-5e4a-44a4-876b-4a5d26f4412c",
    "https://env0.com/apiKeyType": "oidc",
    "https://env0.com/organizationId": "66a38abf-69bc-4cb7-ad73-7f61e389079f",
    "https://env0.com/projectId": "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c",
    "iss": "https://login.app.env0.com/",
    "sub": "auth0|63021f2ce98a11d0678ed6fe",
    "aud": "https://app.env0.com",
    "iat": 1685696926,
    "exp": 1685783326,
    "azp": "hoMiq9PdkRh9LUvVpH4wIErWg50VSG1b",
    "gty": "password",
}


def without(*names: str) -> dict[str, object]:
    """The example with some claims removed."""
    return {k: v for k, v in EXAMPLE.items() if k not in names}


def test_the_published_example_maps_to_org_project_environment_deployment_actor() -> None:
    identity = identity_from_claims("env0", EXAMPLE, {})
    assert identity.issuer == "env0"
    assert identity.org == "66a38abf-69bc-4cb7-ad73-7f61e389079f"
    assert identity.project == "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
    assert identity.environment == "9c3ca3cf-870d-4db4-9c60-5adf37faab45"
    assert identity.deployment == "96e2b169-5e4a-44a4-876b-4a5d26f4412c"
    assert identity.actor == "user@example.com"
    assert identity.subject == "auth0|63021f2ce98a11d0678ed6fe"
    assert identity.claims is EXAMPLE


def test_deprecated_prefixed_claims_are_read_as_fallbacks() -> None:
    claims = without("organizationId", "projectId", "apiKeyType")
    identity = identity_from_claims("env0", claims, {})
    assert identity.org == "66a38abf-69bc-4cb7-ad73-7f61e389079f"
    assert identity.project == "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"


def test_the_current_claim_wins_over_the_deprecated_one() -> None:
    claims = {**EXAMPLE, "https://env0.com/projectId": "old"}
    assert identity_from_claims("env0", claims, {}).project == EXAMPLE["projectId"]


@pytest.mark.parametrize("api_key_type", ["user", "organization", "OIDC"])
def test_api_key_type_other_than_oidc_is_refused(api_key_type: str) -> None:
    claims = {
        **EXAMPLE,
        "apiKeyType": api_key_type,
        "https://env0.com/apiKeyType": api_key_type,
    }
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("env0", claims, {})
    assert caught.value.reason == "api_key_type_not_oidc"


def test_missing_api_key_type_is_refused() -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("env0", without("apiKeyType", "https://env0.com/apiKeyType"), {})
    assert caught.value.reason == "claim_missing"


@pytest.mark.parametrize("name", ["organizationId", "projectId"])
def test_missing_org_or_project_is_refused(name: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("env0", without(name, f"https://env0.com/{name}"), {})
    assert caught.value.reason == "claim_missing"


def test_ill_typed_project_is_refused() -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("env0", {**EXAMPLE, "projectId": ["a", "b"]}, {})
    assert caught.value.reason == "claim_invalid"


def test_optional_claims_may_be_absent() -> None:
    identity = identity_from_claims(
        "env0", without("environmentId", "deploymentLogId", "deployerEmail"), {}
    )
    assert (identity.environment, identity.deployment, identity.actor) == (None, None, None)
