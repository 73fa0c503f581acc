"""TokenValidator: what it accepts, and every way it refuses, each with its reason code."""

from __future__ import annotations

import json

import pytest
from joserfc import jwt

from tests.identity.conftest import (
    NOW,
    Env0Trust,
    FakeJwksServer,
    MakeEnv0,
    b64url,
    compact,
    decode_segment,
    ec_key,
    hs256_with_secret,
    rsa_key,
    segment,
)
from tokenbroker.clock import FrozenClock
from tokenbroker.errors import InvalidToken
from tokenbroker.identity.jwks import JwksCache
from tokenbroker.identity.profiles import identify
from tokenbroker.identity.validator import TokenValidator


async def refused(validator: TokenValidator, token: str) -> InvalidToken:
    """Validate, expect an InvalidToken, and check it does not leak the token."""
    with pytest.raises(InvalidToken) as caught:
        await validator.validate_platform_token(token)
    error = caught.value
    # Any long-enough piece of the token showing up would be a leak (short ones occur by chance).
    pieces = [piece for piece in (token, *token.split(".")) if len(piece) >= 16]
    for text in (error.description, str(error), repr(error)):
        assert not any(piece in text for piece in pieces)
    return error


# -- acceptance ------------------------------------------------------------------------------


async def test_a_well_formed_env0_token_validates(env0: Env0Trust) -> None:
    token = env0.mint()
    validated = await env0.validator.validate_platform_token(token)
    assert validated.issuer == env0.settings
    assert validated.claims["organizationId"] == "org-1"
    assert validated.header["kid"] == env0.issuer.signing_key("env0").kid
    assert validated.header["alg"] == "RS256"


async def test_a_validated_env0_token_identifies_its_org_and_project(env0: Env0Trust) -> None:
    validated = await env0.validator.validate_platform_token(env0.mint())
    identity = identify(validated.issuer, validated.claims)
    assert (identity.org, identity.project) == ("org-1", "project-1")


async def test_a_token_expired_within_the_leeway_is_accepted(env0: Env0Trust) -> None:
    token = env0.mint(issued_at=NOW - 1000, lifetime_seconds=1000 - 59)
    await env0.validator.validate_platform_token(token)


async def test_aud_may_be_a_single_string(env0: Env0Trust) -> None:
    token = env0.mint(claims={"aud": "https://prod.env0.com"})
    await env0.validator.validate_platform_token(token)


async def test_a_token_without_kid_validates_when_the_issuer_has_one_key(env0: Env0Trust) -> None:
    key = env0.issuer.signing_key("env0")
    token = jwt.encode({"alg": "RS256"}, env0.claims(), key, algorithms=["RS256"])
    await env0.validator.validate_platform_token(token)


async def test_a_required_claim_may_be_one_of_a_list(make_env0: MakeEnv0) -> None:
    trust = make_env0(required_claims={"apiKeyType": ["oidc", "other"]})
    await trust.validator.validate_platform_token(trust.mint())


# -- time ------------------------------------------------------------------------------------


async def test_expired_token_is_refused_with_token_expired(env0: Env0Trust) -> None:
    token = env0.mint(issued_at=NOW - 1000, lifetime_seconds=1000 - 61)
    assert (await refused(env0.validator, token)).reason == "token_expired"


async def test_token_before_nbf_is_refused_with_token_not_yet_valid(env0: Env0Trust) -> None:
    token = env0.mint(claims={"nbf": int(NOW) + 61})
    assert (await refused(env0.validator, token)).reason == "token_not_yet_valid"


async def test_token_issued_in_the_future_is_refused(env0: Env0Trust) -> None:
    token = env0.mint(issued_at=NOW + 61)
    assert (await refused(env0.validator, token)).reason == "token_issued_in_future"


async def test_token_older_than_the_max_age_is_refused_with_token_too_old(
    make_env0: MakeEnv0,
) -> None:
    trust = make_env0(max_token_age_seconds=600)
    token = trust.mint(issued_at=NOW - 601, lifetime_seconds=3600)
    assert (await refused(trust.validator, token)).reason == "token_too_old"


async def test_token_without_exp_is_refused(env0: Env0Trust) -> None:
    token = env0.mint(claims={"exp": None})
    assert (await refused(env0.validator, token)).reason == "claim_missing"


@pytest.mark.parametrize("exp", ["tomorrow", True, [1]])
async def test_non_numeric_exp_is_refused_with_claim_invalid(env0: Env0Trust, exp: object) -> None:
    token = env0.mint(claims={"exp": exp})
    assert (await refused(env0.validator, token)).reason == "claim_invalid"


async def test_an_infinite_exp_is_not_json_and_is_refused(env0: Env0Trust) -> None:
    key = env0.issuer.signing_key("env0")
    claims = json.dumps({**env0.claims(), "exp": float("inf")})  # Python writes Infinity
    header = segment({"alg": "RS256", "kid": key.kid})
    unsigned = f"{header}.{b64url(claims.encode())}"
    token = f"{unsigned}.{b64url(b'x' * 256)}"
    error = await refused(env0.validator, token)
    assert (error.reason, error.details["problem"]) == ("token_malformed", "json")


