"""POST /v1/exchange end to end for AWS and GCP: dev platform issuer -> broker -> cloud stand-ins.

env0-, CircleCI- and Gitpod-shaped tokens, really signed, are exchanged in passthrough and mint
mode. AWS credentials come from moto (and call GetCallerIdentity) or from a fake STS that records
what it was sent; GCP tokens come from the STS stand-in, which verifies every subject token
against its issuer's JWKS (the platform's, or the broker's own in mint mode).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from google.auth import pluggable
from google.auth.transport.requests import Request as GoogleAuthRequest
from joserfc import jwt
from pytest_aiohttp import AiohttpClient
from tests.support.aws import FakeSts, MotoServer, StsReply
from tests.support.broker import JWT_TOKEN_TYPE, ReservedPort, ServedBroker, post_token_exchange
from tests.support.gcp import (
    POOL,
    SERVICE_ACCOUNT,
    RunningGcpSts,
    ScriptedGoogle,
    StartGcpSts,
    service_account_for_project,
)
from tests.support.platform import ServedDevIssuer

from tokenbroker.backends.aws import sanitize_session_name
from tokenbroker.config import parse_settings
from tokenbroker.devstack.gcp_sts import GcpStsConfig, WorkloadIdentityProvider
from tokenbroker.identity.profiles.circleci import CLAIM_PREFIX as CIRCLECI_CLAIM
from tokenbroker.protocol import EXPIRES_AT_HEADER, LEASE_ID_HEADER
from tokenbroker.web import keys
from tokenbroker.web.app import create_app

Platform = Literal["env0", "circleci", "gitpod"]
PLATFORMS: tuple[Platform, ...] = ("env0", "circleci", "gitpod")

ORGS: Mapping[Platform, str] = {
    "env0": "66a38abf-69bc-4cb7-ad73-7f61e389079f",
    "circleci": "c1c1c1c1-0000-4000-8000-00000000c1c1",
    "gitpod": "a7e5b2c0-1111-4222-8333-000000009d00",
}
PROJECTS: Mapping[Platform, str] = {
    "env0": "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c",
    "circleci": "e2f3a4b5-2222-4333-8444-555566667777",
    "gitpod": "0f1e2d3c-3333-4444-8555-666677778888",
}
# A second CircleCI project that is assigned the trust-example credentials too, so what
# denies it is the bound claim, not a missing assignment.
CIRCLE_OTHER_PROJECT = "99999999-4444-4555-8666-777788889999"
# An env0 project assigned the impersonating credential that the service account does not trust.
ENV0_UNTRUSTED_PROJECT = "11111111-5555-4666-8777-888899990000"
UNASSIGNED_PROJECT = "9f0e8d7c-0000-4000-8000-0000000000aa"
AWS_AUDIENCE = "sts.amazonaws.com"
AWS_TAGS = "https://aws.amazon.com/tags"

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
ROLE_NAME = "ci-deployer"
ORIGIN = "github.com/example-org/example-repo"
FORK_ORIGIN = "github.com/forker/example-repo"
STS_DENIAL = "Not authorized to perform sts:AssumeRoleWithWebIdentity"

# How each platform's providers read its tokens. CircleCI's v2 subject is longer than the 127
# bytes Google allows for google.subject, so that provider maps the project id instead.
ATTRIBUTE_MAPPINGS: Mapping[Platform, Mapping[str, str]] = {
    "env0": {"google.subject": "assertion.sub", "attribute.project": "assertion.projectId"},
    "circleci": {
        "google.subject": f"assertion['{CIRCLECI_CLAIM}project-id']",
        "attribute.project": f"assertion['{CIRCLECI_CLAIM}project-id']",
    },
    "gitpod": {"google.subject": "assertion.sub"},
}
# CircleCI's documented role trust conditions, as bound claims: credential -> (claim, pattern).
CIRCLECI_TRUST_EXAMPLES: Mapping[str, tuple[str, str]] = {
    # Only one project may assume the role.
    "aws-one-project": (f"{CIRCLECI_CLAIM}project-id", PROJECTS["circleci"]),
    # Only builds of the main branch may.
    "aws-main-only": (f"{CIRCLECI_CLAIM}vcs-ref", "refs/heads/main"),
    # A fork's build (another vcs-origin) may not.
    "aws-no-forks": (f"{CIRCLECI_CLAIM}vcs-origin", "github.com/example-org/*"),
}


def provider_name(platform: Platform, *, minted: bool) -> str:
    """The full name of the workload identity provider for a platform's tokens (or ours)."""
    provider = f"{platform}-broker" if minted else platform
    return f"//iam.googleapis.com/{POOL}/providers/{provider}"


