"""TokenValidator's memo: a repeated token skips parsing and the signature, and nothing else."""

from __future__ import annotations

import hashlib

import pytest
from joserfc import jwt
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry

from tests.identity.conftest import NOW, Env0Trust, FakeJwksServer, rsa_key
from tokenbroker.clock import FrozenClock
from tokenbroker.errors import InvalidToken
from tokenbroker.identity.jwks import JwksCache
from tokenbroker.identity.validator import TokenValidator

# The dev issuer's JWKS is served with max-age=300: the cache keeps its key objects that long.
JWKS_FRESH_SECONDS = 300


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The signing input of every RS256 signature check made, in order.

    Wraps the registry's RS256 algorithm object, the very one a compiled issuer calls.
    """
    model = JWSRegistry.algorithms["RS256"]
    real_verify = model.verify
    calls: list[bytes] = []

    def verify(msg: bytes, sig: bytes, key: Key) -> bool:
        calls.append(msg)
        return real_verify(msg, sig, key)

    monkeypatch.setattr(model, "verify", verify)
    return calls


def validator_for(
    env0: Env0Trust, jwks: JwksCache, clock: FrozenClock, size: int
) -> TokenValidator:
    """A validator trusting env0's issuer with a memo of ``size`` tokens."""
    return TokenValidator([env0.settings], jwks, clock, memo_size=size)


async def refused(validator: TokenValidator, token: str) -> InvalidToken:
    """Validate, expect an InvalidToken."""
    with pytest.raises(InvalidToken) as caught:
        await validator.validate_platform_token(token)
    return caught.value


async def test_a_repeated_token_is_not_verified_again(
    env0: Env0Trust, verifications: list[bytes]
) -> None:
    token = env0.mint()
    first = await env0.validator.validate_platform_token(token)
    second = await env0.validator.validate_platform_token(token)
    assert len(verifications) == 1
    assert second.claims == first.claims


async def test_a_remembered_token_validates_to_what_a_full_validation_returns(
    env0: Env0Trust, jwks: JwksCache, clock: FrozenClock, verifications: list[bytes]
) -> None:
    token = env0.mint()
    await env0.validator.validate_platform_token(token)
    remembered = await env0.validator.validate_platform_token(token)
    full = await validator_for(env0, jwks, clock, 0).validate_platform_token(token)
    assert len(verifications) == 2  # the first validation and the memo-less one
    assert remembered == full


async def test_a_remembered_token_that_expired_is_refused_with_token_expired(
    env0: Env0Trust, clock: FrozenClock, verifications: list[bytes]
) -> None:
    token = env0.mint(issued_at=NOW, lifetime_seconds=100)
    await env0.validator.validate_platform_token(token)
    clock.advance(100 + env0.settings.leeway_seconds)  # exp + leeway; the JWKS still fresh
    assert (await refused(env0.validator, token)).reason == "token_expired"
    assert len(verifications) == 1  # refused from the memo, as a fresh token would be


async def test_a_remembered_token_refused_on_a_hit_is_forgotten(
    env0: Env0Trust, clock: FrozenClock, verifications: list[bytes]
) -> None:
    token = env0.mint(issued_at=NOW, lifetime_seconds=100)
    await env0.validator.validate_platform_token(token)
    clock.advance(160)
    await refused(env0.validator, token)
    clock.advance(-160)
    await env0.validator.validate_platform_token(token)
    assert len(verifications) == 2


async def test_a_refused_token_is_not_remembered(
    env0: Env0Trust, clock: FrozenClock, verifications: list[bytes]
) -> None:
    token = env0.mint(claims={"nbf": int(NOW) + 100})
    assert (await refused(env0.validator, token)).reason == "token_not_yet_valid"
    clock.advance(100)
    await env0.validator.validate_platform_token(token)
    assert len(verifications) == 2


async def test_a_remembered_token_whose_key_left_the_jwks_is_refused_with_unknown_kid(
    env0: Env0Trust, jwks: JwksCache, clock: FrozenClock
) -> None:
    token = env0.mint()
    await env0.validator.validate_platform_token(token)
    env0.issuer.rotate("env0")
    env0.issuer.rotate("env0")  # the JWKS keeps two keys: the token's is gone now
    clock.advance(JWKS_FRESH_SECONDS + 1)
    # The stale key serves while the refresh runs behind it, then the cache lets go of it.
    await env0.validator.validate_platform_token(token)
    await jwks.settle(env0.settings)
    assert (await refused(env0.validator, token)).reason == "unknown_kid"


