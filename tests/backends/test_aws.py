"""The aws_oidc backend: AssumeRoleWithWebIdentity against moto; STS errors from a fake STS."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from bench.procs import free_port
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.backends.conftest import SleepRecorder
from tests.backends.contract import BackendContract, ContractCase
from tests.support.aws import FakeSts, MotoServer, StsReply
from tokenbroker.backends.aws import (
    AWS_SOURCE_IDENTITY_CLAIM,
    AWS_TAGS_CLAIM,
    AwsOidcBackend,
    AwsOidcSettings,
    aws_session_tags,
    render_session_name,
    sanitize_session_name,
)
from tokenbroker.backends.base import BackendContext
from tokenbroker.backends.registry import backend_class
from tokenbroker.clock import SystemClock
from tokenbroker.errors import AccessDenied, InvalidRequest, UpstreamError, UpstreamTimeout
from tokenbroker.identity.models import Identity

ROLE_ARN = "arn:aws:iam::123456789012:role/deployer"
# Shaped like a JWT; moto and the fake never verify it, the broker's own checks do.
WEB_IDENTITY_TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJvcmcvbzEifQ.c2lnbmF0dXJlLXNlY3JldC12YWx1ZQ"
SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$", re.ASCII)

IDENTITY = Identity(
    issuer="env0",
    org="66a38abf-69bc-4cb7-ad73-7f61e389079f",
    project="5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c",
    subject="auth0|63021f2ce98a11d0678ed6fe",
    environment="9c3ca3cf-870d-4db4-9c60-5adf37faab45",
    deployment="96e2b169-5e4a-44a4-876b-4a5d26f4412c",
    actor="user@example.com",
)


@pytest.fixture
async def backend(sleeps: SleepRecorder) -> AsyncIterator[AwsOidcBackend]:
    """An AWS backend with a real HTTP session, closed after the test."""
    async with aiohttp.ClientSession() as http:
        aws = AwsOidcBackend(BackendContext(http=http, clock=SystemClock()), sleep=sleeps)
        yield aws
        await aws.close()


def aws_settings(endpoint: str, **overrides: object) -> AwsOidcSettings:
    """Valid settings against a test endpoint."""
    values: dict[str, object] = {
        "role_arn": ROLE_ARN,
        "sts_endpoint": endpoint,
        "region": "eu-west-1",
        **overrides,
    }
    return AwsOidcSettings.model_validate(values)


# --- against moto ------------------------------------------------------------------------------


async def test_assumed_role_credentials_work_against_sts(
    backend: AwsOidcBackend, moto_server: MotoServer
) -> None:
    role_arn = moto_server.create_role("deployer-works")
    issued = await backend.exchange(
        IDENTITY, WEB_IDENTITY_TOKEN, aws_settings(moto_server.url, role_arn=role_arn)
    )
    caller = moto_server.client(
        "sts",
        access_key=issued.values["AWS_ACCESS_KEY_ID"],
        secret_key=issued.values["AWS_SECRET_ACCESS_KEY"],
        session_token=issued.values["AWS_SESSION_TOKEN"],
    ).get_caller_identity()
    assert caller["Arn"] == issued.metadata["assumed_role_arn"]
    assert caller["Arn"].startswith("arn:aws:sts::123456789012:assumed-role/deployer-works/")


async def test_values_name_the_region_and_metadata_the_assumed_role(
    backend: AwsOidcBackend, moto_server: MotoServer
) -> None:
    role_arn = moto_server.create_role("deployer-values")
    issued = await backend.exchange(
        IDENTITY, WEB_IDENTITY_TOKEN, aws_settings(moto_server.url, role_arn=role_arn)
    )
    assert set(issued.values) == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    }
    assert issued.values["AWS_REGION"] == issued.values["AWS_DEFAULT_REGION"] == "eu-west-1"
    session_name = render_session_name("{project}-{deployment}", IDENTITY)
    assert session_name.startswith(f"{IDENTITY.project}-96e2b169")
    assert issued.metadata["session_name"] == session_name
    assert issued.metadata["assumed_role_arn"] == (
        f"arn:aws:sts::123456789012:assumed-role/deployer-values/{session_name}"
    )
    assert str(issued.metadata["assumed_role_id"]).endswith(f":{session_name}")


async def test_expiry_follows_duration_seconds_in_utc(
    backend: AwsOidcBackend, moto_server: MotoServer
) -> None:
    role_arn = moto_server.create_role("deployer-expiry")
    before = datetime.now(UTC)
    issued = await backend.exchange(
        IDENTITY,
        WEB_IDENTITY_TOKEN,
        aws_settings(moto_server.url, role_arn=role_arn, duration_seconds=900),
    )
    assert issued.expires_at.utcoffset() is not None
    assert issued.expires_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert 880 <= (issued.expires_at - before).total_seconds() <= 960


async def test_sts_client_is_created_once_per_endpoint_and_reused(
    backend: AwsOidcBackend, moto_server: MotoServer
) -> None:
    role_arn = moto_server.create_role("deployer-reuse")
    settings = aws_settings(moto_server.url, role_arn=role_arn)
    await backend.exchange(IDENTITY, WEB_IDENTITY_TOKEN, settings)
    client = backend.sts_client(settings.region, settings.sts_endpoint, settings.timeout_seconds)
    await backend.exchange(IDENTITY, WEB_IDENTITY_TOKEN, settings)
    assert (
        backend.sts_client(settings.region, settings.sts_endpoint, settings.timeout_seconds)
        is client
    )
    other_region = backend.sts_client("us-west-2", settings.sts_endpoint, settings.timeout_seconds)
    assert other_region is not client


# --- the request STS receives --------------------------------------------------------------------


async def test_request_is_unsigned_and_carries_role_session_duration_and_policies(
    backend: AwsOidcBackend, fake_sts: FakeSts
) -> None:
    policy = json.dumps({"Version": "2012-10-17", "Statement": []})
    settings = aws_settings(
        fake_sts.url,
        duration_seconds=1800,
        policy=policy,
        policy_arns=["arn:aws:iam::aws:policy/ReadOnlyAccess"],
    )
    await backend.exchange(IDENTITY, WEB_IDENTITY_TOKEN, settings)
    [request] = fake_sts.requests
    assert request["Action"] == "AssumeRoleWithWebIdentity"
    assert request["RoleArn"] == ROLE_ARN
    assert request["RoleSessionName"] == render_session_name("{project}-{deployment}", IDENTITY)
    assert request["DurationSeconds"] == "1800"
    assert request["WebIdentityToken"] == WEB_IDENTITY_TOKEN
    assert request["Policy"] == policy
    assert request["PolicyArns.member.1.arn"] == "arn:aws:iam::aws:policy/ReadOnlyAccess"
    assert "Authorization" not in fake_sts.headers[0]


# --- STS errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDenied", 403),
        ("IDPRejectedClaim", 403),
        ("InvalidIdentityToken", 400),
        ("ExpiredTokenException", 400),
    ],
)
async def test_sts_refusal_is_access_denied_with_stss_message(
    backend: AwsOidcBackend, fake_sts: FakeSts, code: str, status: int
) -> None:
    fake_sts.script(StsReply(code=code, status=status, message="Incorrect token audience"))
    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, WEB_IDENTITY_TOKEN, aws_settings(fake_sts.url))
    assert raised.value.reason == "backend_refused"
    assert "Incorrect token audience" in raised.value.description
    assert code in raised.value.description
    assert len(fake_sts.requests) == 1


@pytest.mark.parametrize(
    "code", ["MalformedPolicyDocument", "ValidationError", "PackedPolicyTooLarge"]
)
async def test_sts_rejecting_the_request_is_invalid_request(
    backend: AwsOidcBackend, fake_sts: FakeSts, code: str
) -> None:
    fake_sts.script(StsReply(code=code, status=400, message="1 validation error detected"))
    with pytest.raises(InvalidRequest) as raised:
        await backend.exchange(IDENTITY, WEB_IDENTITY_TOKEN, aws_settings(fake_sts.url))
    assert raised.value.status == 400
    assert raised.value.reason == "backend_rejected_request"
    assert code in raised.value.description
    assert len(fake_sts.requests) == 1


@pytest.mark.parametrize(
    ("code", "status", "error_type"),
    [
        ("IDPCommunicationError", 400, "Sender"),
        ("Throttling", 400, "Sender"),
        ("ThrottlingException", 400, "Sender"),
        ("ServiceUnavailable", 503, "Receiver"),
        ("InternalFailure", 500, "Receiver"),
    ],
)
async def test_transient_sts_errors_are_retried_then_reported_as_upstream_error(
    backend: AwsOidcBackend,
    fake_sts: FakeSts,
    sleeps: SleepRecorder,
    code: str,
    status: int,
    error_type: str,
) -> None:
    failure = StsReply(code=code, status=status, error_type=error_type, message="try again")
    fake_sts.script(failure, failure, failure)
    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(
            IDENTITY, WEB_IDENTITY_TOKEN, aws_settings(fake_sts.url, max_retries=2)
        )
    assert raised.value.status == 502
    assert code in raised.value.description
    assert len(fake_sts.requests) == 3
    assert len(sleeps.delays) == 2
    assert all(delay > 0 for delay in sleeps.delays)


async def test_transient_error_then_success_gives_credentials(
    backend: AwsOidcBackend, fake_sts: FakeSts, sleeps: SleepRecorder
) -> None:
    fake_sts.script(StsReply(code="IDPCommunicationError", status=400, message="IdP unreachable"))
    issued = await backend.exchange(IDENTITY, WEB_IDENTITY_TOKEN, aws_settings(fake_sts.url))
    assert issued.values["AWS_ACCESS_KEY_ID"] == "ASIAFAKEEXAMPLE00001"
    assert issued.metadata["subject_from_web_identity_token"] == "org/o1/project/p1/user/u1"
    assert len(fake_sts.requests) == 2
    assert len(sleeps.delays) == 1


async def test_no_retries_when_max_retries_is_zero(
    backend: AwsOidcBackend, fake_sts: FakeSts
) -> None:
    fake_sts.script(StsReply(code="Throttling", status=400, message="Rate exceeded"))
    with pytest.raises(UpstreamError):
        await backend.exchange(
            IDENTITY, WEB_IDENTITY_TOKEN, aws_settings(fake_sts.url, max_retries=0)
        )
    assert len(fake_sts.requests) == 1


async def test_sts_not_answering_in_time_is_upstream_timeout(
    backend: AwsOidcBackend, fake_sts: FakeSts
) -> None:
    fake_sts.script(StsReply(hang=True))
    with pytest.raises(UpstreamTimeout) as raised:
        await backend.exchange(
            IDENTITY, WEB_IDENTITY_TOKEN, aws_settings(fake_sts.url, timeout_seconds=1.0)
        )
    assert raised.value.status == 504
    assert len(fake_sts.requests) == 1


async def test_unreachable_sts_is_retried_then_upstream_error(
    backend: AwsOidcBackend, sleeps: SleepRecorder
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(IDENTITY, WEB_IDENTITY_TOKEN, aws_settings(closed, max_retries=1))
    assert raised.value.reason == "backend_unreachable"
    assert len(sleeps.delays) == 1


async def test_no_secret_reaches_logs_or_errors(
    backend: AwsOidcBackend, fake_sts: FakeSts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issued = await backend.exchange(IDENTITY, WEB_IDENTITY_TOKEN, aws_settings(fake_sts.url))
    fake_sts.script(StsReply(code="AccessDenied", status=403, message=f"bad {WEB_IDENTITY_TOKEN}"))
    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, WEB_IDENTITY_TOKEN, aws_settings(fake_sts.url))
    secrets = [
        WEB_IDENTITY_TOKEN,
        issued.values["AWS_SECRET_ACCESS_KEY"],
        issued.values["AWS_SESSION_TOKEN"],
    ]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in secrets:
        assert secret not in logged
        assert secret not in str(raised.value)
        assert secret not in repr(raised.value)
        assert secret not in repr(issued)


# --- settings ------------------------------------------------------------------------------------


def test_entry_point_names_the_aws_backend() -> None:
    assert backend_class("aws_oidc") is AwsOidcBackend


def test_settings_defaults_follow_aws() -> None:
    settings = AwsOidcSettings(role_arn=ROLE_ARN)
    assert settings.duration_seconds == 3600
    assert settings.region == "us-east-1"
    assert settings.session_name == "{project}-{deployment}"
    assert settings.sts_endpoint is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"role_arn": "arn:aws:iam::123:role/short-account"},
        {"role_arn": "arn:aws:s3:::bucket"},
        {"role_arn": "deployer"},
        {"duration_seconds": 899},
        {"duration_seconds": 43201},
        {"region": "Mars"},
        {"sts_endpoint": "http://sts.example.com"},
        {"sts_endpoint": "ftp://127.0.0.1"},
        {"policy": "not json"},
        {"policy": "[1, 2]"},
        {"policy_arns": ["arn:aws:iam::aws:role/NotAPolicy"]},
        {"session_name": "{project.__class__}"},
        {"session_name": "{claims}"},
        {"session_name": "{project!r}"},
        {"session_name": "{project:>10}"},
        {"session_name": "{"},
        {"unknown": 1},
    ],
)
def test_invalid_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AwsOidcSettings.model_validate({"role_arn": ROLE_ARN, **overrides})


@pytest.mark.parametrize(
    "overrides",
    [
        {"role_arn": "arn:aws-us-gov:iam::123456789012:role/path/to/deployer"},
        {"sts_endpoint": "https://sts.eu-west-1.amazonaws.com"},
        {"sts_endpoint": "http://127.0.0.1:5000"},
        {"policy_arns": ["arn:aws:iam::123456789012:policy/team/ReadOnly"]},
        {"session_name": "{org}/{subject}@{actor}"},
        {"duration_seconds": 43200},
    ],
)
def test_valid_settings_are_accepted(overrides: dict[str, object]) -> None:
    AwsOidcSettings.model_validate({"role_arn": ROLE_ARN, **overrides})


@pytest.mark.parametrize("duration", [900, 1200, 1799])
def test_a_duration_inside_the_sdks_refresh_window_is_advised_against(duration: int) -> None:
    settings = AwsOidcSettings(role_arn=ROLE_ARN, duration_seconds=duration)
    (advice,) = settings.advisories()
    assert f"duration_seconds = {duration}" in advice
    assert "15-minute refresh window" in advice
    assert "1800" in advice


@pytest.mark.parametrize("duration", [1800, 3600, 43200])
def test_a_duration_outlasting_the_sdks_refresh_window_draws_no_advice(duration: int) -> None:
    assert AwsOidcSettings(role_arn=ROLE_ARN, duration_seconds=duration).advisories() == []


# --- session names and tags ----------------------------------------------------------------------


def test_session_name_renders_identity_fields_and_replaces_unsafe_characters() -> None:
    identity = Identity(issuer="gitpod", org="o1", project="my project", subject="org:o1/user:u1")
    assert render_session_name("{project}:{subject}", identity) == "my-project-org-o1-user-u1"


def test_session_name_without_project_or_deployment_still_has_two_characters() -> None:
    identity = Identity(issuer="gitpod", org="o1", project=None, subject="org:o1/user:u1")
    assert render_session_name("{project}-{deployment}", identity) == "tokenbroker"


def test_long_session_name_is_cut_to_64_characters_ending_in_a_hash_of_the_whole() -> None:
    first, second = sanitize_session_name("a" * 100), sanitize_session_name("a" * 101)
    assert len(first) == len(second) == 64
    assert first[:55] == second[:55] == "a" * 55
    assert first != second


identity_text = st.text(max_size=120) | st.none()


@given(
    project=identity_text,
    deployment=identity_text,
    actor=identity_text,
    literal=st.text(alphabet=st.characters(exclude_characters="{}"), max_size=20),
)
def test_any_rendered_session_name_satisfies_aws(
    project: str | None, deployment: str | None, actor: str | None, literal: str
) -> None:
    identity = Identity(
        issuer="generic",
        org="o",
        project=project,
        subject="s",
        deployment=deployment,
        actor=actor,
    )
    name = render_session_name("{project}" + literal + "{deployment}-{actor}", identity)
    assert SESSION_NAME.match(name)


@given(st.text(alphabet=st.characters(categories=["L", "N"]).filter(str.isascii), min_size=2))
def test_safe_session_names_are_kept_as_they_are(value: str) -> None:
    if len(value) <= 64:
        assert sanitize_session_name(value) == value
    else:
        assert sanitize_session_name(value).startswith(value[:55])


def test_session_tags_carry_the_identity_as_one_element_lists() -> None:
    claim = aws_session_tags(IDENTITY)
    assert claim["principal_tags"] == {
        "organizationId": [IDENTITY.org],
        "projectId": [IDENTITY.project],
        "environmentId": [IDENTITY.environment],
        "deploymentId": [IDENTITY.deployment],
        "deployerEmail": ["user@example.com"],
    }
    assert claim["transitive_tag_keys"] == sorted(claim["principal_tags"])


def test_session_tags_leave_out_missing_fields() -> None:
    identity = Identity(issuer="gitpod", org="o1", project=None, subject="org:o1/user:u1")
    assert aws_session_tags(identity) == {
        "principal_tags": {"organizationId": ["o1"]},
        "transitive_tag_keys": ["organizationId"],
    }


@given(st.text(min_size=1, max_size=400))
def test_session_tag_values_fit_aws_charset_and_length(value: str) -> None:
    identity = Identity(issuer="generic", org=value, project=None, subject="s")
    [tag_value] = aws_session_tags(identity)["principal_tags"]["organizationId"]  # type: ignore[index]
    assert re.fullmatch(r"[A-Za-z0-9 _.:/=+@-]{1,256}", tag_value)


async def test_minted_tokens_get_the_session_tags_claim(backend: AwsOidcBackend) -> None:
    assert backend.outbound_claims(IDENTITY, "run 7/1") == {
        AWS_TAGS_CLAIM: aws_session_tags(IDENTITY),
        AWS_SOURCE_IDENTITY_CLAIM: "run-7-1",
    }


# --- the contract every backend passes ---------------------------------------------------------


class TestAwsOidcContract(BackendContract):
    """aws_oidc against the fake STS (moto accepts every token, so it cannot refuse one)."""

    @pytest.fixture
    async def contract_case(self, backend: AwsOidcBackend, fake_sts: FakeSts) -> ContractCase:
        refused = WEB_IDENTITY_TOKEN.replace("c2ln", "b3Ro")
        fake_sts.refused_tokens.add(refused)
        settings = {"role_arn": ROLE_ARN, "sts_endpoint": fake_sts.url, "region": "eu-west-1"}
        return ContractCase(
            backend=backend,
            settings_data=settings,
            identity=IDENTITY,
            accepted_token=WEB_IDENTITY_TOKEN,
            refused_token=refused,
            unreachable_settings_data={
                **settings,
                "sts_endpoint": f"http://127.0.0.1:{free_port()}",
            },
            timeout_seconds=5.0,
            now=time.time(),
        )