@pytest.fixture(scope="module")
def role_arn(moto_server: MotoServer) -> str:
    """The IAM role every AWS credential of this module assumes at moto."""
    return moto_server.create_role(ROLE_NAME)


@dataclass
class Broker(ServedBroker):
    """A running broker wired to the dev platform issuer, moto, a fake STS and GCP stand-ins."""

    moto: MotoServer
    fake_sts: FakeSts
    gcp: RunningGcpSts
    scripted_google: ScriptedGoogle

    def token(
        self,
        platform: Platform = "env0",
        *,
        project: str | None = None,
        claims: Mapping[str, object] | None = None,
    ) -> str:
        """A signed platform token of ``platform``'s shape for its organization."""
        return self.issuer.mint(
            platform, org=ORGS[platform], project=project or PROJECTS[platform], claims=claims
        )


def aws_credential(name: str, endpoint: str, role: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "type": "aws_oidc",
        "settings": {"role_arn": role, "sts_endpoint": endpoint, "max_retries": 0},
        **extra,
    }


def gcp_credential(name: str, provider: str, token_url: str, **extra: object) -> dict[str, object]:
    settings: dict[str, object] = {"audience": provider, "token_url": token_url}
    settings.update(extra.pop("settings", {}))  # type: ignore[call-overload]
    return {"name": name, "type": "gcp_oidc", "settings": settings, **extra}


def platform_credentials(
    platform: Platform, *, role: str, moto: str, fake_sts: str, gcp: RunningGcpSts
) -> list[dict[str, object]]:
    """What every organization has: AWS and GCP, passthrough and mint."""
    minted_gcp = provider_name(platform, minted=True)
    return [
        aws_credential("aws", moto, role),
        aws_credential("aws-minted", moto, role, token="mint", audience=AWS_AUDIENCE),
        aws_credential("aws-fake", fake_sts, role),
        aws_credential("aws-fake-minted", fake_sts, role, token="mint", audience=AWS_AUDIENCE),
        gcp_credential("gcp", provider_name(platform, minted=False), gcp.token_url),
        # Google's default allowed audience of a provider is its name as an https URL.
        gcp_credential(
            "gcp-minted", minted_gcp, gcp.token_url, token="mint", audience=f"https:{minted_gcp}"
        ),
    ]


def circleci_trust_examples(fake_sts: str, role: str) -> list[dict[str, object]]:
    """The CircleCI trust examples as credentials of the CircleCI organization."""
    return [
        aws_credential(name, fake_sts, role, bound_claims={claim: pattern})
        for name, (claim, pattern) in CIRCLECI_TRUST_EXAMPLES.items()
    ]


def gcp_providers(issuer: ServedDevIssuer, public_url: str) -> list[WorkloadIdentityProvider]:
    """Per platform: a provider trusting the platform's issuer, and one trusting the broker's."""
    providers = []
    for platform in PLATFORMS:
        org = ORGS[platform] if platform == "circleci" else None
        platform_issuer = issuer.issuer_url(platform, org=org)
        providers += [
            WorkloadIdentityProvider(
                audience=provider_name(platform, minted=False),
                issuer=platform_issuer,
                jwks_uri=issuer.jwks_url(platform, org=org),
                allowed_audiences=(issuer.default_audience(platform, org=org),),
                attribute_mapping=ATTRIBUTE_MAPPINGS[platform],
            ),
            WorkloadIdentityProvider(
                audience=provider_name(platform, minted=True),
                issuer=public_url,
                jwks_uri=f"{public_url}/.well-known/jwks.json",
                attribute_mapping=ATTRIBUTE_MAPPINGS[platform],
                # The broker names the platform that vouched for the identity: trust only this one.
                attribute_condition={"platform_iss": platform_issuer},
            ),
        ]
    return providers