async def test_a_refetched_jwks_means_the_signature_is_checked_again(
    env0: Env0Trust, jwks: JwksCache, clock: FrozenClock, verifications: list[bytes]
) -> None:
    token = env0.mint()
    await env0.validator.validate_platform_token(token)
    clock.advance(JWKS_FRESH_SECONDS + 1)  # same keys, fetched again: new key objects
    await env0.validator.validate_platform_token(token)  # the stale key: the memo, a refresh
    await jwks.settle(env0.settings)
    await env0.validator.validate_platform_token(token)
    await env0.validator.validate_platform_token(token)
    assert env0.fetches() == 2
    assert len(verifications) == 2  # after the refetch, once; then the memo again


async def test_a_remembered_token_is_refused_when_its_kid_names_another_key(
    jwks_server: FakeJwksServer, jwks: JwksCache, clock: FrozenClock
) -> None:
    signer = rsa_key("k1")
    jwks_server.keys = [signer.as_dict(private=False)]
    jwks_server.cache_control = "max-age=60"
    settings = jwks_server.settings()
    validator = TokenValidator([settings], jwks, clock)
    claims = {
        "iss": settings.issuer,
        "aud": "broker",
        "sub": "someone",
        "org": "o",
        "iat": int(NOW),
        "exp": int(NOW) + 3600,
    }
    token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, signer, algorithms=["RS256"])
    await validator.validate_platform_token(token)
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    clock.advance(61)
    await jwks.key_for(settings, "k1")  # stale: serves, and refreshes behind
    await jwks.settle(settings)
    assert (await refused(validator, token)).reason == "signature_invalid"


async def test_a_token_differing_in_one_byte_is_not_accepted_from_the_memo(
    env0: Env0Trust, verifications: list[bytes]
) -> None:
    token = env0.mint()
    await env0.validator.validate_platform_token(token)
    header, payload, signature = token.split(".")
    # A byte in the middle: the last character may only carry padding bits.
    flipped = "A" if signature[20] != "A" else "B"
    tampered = f"{header}.{payload}.{signature[:20]}{flipped}{signature[21:]}"
    assert (await refused(env0.validator, tampered)).reason == "signature_invalid"
    assert len(verifications) == 2


async def test_the_memo_forgets_the_oldest_token_beyond_its_size(
    env0: Env0Trust, jwks: JwksCache, clock: FrozenClock, verifications: list[bytes]
) -> None:
    validator = validator_for(env0, jwks, clock, 2)
    first, second, third = env0.mint(), env0.mint(), env0.mint()
    for token in (first, second, third, second, third):
        await validator.validate_platform_token(token)
    assert len(verifications) == 3
    await validator.validate_platform_token(first)
    assert len(verifications) == 4


async def test_the_memo_keeps_the_recently_used_token(
    env0: Env0Trust, jwks: JwksCache, clock: FrozenClock, verifications: list[bytes]
) -> None:
    validator = validator_for(env0, jwks, clock, 2)
    first, second, third = env0.mint(), env0.mint(), env0.mint()
    for token in (first, second, first, third, first):
        await validator.validate_platform_token(token)
    assert len(verifications) == 3
    await validator.validate_platform_token(second)
    assert len(verifications) == 4


async def test_an_expired_token_is_dropped_from_the_memo_when_another_is_remembered(
    env0: Env0Trust, clock: FrozenClock
) -> None:
    expiring = env0.mint(issued_at=NOW, lifetime_seconds=100)
    await env0.validator.validate_platform_token(expiring)
    clock.advance(100 + env0.settings.leeway_seconds)
    later = env0.mint()
    await env0.validator.validate_platform_token(later)
    assert list(env0.validator._memo) == [hashlib.sha256(later.encode("ascii")).digest()]


async def test_memo_size_zero_verifies_every_time(
    env0: Env0Trust, jwks: JwksCache, clock: FrozenClock, verifications: list[bytes]
) -> None:
    validator = validator_for(env0, jwks, clock, 0)
    token = env0.mint()
    await validator.validate_platform_token(token)
    await validator.validate_platform_token(token)
    assert len(verifications) == 2


async def test_a_negative_memo_size_is_refused(
    env0: Env0Trust, jwks: JwksCache, clock: FrozenClock
) -> None:
    with pytest.raises(ValueError, match="memo_size"):
        validator_for(env0, jwks, clock, -1)


async def test_the_memo_holds_the_tokens_digest_not_the_token(env0: Env0Trust) -> None:
    token = env0.mint()
    await env0.validator.validate_platform_token(token)
    # What the memo retains is the behaviour under test, so its internals are read here.
    assert list(env0.validator._memo) == [hashlib.sha256(token.encode("ascii")).digest()]
    retained = repr(vars(env0.validator))
    for piece in (token, *token.split(".")):
        assert piece not in retained
