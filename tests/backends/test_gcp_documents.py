"""The gcp_oidc type's runner documents: google-auth's external account and executable response."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.auth import pluggable

from tokenbroker.backends.aws import AwsOidcBackend
from tokenbroker.backends.base import OutboundToken, traits_of
from tokenbroker.backends.gcp import (
    GcpOidcBackend,
    GcpOidcSettings,
    render_gcp_executable,
    render_gcp_external_account,
)
from tokenbroker.policy.models import Credential

EXPIRES = datetime(2026, 11, 22, 2, 14, tzinfo=UTC)
GCP_AUDIENCE = (
    "//iam.googleapis.com/projects/123456789012/locations/global/"
    "workloadIdentityPools/ci-pool/providers/env0-provider"
)
SERVICE_ACCOUNT = "deployer@example-project.iam.gserviceaccount.com"


def gcp_credential(name: str = "prod-gcp", **settings: object) -> Credential:
    return Credential(
        id=1,
        organization="acme",
        name=name,
        type="gcp_oidc",
        token="passthrough",
        audience=None,
        settings={"audience": GCP_AUDIENCE, **settings},
    )


def gcp_settings(credential: Credential) -> GcpOidcSettings:
    return GcpOidcSettings.model_validate(dict(credential.settings))


def test_gcp_external_account_runs_the_cli_for_its_subject_token() -> None:
    credential = gcp_credential()
    document = render_gcp_external_account(
        credential.name, gcp_settings(credential), broker_url="https://broker.example"
    )
    assert document == {
        "type": "external_account",
        "audience": GCP_AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {
            "executable": {
                "command": "tokenbroker exchange --broker https://broker.example "
                "--credential prod-gcp --format gcp-executable",
                "timeout_millis": 30000,
            }
        },
    }


def test_gcp_external_account_impersonates_the_service_account_through_iam_endpoint() -> None:
    credential = gcp_credential(
        service_account=SERVICE_ACCOUNT,
        lifetime_seconds=1800,
        iam_endpoint="https://iam.internal.example",
        token_url="https://sts.internal.example/v1/token",
        subject_token_type="urn:ietf:params:oauth:token-type:id_token",
    )
    document = render_gcp_external_account(credential.name, gcp_settings(credential))
    assert document["service_account_impersonation_url"] == (
        f"https://iam.internal.example/v1/projects/-/serviceAccounts/{SERVICE_ACCOUNT}"
        ":generateAccessToken"
    )
    assert document["service_account_impersonation"] == {"token_lifetime_seconds": 1800}
    assert document["token_url"] == "https://sts.internal.example/v1/token"
    assert document["subject_token_type"] == "urn:ietf:params:oauth:token-type:id_token"


def test_gcp_external_account_names_an_output_file_when_asked() -> None:
    credential = gcp_credential()
    document = render_gcp_external_account(
        credential.name, gcp_settings(credential), timeout_millis=5000, output_file="/tmp/gcp.json"
    )
    assert document["credential_source"] == {
        "executable": {
            "command": "tokenbroker exchange --credential prod-gcp --format gcp-executable",
            "timeout_millis": 5000,
            "output_file": "/tmp/gcp.json",
        }
    }


def test_gcp_external_account_command_quotes_what_the_shell_would_split() -> None:
    credential = gcp_credential(name="prod gcp")
    document = render_gcp_external_account(
        credential.name, gcp_settings(credential), broker_url="https://broker.example/a b"
    )
    source = document["credential_source"]
    assert isinstance(source, dict)
    words = shlex.split(source["executable"]["command"])
    assert words[words.index("--credential") + 1] == "prod gcp"
    assert words[words.index("--broker") + 1] == "https://broker.example/a b"


def test_gcp_external_account_refuses_a_timeout_google_auth_would_refuse() -> None:
    credential = gcp_credential()
    with pytest.raises(ValueError, match="timeout_millis"):
        render_gcp_external_account(credential.name, gcp_settings(credential), timeout_millis=1000)


def test_google_auth_loads_the_gcp_external_account_document() -> None:
    credential = gcp_credential(service_account=SERVICE_ACCOUNT)
    document = render_gcp_external_account(credential.name, gcp_settings(credential))
    loaded = pluggable.Credentials.from_info(document)  # type: ignore[no-untyped-call]
    assert loaded.service_account_email == SERVICE_ACCOUNT
    assert loaded.info["credential_source"] == document["credential_source"]


def test_gcp_executable_is_google_auths_version_1_response() -> None:
    credential = gcp_credential()
    assert render_gcp_executable(
        gcp_settings(credential), OutboundToken("header.payload.sig", EXPIRES)
    ) == {
        "version": 1,
        "success": True,
        "token_type": "urn:ietf:params:oauth:token-type:jwt",
        "id_token": "header.payload.sig",
        "expiration_time": int(EXPIRES.timestamp()),
    }


def test_google_auth_takes_the_gcp_executable_response_as_its_subject_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credential = gcp_credential()
    response = tmp_path / "response.json"
    future = datetime.now(UTC) + timedelta(minutes=10)
    response.write_text(
        json.dumps(
            render_gcp_executable(
                gcp_settings(credential), OutboundToken("header.payload.sig", future)
            )
        )
    )
    document = render_gcp_external_account(credential.name, gcp_settings(credential))
    # Stands in for the CLI: prints what the broker answered.
    document["credential_source"] = {"executable": {"command": shlex.join(["cat", str(response)])}}
    monkeypatch.setenv("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")
    loaded = pluggable.Credentials.from_info(document)  # type: ignore[no-untyped-call]
    assert loaded.retrieve_subject_token(None) == "header.payload.sig"


def test_the_gcp_documents_are_rendered_without_calling_google() -> None:
    traits = traits_of(GcpOidcBackend)
    assert traits.documents == {"gcp-external-account": False, "gcp-executable": True}
    assert set(traits.documents) <= traits.formats
    assert not set(traits.documents) & traits_of(AwsOidcBackend).formats