@pytest.fixture
async def broker(
    tmp_path: Path,
    dev_issuer: ServedDevIssuer,
    moto_server: MotoServer,
    role_arn: str,
    fake_sts: FakeSts,
    gcp_sts: StartGcpSts,
    scripted_google: ScriptedGoogle,
    aiohttp_client: AiohttpClient,
) -> Broker:
    reserved = ReservedPort()
    port = reserved.port
    public_url = f"http://127.0.0.1:{port}"
    gcp = await gcp_sts(
        GcpStsConfig(
            providers=gcp_providers(dev_issuer, public_url),
            service_accounts=[service_account_for_project(PROJECTS["env0"])],
        )
    )
    issuers = [
        dev_issuer.issuer_settings("env0"),
        dev_issuer.issuer_settings("circleci", org=ORGS["circleci"]),
        dev_issuer.issuer_settings("gitpod"),
    ]
    organizations, credentials, assignments = [], [], []
    for platform, issuer in zip(PLATFORMS, issuers, strict=True):
        organization = f"acme-{platform}"
        organizations.append(
            {"name": organization, "issuer": issuer.name, "platform_org_id": ORGS[platform]}
        )
        own = platform_credentials(
            platform, role=role_arn, moto=moto_server.url, fake_sts=fake_sts.url, gcp=gcp
        )
        if platform == "env0":
            own += [
                gcp_credential(
                    "gcp-sa",
                    provider_name("env0", minted=False),
                    gcp.token_url,
                    settings={"service_account": SERVICE_ACCOUNT, "iam_endpoint": gcp.url},
                ),
                # Records every call: shows which formats never reach Google.
                gcp_credential(
                    "gcp-recorded",
                    provider_name("env0", minted=False),
                    f"{scripted_google.url}/v1/token",
                ),
            ]
        if platform == "circleci":
            own += circleci_trust_examples(fake_sts.url, role_arn)
        credentials += [{"organization": organization, **credential} for credential in own]
        names = [str(credential["name"]) for credential in own]
        assignments.append(
            {"organization": organization, "project": PROJECTS[platform], "credentials": names}
        )
        other_project = {"circleci": CIRCLE_OTHER_PROJECT, "env0": ENV0_UNTRUSTED_PROJECT}
        if platform in other_project:
            assignments.append(
                {
                    "organization": organization,
                    "project": other_project[platform],
                    "credentials": names,
                }
            )
    settings = parse_settings(
        {
            # The backends and issuers of this test listen on loopback.
            "security": {"allow_private_backends": True},
            "server": {
                "data_dir": str(tmp_path / "broker"),
                "public_url": public_url,
                "port": port,
            },
            "issuers": [issuer.model_dump(mode="json") for issuer in issuers],
            "organizations": organizations,
            "credentials": credentials,
            "assignments": assignments,
        },
        {},
    )
    app = create_app(settings)
    client: TestClient[web.Request, None] = await aiohttp_client(reserved.server(app))
    return Broker(client, app, public_url, dev_issuer, moto_server, fake_sts, gcp, scripted_google)


async def assert_error(
    response: aiohttp.ClientResponse, status: int, error: str, reason: str
) -> dict[str, object]:
    body: dict[str, object] = await response.json()
    assert (response.status, body["error"], body["reason"]) == (status, error, reason), body
    return body


async def caller_arn(moto: MotoServer, key_id: str, secret: str, session: str) -> str:
    """Who AWS (moto) says these credentials are: sts GetCallerIdentity."""

    def call() -> str:
        client = moto.client("sts", access_key=key_id, secret_key=secret, session_token=session)
        arn: str = client.get_caller_identity()["Arn"]
        return arn

    return await asyncio.to_thread(call)


async def tokeninfo(broker: Broker, access_token: str) -> dict[str, Any]:
    """The stand-in's view of a Google access token (400 when it does not know it)."""
    response = await broker.client.session.get(
        f"{broker.gcp.url}/v1/tokeninfo", params={"access_token": access_token}
    )
    assert response.status == 200, await response.text()
    info: dict[str, Any] = await response.json()
    return info


