"""The aws_oidc type's own output format: AWS's credential_process document."""

from __future__ import annotations

import json

import pytest

from tests.support.aws import AWS, EXPIRES
from tokenbroker.backends.aws import AwsOidcBackend, render_aws_credential_process
from tokenbroker.backends.base import IssuedCredential, traits_of
from tokenbroker.backends.registry import backend_class
from tokenbroker.errors import InvalidRequest
from tokenbroker.output import render


def test_aws_credential_process_is_version_1_json() -> None:
    assert render_aws_credential_process(AWS) == {
        "Version": 1,
        "AccessKeyId": "ASIAEXAMPLE",
        "SecretAccessKey": "secret/key+value",
        "SessionToken": "session-token",
        "Expiration": "2026-11-22T02:14:00Z",
    }


def test_aws_credential_process_needs_the_aws_values() -> None:
    issued = IssuedCredential(values={"VAULT_TOKEN": "x"}, expires_at=EXPIRES)
    with pytest.raises(InvalidRequest) as caught:
        render_aws_credential_process(issued)
    assert caught.value.reason == "format_not_supported"


def test_the_aws_backend_renders_credential_process_itself() -> None:
    content_type, body = render(
        "aws-credential-process", "prod-aws", backend_class("aws_oidc"), AWS
    )
    assert content_type == "application/json"
    assert json.loads(body) == render_aws_credential_process(AWS)
    assert "aws-credential-process" in traits_of(AwsOidcBackend).formats