# -- issuer and audience ---------------------------------------------------------------------


async def test_unknown_issuer_is_refused_before_any_fetch(env0: Env0Trust) -> None:
    token = env0.mint(claims={"iss": "https://login.app.env0.com/"})
    assert (await refused(env0.validator, token)).reason == "unknown_issuer"
    assert env0.fetches() == 0


async def test_token_without_iss_is_refused_as_unknown_issuer(env0: Env0Trust) -> None:
    token = env0.mint(claims={"iss": None})
    assert (await refused(env0.validator, token)).reason == "unknown_issuer"


async def test_iss_not_exactly_the_configured_issuer_is_refused_with_issuer_invalid(
    env0: Env0Trust,
) -> None:
    # Same issuer up to a trailing slash: its keys verify the signature, the exact check fails.
    token = env0.mint(claims={"iss": env0.settings.issuer + "/"})
    assert (await refused(env0.validator, token)).reason == "issuer_invalid"


async def test_wrong_audience_is_refused_with_audience_invalid(env0: Env0Trust) -> None:
    token = env0.mint(audience="https://someone-else.example")
    assert (await refused(env0.validator, token)).reason == "audience_invalid"


async def test_missing_audience_is_refused_with_audience_invalid(env0: Env0Trust) -> None:
    token = env0.mint(claims={"aud": None})
    assert (await refused(env0.validator, token)).reason == "audience_invalid"


async def test_missing_required_claim_is_refused(env0: Env0Trust) -> None:
    token = env0.mint(claims={"apiKeyType": None})
    assert (await refused(env0.validator, token)).reason == "required_claim_missing"


async def test_required_claim_with_another_value_is_refused(env0: Env0Trust) -> None:
    token = env0.mint(claims={"apiKeyType": "user"})
    assert (await refused(env0.validator, token)).reason == "required_claim_mismatch"


async def test_required_claim_compares_types_so_true_is_not_one(make_env0: MakeEnv0) -> None:
    trust = make_env0(required_claims={"flag": 1})
    token = trust.mint(claims={"flag": True})
    assert (await refused(trust.validator, token)).reason == "required_claim_mismatch"


async def test_env0_api_key_type_not_oidc_is_refused_by_the_profile(make_env0: MakeEnv0) -> None:
    trust = make_env0(required_claims={})
    token = trust.mint(claims={"apiKeyType": "user", "https://env0.com/apiKeyType": "user"})
    validated = await trust.validator.validate_platform_token(token)
    with pytest.raises(InvalidToken) as caught:
        identify(validated.issuer, validated.claims)
    assert caught.value.reason == "api_key_type_not_oidc"


# -- algorithm, key, signature ---------------------------------------------------------------


async def test_alg_none_is_refused_with_algorithm_not_allowed(env0: Env0Trust) -> None:
    token = f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(env0.claims())}."
    assert (await refused(env0.validator, token)).reason == "algorithm_not_allowed"


async def test_hs256_signed_with_the_issuers_public_key_is_refused(env0: Env0Trust) -> None:
    key = env0.issuer.signing_key("env0")
    public_pem = key.as_pem(private=False)
    token = hs256_with_secret({"alg": "HS256", "kid": key.kid}, env0.claims(), public_pem)
    assert (await refused(env0.validator, token)).reason == "algorithm_not_allowed"
    assert env0.fetches() == 0


async def test_alg_outside_the_issuers_allow_list_is_refused(make_env0: MakeEnv0) -> None:
    trust = make_env0(algorithms=["ES256"])
    assert (await refused(trust.validator, trust.mint())).reason == "algorithm_not_allowed"


async def test_key_of_the_wrong_type_for_the_alg_is_refused_with_key_mismatch(
    make_env0: MakeEnv0,
) -> None:
    trust = make_env0(algorithms=["RS256", "ES256"])
    rsa_kid = trust.issuer.signing_key("env0").kid
    forger = ec_key("forger")
    token = jwt.encode(
        {"alg": "ES256", "kid": rsa_kid}, trust.claims(), forger, algorithms=["ES256"]
    )
    assert (await refused(trust.validator, token)).reason == "key_mismatch"


async def test_unknown_kid_is_refused_with_unknown_kid(env0: Env0Trust) -> None:
    other = rsa_key("not-published")
    token = jwt.encode(
        {"alg": "RS256", "kid": "not-published"}, env0.claims(), other, algorithms=["RS256"]
    )
    assert (await refused(env0.validator, token)).reason == "unknown_kid"


async def test_stripped_signature_is_refused_with_signature_invalid(env0: Env0Trust) -> None:
    header, payload, _ = env0.mint().split(".")
    token = f"{header}.{payload}."
    assert (await refused(env0.validator, token)).reason == "signature_invalid"


async def test_tampered_payload_is_refused_with_signature_invalid(env0: Env0Trust) -> None:
    header, _, signature = env0.mint().split(".")
    claims = decode_segment(env0.mint(), 1)
    claims["projectId"] = "someone-elses-project"
    token = f"{header}.{segment(claims)}.{signature}"
    assert (await refused(env0.validator, token)).reason == "signature_invalid"