async def verified_by_broker(broker: Broker, token: str) -> dict[str, Any]:
    """The claims of a token, after checking its signature against the broker's JWKS."""
    decoded = jwt.decode(token, await broker.jwks(), algorithms=["ES256", "RS256"])
    claims: dict[str, Any] = dict(decoded.claims)
    return claims


def unverified_claims(token: str) -> dict[str, Any]:
    """A platform token's claims, for comparing with what the broker answered."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


# --- AWS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("credential", ["aws", "aws-minted"])
@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_platform_token_gets_aws_credentials_that_call_get_caller_identity(
    broker: Broker, platform: Platform, credential: str
) -> None:
    response = await broker.exchange(broker.token(platform), credential)
    body = await response.json()
    assert response.status == 200, body
    assert response.headers["Cache-Control"] == "no-store"
    assert (body["credential"], body["type"]) == (credential, "aws_oidc")
    values = body["values"]
    assert values["AWS_REGION"] == values["AWS_DEFAULT_REGION"] == "us-east-1"
    arn = await caller_arn(
        broker.moto,
        values["AWS_ACCESS_KEY_ID"],
        values["AWS_SECRET_ACCESS_KEY"],
        values["AWS_SESSION_TOKEN"],
    )
    assert arn == body["metadata"]["assumed_role_arn"]
    assert arn.startswith(f"arn:aws:sts::123456789012:assumed-role/{ROLE_NAME}/")


async def test_aws_credential_process_format_is_version_1_json_that_works(broker: Broker) -> None:
    response = await broker.exchange(
        broker.token("circleci"), "aws", query="?format=aws-credential-process"
    )
    document = await response.json()
    assert response.status == 200, document
    assert set(document) == {
        "Version",
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    }
    assert document["Version"] == 1
    assert document["Expiration"].endswith("Z")
    arn = await caller_arn(
        broker.moto,
        document["AccessKeyId"],
        document["SecretAccessKey"],
        document["SessionToken"],
    )
    assert arn.startswith(f"arn:aws:sts::123456789012:assumed-role/{ROLE_NAME}/")


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_passthrough_aws_credential_sends_sts_the_platform_token_itself(
    broker: Broker, platform: Platform
) -> None:
    token = broker.token(platform)
    response = await broker.exchange(token, "aws-fake")
    assert response.status == 200, await response.text()
    [sent] = broker.fake_sts.requests
    assert sent["Action"] == "AssumeRoleWithWebIdentity"
    assert sent["WebIdentityToken"] == token


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_minted_aws_token_is_signed_by_the_broker_and_carries_session_tags(
    broker: Broker, platform: Platform
) -> None:
    token = broker.token(platform)
    response = await broker.exchange(token, "aws-fake-minted")
    assert response.status == 200, await response.text()
    [sent] = broker.fake_sts.requests
    claims = await verified_by_broker(broker, sent["WebIdentityToken"])
    assert claims["iss"] == broker.public_url
    assert claims["aud"] == AWS_AUDIENCE
    assert claims["platform_iss"] == unverified_claims(token)["iss"]
    tags = claims[AWS_TAGS]
    assert tags["principal_tags"]["organizationId"] == [ORGS[platform]]
    assert tags["principal_tags"]["projectId"] == [PROJECTS[platform]]
    assert tags["transitive_tag_keys"] == sorted(tags["principal_tags"])
    # Correlation: CloudTrail shows the source identity; the broker's claim names the lease.
    lease = (await response.json())["lease"]["id"]
    assert claims["tokenbroker"]["lease"] == lease
    [row] = await broker.app[keys.STORE].leases.listing(filters={"credential": "aws-fake-minted"})
    assert claims["https://aws.amazon.com/source_identity"] == sanitize_session_name(row.job)
    assert claims["tokenbroker"]["job"] == row.job


async def test_env0_session_tags_name_the_environment_and_deployer(broker: Broker) -> None:
    token = broker.token("env0")
    assert (await broker.exchange(token, "aws-fake-minted")).status == 200
    [sent] = broker.fake_sts.requests
    tags = (await verified_by_broker(broker, sent["WebIdentityToken"]))[AWS_TAGS]
    platform_claims = unverified_claims(token)
    assert tags["principal_tags"]["environmentId"] == [platform_claims["environmentId"]]
    assert tags["principal_tags"]["deployerEmail"] == [platform_claims["deployerEmail"]]


@pytest.mark.parametrize(
    ("credential", "project", "claims", "allowed"),
    [
        pytest.param("aws-one-project", PROJECTS["circleci"], {}, True, id="the-project"),
        pytest.param("aws-one-project", CIRCLE_OTHER_PROJECT, {}, False, id="another-project"),
        pytest.param(
            "aws-main-only", PROJECTS["circleci"], {"vcs-ref": "refs/heads/main"}, True, id="main"
        ),
        pytest.param(
            "aws-main-only",
            PROJECTS["circleci"],
            {"vcs-ref": "refs/heads/feature-x"},
            False,
            id="a-branch",
        ),
        pytest.param(
            "aws-main-only",
            PROJECTS["circleci"],
            {"vcs-ref": "refs/tags/main"},
            False,
            id="a-tag-named-main",
        ),
        pytest.param(
            "aws-no-forks", PROJECTS["circleci"], {"vcs-origin": ORIGIN}, True, id="the-orgs-repo"
        ),
        pytest.param(
            "aws-no-forks", PROJECTS["circleci"], {"vcs-origin": FORK_ORIGIN}, False, id="a-fork"
        ),
    ],
)
async def test_circleci_trust_examples_allow_and_deny_at_the_broker(
    broker: Broker, credential: str, project: str, claims: dict[str, str], allowed: bool
) -> None:
    overrides = {f"{CIRCLECI_CLAIM}{name}": value for name, value in claims.items()}
    token = broker.token("circleci", project=project, claims=overrides)
    response = await broker.exchange(token, credential)
    if allowed:
        body = await response.json()
        assert response.status == 200, body
        assert body["values"]["AWS_ACCESS_KEY_ID"]
        assert len(broker.fake_sts.requests) == 1
    else:
        body = await assert_error(response, 403, "access_denied", "bound_claims_mismatch")
        bound_claim, _pattern = CIRCLECI_TRUST_EXAMPLES[credential]
        assert bound_claim in str(body["error_description"])
        # Denied before AWS is asked: the broker's own check is the fence.
        assert broker.fake_sts.requests == []
    [event] = await broker.audit(credential)
    assert event.outcome == ("success" if allowed else "denied")


async def test_an_sts_refusal_surfaces_as_access_denied_with_sts_message(broker: Broker) -> None:
    broker.fake_sts.script(StsReply(code="AccessDenied", status=403, message=STS_DENIAL))
    response = await broker.exchange(broker.token("gitpod"), "aws-fake")
    body = await assert_error(response, 403, "access_denied", "backend_refused")
    assert STS_DENIAL in str(body["error_description"])
    [event] = await broker.audit("aws-fake")
    assert (event.outcome, event.reason) == ("denied", "backend_refused")


async def test_a_malformed_policy_at_sts_is_an_invalid_request(broker: Broker) -> None:
    broker.fake_sts.script(
        StsReply(code="MalformedPolicyDocument", status=400, message="Syntax errors in policy.")
    )
    response = await broker.exchange(broker.token(), "aws-fake")
    body = await assert_error(response, 400, "invalid_request", "backend_rejected_request")
    assert "Syntax errors in policy." in str(body["error_description"])


async def test_aws_through_oauth2_token_is_invalid_target_without_calling_sts(
    broker: Broker,
) -> None:
    response = await post_token_exchange(broker.client, broker.token(), "aws-fake")
    await assert_error(response, 400, "invalid_target", "token_type_unsupported")
    assert broker.fake_sts.requests == []


# --- GCP -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("credential", ["gcp", "gcp-minted"])
@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_platform_token_gets_a_google_access_token_of_the_pool(
    broker: Broker, platform: Platform, credential: str
) -> None:
    response = await broker.exchange(broker.token(platform), credential)
    body = await response.json()
    assert response.status == 200, body
    assert (body["credential"], body["type"]) == (credential, "gcp_oidc")
    values = body["values"]
    assert values["GOOGLE_OAUTH_ACCESS_TOKEN"] == values["CLOUDSDK_AUTH_ACCESS_TOKEN"]
    info = await tokeninfo(broker, values["GOOGLE_OAUTH_ACCESS_TOKEN"])
    assert info["sub"].startswith(f"principal://iam.googleapis.com/{POOL}/subject/")
    assert info["scope"] == CLOUD_PLATFORM


async def test_impersonation_gives_the_service_accounts_token(broker: Broker) -> None:
    response = await broker.exchange(broker.token("env0"), "gcp-sa")
    body = await response.json()
    assert response.status == 200, body
    assert body["metadata"]["service_account"] == SERVICE_ACCOUNT
    info = await tokeninfo(broker, body["values"]["GOOGLE_OAUTH_ACCESS_TOKEN"])
    assert info["email"] == SERVICE_ACCOUNT


async def test_a_project_the_service_account_does_not_trust_is_refused_by_google(
    broker: Broker,
) -> None:
    token = broker.token("env0", project=ENV0_UNTRUSTED_PROJECT)
    response = await broker.exchange(token, "gcp-sa")
    body = await assert_error(response, 403, "access_denied", "backend_refused")
    assert "PERMISSION_DENIED" in str(body["error_description"])


# --- GCP output formats -------------------------------------------------------------------------


async def test_gcp_external_account_config_is_rendered_without_calling_google(
    broker: Broker,
) -> None:
    response = await broker.exchange(
        broker.token(), "gcp-recorded", query="?format=gcp-external-account"
    )
    document = await response.json()
    assert response.status == 200, document
    assert response.headers["Cache-Control"] == "no-store"
    assert document == {
        "type": "external_account",
        "audience": provider_name("env0", minted=False),
        "subject_token_type": JWT_TOKEN_TYPE,
        "token_url": f"{broker.scripted_google.url}/v1/token",
        "credential_source": {
            "executable": {
                "command": f"tokenbroker exchange --broker {broker.public_url} "
                "--credential gcp-recorded --format gcp-executable",
                "timeout_millis": 30000,
            }
        },
    }
    assert broker.scripted_google.sts_requests == []
    [event] = await broker.audit("gcp-recorded")
    assert (event.outcome, event.reason) == ("success", "resolved")


async def test_gcp_external_account_config_points_impersonation_at_the_iam_endpoint(
    broker: Broker,
) -> None:
    response = await broker.exchange(broker.token(), "gcp-sa", query="?format=gcp-external-account")
    document = await response.json()
    assert document["service_account_impersonation_url"] == broker.gcp.impersonation_url(
        SERVICE_ACCOUNT
    )
    assert document["service_account_impersonation"] == {"token_lifetime_seconds": 3600}


async def test_gcp_executable_in_passthrough_holds_the_platform_token(broker: Broker) -> None:
    token = broker.token("circleci")
    response = await broker.exchange(token, "gcp", query="?format=gcp-executable")
    document = await response.json()
    assert response.status == 200, document
    assert document == {
        "version": 1,
        "success": True,
        "token_type": JWT_TOKEN_TYPE,
        "id_token": token,
        "expiration_time": unverified_claims(token)["exp"],
    }


async def test_gcp_executable_in_mint_holds_a_broker_token_for_the_provider(
    broker: Broker,
) -> None:
    token = broker.token("gitpod")
    response = await broker.exchange(token, "gcp-minted", query="?format=gcp-executable")
    document = await response.json()
    assert response.status == 200, document
    claims = await verified_by_broker(broker, document["id_token"])
    assert claims["iss"] == broker.public_url
    assert claims["aud"] == f"https:{provider_name('gitpod', minted=True)}"
    assert claims["sub"] == unverified_claims(token)["sub"]
    assert document["expiration_time"] == claims["exp"]
    [event] = await broker.audit("gcp-minted")
    assert (event.outcome, event.reason) == ("success", "outbound_token")


async def test_a_runner_document_names_its_tokens_expiry_and_no_lease_in_headers(
    broker: Broker,
) -> None:
    # The executable response carries a token (it expires); the configuration only settings.
    token = broker.token("gitpod")
    executable = await broker.exchange(token, "gcp-minted", query="?format=gcp-executable")
    document = await executable.json()
    expires_at = datetime.fromisoformat(executable.headers[EXPIRES_AT_HEADER])
    assert expires_at.timestamp() == document["expiration_time"]
    assert LEASE_ID_HEADER not in executable.headers
    config = await broker.exchange(token, "gcp-minted", query="?format=gcp-external-account")
    assert config.status == 200, await config.text()
    assert EXPIRES_AT_HEADER not in config.headers
    assert LEASE_ID_HEADER not in config.headers


async def test_gcp_executable_never_calls_google(broker: Broker) -> None:
    response = await broker.exchange(broker.token(), "gcp-recorded", query="?format=gcp-executable")
    assert response.status == 200, await response.text()
    assert broker.scripted_google.sts_requests == []


@pytest.mark.parametrize("fmt", ["gcp-external-account", "gcp-executable"])
async def test_gcp_formats_are_refused_for_an_aws_credential_without_calling_sts(
    broker: Broker, fmt: str
) -> None:
    response = await broker.exchange(broker.token(), "aws-fake", query=f"?format={fmt}")
    body = await assert_error(response, 400, "invalid_request", "format_not_supported")
    assert "(aws_oidc) cannot be rendered as gcp-" in str(body["error_description"])
    assert broker.fake_sts.requests == []
    [event] = await broker.audit("aws-fake")
    assert (event.outcome, event.reason) == ("denied", "format_not_supported")


@pytest.mark.parametrize("fmt", ["gcp-external-account", "gcp-executable"])
async def test_gcp_formats_are_only_given_to_who_may_use_the_credential(
    broker: Broker, fmt: str
) -> None:
    token = broker.token("env0", project=UNASSIGNED_PROJECT)
    response = await broker.exchange(token, "gcp", query=f"?format={fmt}")
    await assert_error(response, 403, "access_denied", "project_not_assigned")


FETCH_SCRIPT = """\
import json, sys, urllib.request

