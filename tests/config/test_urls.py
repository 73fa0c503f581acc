"""Outbound URL rules: no loopback, private, link-local or metadata address unless allowed."""

from __future__ import annotations

import pytest

from tokenbroker.config import parse_settings
from tokenbroker.config.urls import PRIVATE_ADDRESS_HINT, require_trusted_url
from tokenbroker.errors import ConfigError

# Each is https, so only the address rule can refuse it.
HOSTILE_HTTPS_URLS = [
    "https://169.254.169.254/latest/meta-data/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://[fd00:ec2::254]/",
    "https://100.100.100.200/",
    "https://10.0.0.5:8200",
    "https://172.16.0.1",
    "https://192.168.1.10",
    "https://127.0.0.1:6379",
    "https://[::1]:8200",
    "https://[::ffff:127.0.0.1]/",
    "https://0.0.0.0/",
    "https://localhost:8200",
    "https://vault.localhost",
    "https://127.0.0.1.nip.io",
    "https://10-0-0-1.sslip.io",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://127.1/",
]


@pytest.mark.parametrize("url", HOSTILE_HTTPS_URLS)
def test_a_non_public_address_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="must not point at"):
        require_trusted_url(url)


@pytest.mark.parametrize("url", HOSTILE_HTTPS_URLS)
def test_a_non_public_address_is_accepted_over_https_when_private_backends_are_allowed(
    url: str,
) -> None:
    assert require_trusted_url(url, allow_private=True) == url


@pytest.mark.parametrize("url", ["http://127.0.0.1:8200", "http://localhost:1/j"])
def test_http_to_loopback_needs_private_backends_allowed(url: str) -> None:
    with pytest.raises(ValueError, match="not an https URL"):
        require_trusted_url(url)
    assert require_trusted_url(url, allow_private=True) == url


def test_http_to_a_private_network_address_is_refused_even_when_allowed() -> None:
    with pytest.raises(ValueError, match="not an https URL"):
        require_trusted_url("http://10.0.0.5:8200", allow_private=True)


@pytest.mark.parametrize(
    "url", ["https://vault.example.com:8200", "https://8.8.8.8/", "https://sts.amazonaws.com"]
)
def test_public_https_urls_are_accepted(url: str) -> None:
    assert require_trusted_url(url) == url


ISSUER = {"name": "env0", "audiences": ["a"], "profile": "env0"}


@pytest.mark.parametrize("url", HOSTILE_HTTPS_URLS)
def test_config_load_refuses_an_issuer_or_jwks_uri_at_a_non_public_address(url: str) -> None:
    raw = {"issuers": [{**ISSUER, "issuer": "https://login.example.com/", "jwks_uri": url}]}
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, {})
    assert caught.value.problems == [f"issuers[0].jwks_uri: {PRIVATE_ADDRESS_HINT}"]
    allowed = parse_settings({**raw, "security": {"allow_private_backends": True}}, {})
    assert allowed.issuers[0].jwks_uri == url


def test_private_backends_are_refused_by_default() -> None:
    assert parse_settings({}, {}).security.allow_private_backends is False