async def test_signature_by_another_key_under_the_issuers_kid_is_refused(env0: Env0Trust) -> None:
    kid = env0.issuer.signing_key("env0").kid
    token = jwt.encode(
        {"alg": "RS256", "kid": kid}, env0.claims(), rsa_key("x"), algorithms=["RS256"]
    )
    assert (await refused(env0.validator, token)).reason == "signature_invalid"


async def test_embedded_jwk_header_is_never_trusted(env0: Env0Trust) -> None:
    attacker = rsa_key("attacker")
    header = {"alg": "RS256", "kid": "attacker", "jwk": attacker.as_dict(private=False)}
    token = jwt.encode(header, env0.claims(), attacker, algorithms=["RS256"])
    assert (await refused(env0.validator, token)).reason == "unknown_kid"


async def test_jku_and_x5u_headers_are_never_fetched(
    env0: Env0Trust, jwks_server: FakeJwksServer
) -> None:
    attacker = rsa_key("attacker")
    jwks_server.keys = [attacker.as_dict(private=False)]
    header = {
        "alg": "RS256",
        "kid": "attacker",
        "jku": jwks_server.jwks_uri,
        "x5u": jwks_server.jwks_uri,
    }
    token = jwt.encode(header, env0.claims(), attacker, algorithms=["RS256"])
    assert (await refused(env0.validator, token)).reason == "unknown_kid"
    assert jwks_server.count() == 0


async def test_crit_header_is_refused(env0: Env0Trust) -> None:
    key = env0.issuer.signing_key("env0")
    header = {"alg": "RS256", "kid": key.kid, "crit": ["exp"], "exp": 1}
    token = compact(header, env0.claims(), b"x" * 256)
    assert (await refused(env0.validator, token)).reason == "token_malformed"


# -- size and shape --------------------------------------------------------------------------


async def test_token_over_the_issuers_size_limit_is_refused(make_env0: MakeEnv0) -> None:
    trust = make_env0(max_token_bytes=2048)
    token = trust.mint(claims={"padding": "x" * 2048})
    assert (await refused(trust.validator, token)).reason == "token_too_large"
    assert trust.fetches() == 0


async def test_token_over_every_limit_is_refused_before_parsing(env0: Env0Trust) -> None:
    token = "a" * (env0.settings.max_token_bytes + 1)
    assert (await refused(env0.validator, token)).reason == "token_too_large"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "a.b.c.d.e"])
async def test_token_not_of_three_segments_is_malformed(env0: Env0Trust, token: str) -> None:
    error = await refused(env0.validator, token)
    assert (error.reason, error.details["problem"]) == ("token_malformed", "segments")


@pytest.mark.parametrize(
    "make_token",
    [
        lambda h, p: f"{h}!.{p}.c2ln",
        lambda h, p: f"{h}.{p}=.c2ln",
        lambda h, p: f"{h}.{p}.c2l+",
        lambda h, p: f"{h}.{p[:-1]}#.c2ln",
        # One character too many for any whole number of bytes (length = 1 mod 4).
        lambda h, p: f"{h}.{p}{'a' * ((1 - len(p)) % 4)}.c2ln",
    ],
)
async def test_token_with_bad_base64_is_malformed(env0: Env0Trust, make_token: object) -> None:
    header = segment({"alg": "RS256"})
    payload = segment(env0.claims())
    token = make_token(header, payload)  # type: ignore[operator]
    error = await refused(env0.validator, token)
    assert (error.reason, error.details["problem"]) == ("token_malformed", "base64")


@pytest.mark.parametrize(
    "payload", [b"not json", b"[1, 2]", b'"iss"', b"\xff\xfe", b"[" * 5000 + b"]" * 5000]
)
async def test_token_with_non_json_payload_is_malformed(env0: Env0Trust, payload: bytes) -> None:
    token = f"{segment({'alg': 'RS256'})}.{b64url(payload)}.c2ln"
    error = await refused(env0.validator, token)
    assert (error.reason, error.details["problem"]) == ("token_malformed", "json")


async def test_token_with_non_json_header_is_malformed(env0: Env0Trust) -> None:
    token = f"{b64url(b'{alg: RS256}')}.{segment(env0.claims())}.c2ln"
    error = await refused(env0.validator, token)
    assert (error.reason, error.details["problem"]) == ("token_malformed", "json")


async def test_non_ascii_token_is_malformed(env0: Env0Trust) -> None:
    assert (await refused(env0.validator, "é.é.é")).reason == "token_malformed"


# -- wiring ----------------------------------------------------------------------------------


async def test_validator_only_trusts_configured_issuers_among_several(
    env0: Env0Trust, jwks: JwksCache, clock: FrozenClock
) -> None:
    gitpod_settings = env0.issuer.issuer_settings("gitpod")
    validator = TokenValidator([gitpod_settings], jwks, clock)
    assert (await refused(validator, env0.mint())).reason == "unknown_issuer"
    gitpod_token = env0.issuer.mint("gitpod", org="o", project="p")
    validated = await validator.validate_platform_token(gitpod_token)
    assert validated.issuer.name == gitpod_settings.name