broker, credential, token_file = sys.argv[1:4]
request = urllib.request.Request(
    f"{broker}/v1/exchange?format=gcp-executable",
    data=json.dumps({"credential": credential}).encode(),
    headers={
        "Authorization": "Bearer " + open(token_file).read().strip(),
        "Content-Type": "application/json",
    },
    method="POST",
)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(request, timeout=10) as response:
    sys.stdout.write(response.read().decode())
"""


@pytest.fixture
def executables_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """google-auth runs credential_source executables only when this is set."""
    monkeypatch.setenv("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")


@pytest.mark.usefixtures("executables_allowed")
@pytest.mark.parametrize(
    ("platform", "credential"),
    [("env0", "gcp"), ("circleci", "gcp-minted"), ("gitpod", "gcp"), ("env0", "gcp-sa")],
)
async def test_google_auth_refreshes_by_itself_from_the_brokers_config(
    broker: Broker, tmp_path: Path, platform: Platform, credential: str
) -> None:
    response = await broker.exchange(
        broker.token(platform), credential, query="?format=gcp-external-account"
    )
    config = await response.json()
    assert response.status == 200, config
    # The CLI's stand-in: asks the broker for format=gcp-executable with the runner's token.
    token_file = tmp_path / "platform-token"
    token_file.write_text(broker.token(platform))
    script = tmp_path / "fetch.py"
    script.write_text(FETCH_SCRIPT)
    command = [sys.executable, str(script), broker.public_url, credential, str(token_file)]
    config["credential_source"]["executable"]["command"] = shlex.join(command)
    credentials = pluggable.Credentials.from_info(config, scopes=[CLOUD_PLATFORM])  # type: ignore[no-untyped-call]
    # google-auth is synchronous: it refreshes in a thread while the broker serves on this loop.
    await asyncio.to_thread(credentials.refresh, GoogleAuthRequest())
    assert credentials.valid
    info = await tokeninfo(broker, str(credentials.token))
    if credential == "gcp-sa":
        assert info["email"] == SERVICE_ACCOUNT
    else:
        assert info["sub"].startswith(f"principal://iam.googleapis.com/{POOL}/subject/")
    events = await broker.audit(credential)
    assert sorted(event.reason for event in events) == ["outbound_token", "resolved"]


@pytest.mark.usefixtures("executables_allowed")
async def test_google_auth_refreshes_by_running_the_rendered_tokenbroker_command(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = broker.token("env0")
    response = await broker.exchange(token, "gcp-minted", query="?format=gcp-external-account")
    config = await response.json()
    executable = config["credential_source"]["executable"]
    command = shlex.split(executable["command"])
    assert command[0] == "tokenbroker"
    # The runner's PATH would find the CLI; here it is this virtualenv's.
    command[0] = str(Path(sys.executable).parent / "tokenbroker")
    executable["command"] = shlex.join(command)
    monkeypatch.setenv("TOKENBROKER_PLATFORM_TOKEN", token)
    for variable in ("ENV0_OIDC_TOKEN", "CIRCLE_OIDC_TOKEN_V2", "CIRCLE_OIDC_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    credentials = pluggable.Credentials.from_info(config, scopes=[CLOUD_PLATFORM])  # type: ignore[no-untyped-call]
    await asyncio.to_thread(credentials.refresh, GoogleAuthRequest())
    info = await tokeninfo(broker, str(credentials.token))
    assert info["sub"].startswith(f"principal://iam.googleapis.com/{POOL}/subject/")


# --- secrets --------------------------------------------------------------------------------------


async def test_no_secret_reaches_logs_or_audit(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [broker.token(platform) for platform in PLATFORMS]
    env0, circleci, gitpod = tokens
    aws = await (await broker.exchange(env0, "aws")).json()
    process = await (
        await broker.exchange(circleci, "aws-minted", query="?format=aws-credential-process")
    ).json()
    await broker.exchange(gitpod, "aws-fake-minted")
    gcp = await (await broker.exchange(gitpod, "gcp")).json()
    impersonated = await (await broker.exchange(env0, "gcp-sa")).json()
    executable = await (
        await broker.exchange(circleci, "gcp-minted", query="?format=gcp-executable")
    ).json()
    broker.fake_sts.script(StsReply(code="AccessDenied", status=403, message=STS_DENIAL))
    await broker.exchange(env0, "aws-fake")
    await broker.exchange(broker.token("circleci", project=CIRCLE_OTHER_PROJECT), "aws-one-project")
    events = await broker.audit()
    assert {event.outcome for event in events} == {"success", "denied"}
    assert all(str(event.token_fingerprint).startswith("sha256:") for event in events)
    secrets = [
        *tokens,
        *(part for token in tokens for part in token.split(".")[1:]),
        aws["values"]["AWS_SECRET_ACCESS_KEY"],
        aws["values"]["AWS_SESSION_TOKEN"],
        process["SecretAccessKey"],
        process["SessionToken"],
        *(sent["WebIdentityToken"] for sent in broker.fake_sts.requests),
        gcp["values"]["GOOGLE_OAUTH_ACCESS_TOKEN"],
        impersonated["values"]["GOOGLE_OAUTH_ACCESS_TOKEN"],
        executable["id_token"],
    ]
    captured = "\n".join(
        [record.getMessage() + json.dumps(vars(record), default=str) for record in caplog.records]
        + [repr(event) for event in events]
    )
    for secret in secrets:
        assert secret not in captured


async def test_an_sts_endpoint_that_answers_garbage_is_an_audited_502(broker: Broker) -> None:
    # botocore cannot parse the reply (ResponseParserError): not a crash, a refusal.
    broker.fake_sts.script(StsReply(raw="<html><body>not STS</html"))
    response = await broker.exchange(broker.token("gitpod"), "aws-fake")
    body = await assert_error(response, 502, "upstream_error", "backend_failed")
    assert "Traceback" not in json.dumps(body)
    events = await broker.audit("aws-fake")
    assert [(e.outcome, e.reason) for e in events] == [("error", "backend_failed")]
