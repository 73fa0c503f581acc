"""The broker issuer's discovery document."""

from __future__ import annotations

from tokenbroker.issuer.discovery import openid_configuration


def test_discovery_names_the_issuer_and_its_jwks_uri_without_a_double_slash() -> None:
    document = openid_configuration("https://broker.example.com/")
    assert document["issuer"] == "https://broker.example.com"
    assert document["jwks_uri"] == "https://broker.example.com/.well-known/jwks.json"


def test_discovery_advertises_token_exchange_at_the_token_endpoint() -> None:
    document = openid_configuration("https://broker.example.com")
    assert document["token_endpoint"] == "https://broker.example.com/oauth2/token"
    assert document["grant_types_supported"] == ["urn:ietf:params:oauth:grant-type:token-exchange"]


def test_discovery_has_the_fields_oidc_consumers_require() -> None:
    document = openid_configuration("https://broker.example.com")
    assert document["response_types_supported"] == ["id_token"]
    assert document["subject_types_supported"] == ["public"]
    assert document["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
    claims = document["claims_supported"]
    assert isinstance(claims, list)
    assert {"iss", "sub", "aud", "exp", "iat", "platform_iss", "tokenbroker"} <= set(claims)


def test_discovery_lists_only_the_algorithms_given() -> None:
    document = openid_configuration("https://broker.example.com", algorithms=["RS256"])
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
