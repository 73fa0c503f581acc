"""Output formats: what runners write into their environment files."""

from __future__ import annotations

import json
import shlex
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.auth import pluggable
from hypothesis import given
from hypothesis import strategies as st

from tokenbroker.backends.aws import AwsOidcBackend, AwsOidcSettings
from tokenbroker.backends.base import IssuedCredential, traits_of
from tokenbroker.backends.gcp import GcpOidcBackend, GcpOidcSettings
from tokenbroker.errors import InvalidRequest
from tokenbroker.output import (
    FORMATS_WITHOUT_BACKEND,
    parse_format,
    render,
    render_aws_credential_process,
    render_env,
    render_gcp_executable,
    render_gcp_external_account,
    render_shell,
)
from tokenbroker.policy.models import Credential

EXPIRES = datetime(2026, 11, 22, 2, 14, tzinfo=UTC)
AWS = IssuedCredential(
    values={
        "AWS_ACCESS_KEY_ID": "ASIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret/key+value",
        "AWS_SESSION_TOKEN": "session-token",
        "AWS_REGION": "eu-west-1",
    },
    expires_at=EXPIRES,
)


def test_json_format_has_the_documented_shape() -> None:
    issued = IssuedCredential(
        values={"VAULT_ADDR": "http://v", "VAULT_TOKEN": "hvs.x"},
        expires_at=EXPIRES,
        metadata={"lease_duration": 3600},
    )
    content_type, body = render("json", "prod-vault", "vault_oidc", issued)
    assert content_type == "application/json"
    assert json.loads(body) == {
        "credential": "prod-vault",
        "type": "vault_oidc",
        "expires_at": "2026-11-22T02:14:00Z",
        "values": {"VAULT_ADDR": "http://v", "VAULT_TOKEN": "hvs.x"},
        "metadata": {"lease_duration": 3600},
    }


def test_env_format_is_key_value_lines() -> None:
    assert render_env({"A": "1", "B": "x=y"}) == "A=1\nB=x=y\n"


def test_env_format_fences_a_multiline_value_so_it_cannot_inject_a_variable() -> None:
    text = render_env({"A": "line1\nEVIL=1"})
    first, value1, value2, last = text.splitlines()
    name, _, delimiter = first.partition("<<")
    assert name == "A"
    assert (value1, value2) == ("line1", "EVIL=1")
    assert last == delimiter
    assert delimiter.startswith("TOKENBROKER_")


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")))
def test_shell_format_round_trips_any_value_through_the_shell_parser(value: str) -> None:
    line = render_shell({"V": value})
    words = shlex.split(line)
    assert words == ["export", f"V={value}"]


def test_shell_format_survives_a_real_shell() -> None:
    script = render_shell({"V": 'it\'s $(rm -rf /) `x` "q"'}) + 'printf %s "$V"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout == 'it\'s $(rm -rf /) `x` "q"'


def test_aws_credential_process_is_version_1_json() -> None:
    assert render_aws_credential_process(AWS) == {
        "Version": 1,
        "AccessKeyId": "ASIAEXAMPLE",
        "SecretAccessKey": "secret/key+value",
        "SessionToken": "session-token",
        "Expiration": "2026-11-22T02:14:00Z",
    }


def test_aws_credential_process_is_refused_for_a_non_aws_credential() -> None:
    issued = IssuedCredential(values={"VAULT_TOKEN": "x"}, expires_at=EXPIRES)
    with pytest.raises(InvalidRequest) as caught:
        render("aws-credential-process", "v", "vault_oidc", issued)
    assert caught.value.reason == "format_not_supported"


def test_unknown_format_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_format("yaml")
    assert caught.value.reason == "unknown_format"


def test_no_format_means_json() -> None:
    assert parse_format(None) == "json"


def test_a_bad_variable_name_from_a_backend_is_never_written() -> None:
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        render_env({"A;B": "x"})


def test_issued_credential_repr_hides_values() -> None:
    assert "secret/key+value" not in repr(AWS)


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
        credential, gcp_settings(credential), broker_url="https://broker.example"
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
    document = render_gcp_external_account(credential, gcp_settings(credential))
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
        credential, gcp_settings(credential), timeout_millis=5000, output_file="/tmp/gcp.json"
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
        credential, gcp_settings(credential), broker_url="https://broker.example/a b"
    )
    source = document["credential_source"]
    assert isinstance(source, dict)
    words = shlex.split(source["executable"]["command"])
    assert words[words.index("--credential") + 1] == "prod gcp"
    assert words[words.index("--broker") + 1] == "https://broker.example/a b"


def test_gcp_external_account_refuses_a_timeout_google_auth_would_refuse() -> None:
    credential = gcp_credential()
    with pytest.raises(ValueError, match="timeout_millis"):
        render_gcp_external_account(credential, gcp_settings(credential), timeout_millis=1000)


def test_google_auth_loads_the_gcp_external_account_document() -> None:
    credential = gcp_credential(service_account=SERVICE_ACCOUNT)
    document = render_gcp_external_account(credential, gcp_settings(credential))
    loaded = pluggable.Credentials.from_info(document)  # type: ignore[no-untyped-call]
    assert loaded.service_account_email == SERVICE_ACCOUNT
    assert loaded.info["credential_source"] == document["credential_source"]


def test_gcp_executable_is_google_auths_version_1_response() -> None:
    credential = gcp_credential()
    assert render_gcp_executable(gcp_settings(credential), "header.payload.sig", EXPIRES) == {
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
        json.dumps(render_gcp_executable(gcp_settings(credential), "header.payload.sig", future))
    )
    document = render_gcp_external_account(credential, gcp_settings(credential))
    # Stands in for the CLI: prints what the broker answered.
    document["credential_source"] = {"executable": {"command": shlex.join(["cat", str(response)])}}
    monkeypatch.setenv("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")
    loaded = pluggable.Credentials.from_info(document)  # type: ignore[no-untyped-call]
    assert loaded.retrieve_subject_token(None) == "header.payload.sig"


def test_gcp_formats_are_refused_for_settings_of_another_type() -> None:
    aws = AwsOidcSettings(role_arn="arn:aws:iam::123456789012:role/deployer")
    with pytest.raises(InvalidRequest) as external:
        render_gcp_external_account(gcp_credential(), aws)
    with pytest.raises(InvalidRequest) as executable:
        render_gcp_executable(aws, "t", EXPIRES)
    assert external.value.reason == executable.value.reason == "format_not_supported"


def test_gcp_formats_are_parsed_and_served_without_a_backend_for_gcp_only() -> None:
    assert parse_format("gcp-external-account") == "gcp-external-account"
    assert parse_format("gcp-executable") == "gcp-executable"
    assert frozenset({"gcp-external-account", "gcp-executable"}) == FORMATS_WITHOUT_BACKEND
    assert traits_of(GcpOidcBackend).formats >= FORMATS_WITHOUT_BACKEND
    assert not FORMATS_WITHOUT_BACKEND & traits_of(AwsOidcBackend).formats


def test_gcp_formats_are_not_rendered_from_an_issued_credential() -> None:
    issued = IssuedCredential(values={"GOOGLE_OAUTH_ACCESS_TOKEN": "ya29.x"}, expires_at=EXPIRES)
    with pytest.raises(InvalidRequest) as caught:
        render("gcp-executable", "prod-gcp", "gcp_oidc", issued)
    assert caught.value.reason == "format_not_supported"
