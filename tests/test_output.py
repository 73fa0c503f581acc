"""Output formats: what runners write into their environment files."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.aws import AWS, EXPIRES
from tokenbroker.backends.base import IssuedCredential
from tokenbroker.backends.registry import backend_class
from tokenbroker.errors import InvalidRequest
from tokenbroker.output import known_formats, parse_format, render, render_env, render_shell


def test_json_format_has_the_documented_shape() -> None:
    issued = IssuedCredential(
        values={"VAULT_ADDR": "http://v", "VAULT_TOKEN": "hvs.x"},
        expires_at=EXPIRES,
        metadata={"lease_duration": 3600},
    )
    content_type, body = render("json", "prod-vault", backend_class("vault_oidc"), issued)
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


def test_a_common_format_the_type_does_not_add_is_not_rendered() -> None:
    issued = IssuedCredential(values={"VAULT_TOKEN": "x"}, expires_at=EXPIRES)
    with pytest.raises(InvalidRequest) as caught:
        render("aws-credential-process", "v", backend_class("vault_oidc"), issued)
    assert caught.value.reason == "format_not_supported"


def test_known_formats_are_the_common_ones_and_what_each_installed_type_declares() -> None:
    known = known_formats()
    assert known[:3] == ("env", "json", "shell")
    assert {"aws-credential-process", "gcp-external-account", "gcp-executable"} <= set(known)
