"""JwksCache: fetching, caching, refetching, failing safe — against real servers and keys."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import OctKey, RSAKey
from pytest_aiohttp import AiohttpServer

from tests.identity.conftest import Env0Trust, FakeJwksServer, MakeEnv0, rsa_key
from tokenbroker.clock import FrozenClock
from tokenbroker.errors import InvalidToken, TemporarilyUnavailable
from tokenbroker.identity.jwks import (
    MAX_DOCUMENT_BYTES,
    JwksCache,
    JwksNeverFetched,
    cache_seconds,
)
from tokenbroker.metrics import Metrics


def fetches(metrics: Metrics, outcome: str, issuer: str = "fake") -> float:
    """JWKS fetches of ``issuer`` that ended with ``outcome``."""
    value = metrics.registry.get_sample_value(
        "tokenbroker_jwks_fetches_total", {"issuer": issuer, "outcome": outcome}
    )
    return value or 0.0


def cache_count(metrics: Metrics, kind: str) -> float:
    """JWKS cache hits or misses."""
    value = metrics.registry.get_sample_value(f"tokenbroker_cache_{kind}_total", {"cache": "jwks"})
    return value or 0.0


# -- through the validator, with the dev issuer ----------------------------------------------


async def test_tokens_keep_validating_when_the_jwks_server_goes_down(
    env0: Env0Trust, jwks: JwksCache, clock: FrozenClock
) -> None:
    await env0.validator.validate_platform_token(env0.mint())
    await env0.issuer.stop()
    clock.advance(3 * 3600)  # far past any cache lifetime
    await env0.validator.validate_platform_token(env0.mint())
    await env0.validator.validate_platform_token(env0.mint())
    await jwks.settle(env0.settings)
    assert env0.fetches("ok") == 1
    # One failed attempt, then the failure is remembered instead of hammering the endpoint.
    assert env0.fetches("unreachable") == 1


async def test_a_rotated_issuer_key_is_picked_up_by_its_new_kid(
    env0: Env0Trust, clock: FrozenClock
) -> None:
    old_token = env0.mint()
    await env0.validator.validate_platform_token(old_token)
    clock.advance(env0.settings.jwks_refetch_interval_seconds)
    new_kid = env0.issuer.rotate("env0")
    new_token = env0.mint()
    validated = await env0.validator.validate_platform_token(new_token)
    assert validated.header["kid"] == new_kid
    assert env0.fetches() == 2
    # The old key is still published, so tokens signed just before the rotation still verify.
    await env0.validator.validate_platform_token(old_token)


async def test_unknown_kid_refetches_at_most_once_per_interval(
    env0: Env0Trust, clock: FrozenClock
) -> None:
    await env0.validator.validate_platform_token(env0.mint())
    clock.advance(env0.settings.jwks_refetch_interval_seconds)
    env0.issuer.rotate("env0")
    # The first unknown kid after the interval refetches and finds the new key...
    await env0.validator.validate_platform_token(env0.mint())
    assert env0.fetches() == 2
    # ...but a kid that appears right after that refetch waits for the next interval.
    env0.issuer.rotate("env0")
    newer = env0.mint()
    with pytest.raises(InvalidToken) as caught:
        await env0.validator.validate_platform_token(newer)
    assert caught.value.reason == "unknown_kid"
    with pytest.raises(InvalidToken):
        await env0.validator.validate_platform_token(newer)
    assert env0.fetches() == 2
    clock.advance(env0.settings.jwks_refetch_interval_seconds - 1)
    with pytest.raises(InvalidToken):
        await env0.validator.validate_platform_token(newer)
    assert env0.fetches() == 2
    clock.advance(1)
    await env0.validator.validate_platform_token(newer)
    assert env0.fetches() == 3


async def test_made_up_kids_cause_one_refetch_per_interval(env0: Env0Trust) -> None:
    await env0.validator.validate_platform_token(env0.mint())
    for attempt in range(20):
        other = rsa_key(f"made-up-{attempt}")
        token = jwt.encode(
            {"alg": "RS256", "kid": other.kid}, env0.claims(), other, algorithms=["RS256"]
        )
        with pytest.raises(InvalidToken) as caught:
            await env0.validator.validate_platform_token(token)
        assert caught.value.reason == "unknown_kid"
    assert env0.fetches() == 1


async def test_keys_are_found_through_oidc_discovery(env0: Env0Trust) -> None:
    assert env0.settings.jwks_uri is None
    await env0.validator.validate_platform_token(env0.mint())
    assert env0.fetches() == 1


async def test_an_explicit_jwks_uri_is_used_as_is(make_env0: MakeEnv0, env0: Env0Trust) -> None:
    trust = make_env0(jwks_uri=env0.issuer.jwks_url("env0"))
    await trust.validator.validate_platform_token(trust.mint())


async def test_circleci_discovery_per_org_issuer(
    env0: Env0Trust, jwks: JwksCache, clock: FrozenClock
) -> None:
    from tokenbroker.identity.validator import TokenValidator

    settings = env0.issuer.issuer_settings("circleci", org="org-a")
    validator = TokenValidator([settings], jwks, clock)
    token = env0.issuer.mint("circleci", org="org-a", project="p")
    validated = await validator.validate_platform_token(token)
    assert validated.claims["iss"] == settings.issuer


async def test_cache_hits_and_misses_are_counted(env0: Env0Trust) -> None:
    for _ in range(3):
        await env0.validator.validate_platform_token(env0.mint())
    assert cache_count(env0.metrics, "misses") == 1
    assert cache_count(env0.metrics, "hits") == 2


# -- the cache alone, against a scriptable server --------------------------------------------


async def test_cached_keys_are_reused_until_max_age(
    jwks_server: FakeJwksServer, jwks: JwksCache, clock: FrozenClock
) -> None:
    key = rsa_key("k1")
    jwks_server.keys = [key.as_dict(private=False)]
    jwks_server.cache_control = "public, max-age=120"
    settings = jwks_server.settings()
    await jwks.key_for(settings, "k1")
    clock.advance(119)
    await jwks.key_for(settings, "k1")
    assert jwks_server.count() == 1
    clock.advance(1)
    await jwks.key_for(settings, "k1")
    await jwks.settle(settings)
    assert jwks_server.count() == 2


@pytest.mark.parametrize(
    ("cache_control", "expected"),
    [
        (None, 3600.0),
        ("max-age=5", 60.0),
        ("public, max-age=600", 600.0),
        ("max-age=999999", 3600.0),
        ("no-store", 60.0),
        ("public", 3600.0),
    ],
)
def test_cache_lifetime_is_max_age_within_bounds(
    jwks_server: FakeJwksServer, cache_control: str | None, expected: float
) -> None:
    assert cache_seconds(cache_control, jwks_server.settings()) == expected


async def test_an_empty_key_set_is_never_cached(
    jwks_server: FakeJwksServer, jwks: JwksCache, clock: FrozenClock, metrics: Metrics
) -> None:
    settings = jwks_server.settings()
    with pytest.raises(TemporarilyUnavailable) as caught:
        await jwks.key_for(settings, "k1")
    assert caught.value.reason == "jwks_unavailable"
    assert fetches(metrics, "empty") == 1
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    clock.advance(settings.jwks_refetch_interval_seconds)
    await jwks.key_for(settings, "k1")
    assert fetches(metrics, "ok") == 1


async def test_an_empty_key_set_does_not_replace_cached_keys(
    jwks_server: FakeJwksServer, jwks: JwksCache, clock: FrozenClock, metrics: Metrics
) -> None:
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    settings = jwks_server.settings()
    await jwks.key_for(settings, "k1")
    jwks_server.keys = []
    clock.advance(settings.jwks_cache_seconds)
    await jwks.key_for(settings, "k1")
    await jwks.settle(settings)
    assert fetches(metrics, "empty") == 1
    await jwks.key_for(settings, "k1")


async def test_symmetric_and_weak_keys_in_a_jwks_are_ignored(
    jwks_server: FakeJwksServer, jwks: JwksCache
) -> None:
    oct_key = OctKey.generate_key(256, parameters={"kid": "shared"})
    with pytest.warns(SecurityWarning):
        weak = RSAKey.generate_key(1024, parameters={"kid": "weak"})
    jwks_server.keys = [oct_key.as_dict(private=True), weak.as_dict(private=False)]
    with pytest.raises(TemporarilyUnavailable):
        await jwks.key_for(jwks_server.settings(), "shared")


async def test_keys_for_encryption_are_ignored(
    jwks_server: FakeJwksServer, jwks: JwksCache
) -> None:
    enc = rsa_key("enc").as_dict(private=False)
    jwks_server.keys = [{**enc, "use": "enc"}, rsa_key("sig").as_dict(private=False)]
    settings = jwks_server.settings()
    await jwks.key_for(settings, "sig")
    with pytest.raises(InvalidToken):
        await jwks.key_for(settings, "enc")


async def test_an_oversized_jwks_is_refused(
    jwks_server: FakeJwksServer, jwks: JwksCache, metrics: Metrics
) -> None:
    jwks_server.body = json.dumps({"keys": [], "pad": "x" * MAX_DOCUMENT_BYTES}).encode()
    with pytest.raises(TemporarilyUnavailable):
        await jwks.key_for(jwks_server.settings(), "k1")
    assert fetches(metrics, "too_large") == 1


async def test_an_oversized_jwks_without_content_length_is_cut_off(
    jwks_server: FakeJwksServer, jwks: JwksCache, metrics: Metrics
) -> None:
    key = rsa_key("k1").as_dict(private=False)
    jwks_server.stream_body = json.dumps({"keys": [key], "pad": "x" * MAX_DOCUMENT_BYTES}).encode()
    with pytest.raises(TemporarilyUnavailable):
        await jwks.key_for(jwks_server.settings(), "k1")
    assert fetches(metrics, "too_large") == 1


async def test_a_small_streamed_jwks_is_read_whole(
    jwks_server: FakeJwksServer, jwks: JwksCache
) -> None:
    key = rsa_key("k1").as_dict(private=False)
    jwks_server.stream_body = json.dumps({"keys": [key]}).encode()
    await jwks.key_for(jwks_server.settings(), "k1")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/html", b"<html>maintenance</html>"), ("application/json", b"<html>oops</html>")],
)
async def test_a_non_json_jwks_is_refused(
    jwks_server: FakeJwksServer,
    jwks: JwksCache,
    metrics: Metrics,
    content_type: str,
    body: bytes,
) -> None:
    jwks_server.content_type = content_type
    jwks_server.body = body
    with pytest.raises(TemporarilyUnavailable):
        await jwks.key_for(jwks_server.settings(), "k1")
    assert fetches(metrics, "not_json") == 1


async def test_an_error_status_is_a_failed_fetch(
    jwks_server: FakeJwksServer, jwks: JwksCache, metrics: Metrics
) -> None:
    jwks_server.status = 503
    with pytest.raises(TemporarilyUnavailable):
        await jwks.key_for(jwks_server.settings(), "k1")
    assert fetches(metrics, "http_status") == 1


async def test_a_failed_first_fetch_is_not_retried_until_the_interval_passes(
    jwks_server: FakeJwksServer, jwks: JwksCache, clock: FrozenClock
) -> None:
    jwks_server.status = 503
    settings = jwks_server.settings()
    for _ in range(3):
        with pytest.raises(TemporarilyUnavailable):
            await jwks.key_for(settings, "k1")
    assert jwks_server.count() == 1
    jwks_server.status = 200
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    clock.advance(settings.jwks_refetch_interval_seconds)
    await jwks.key_for(settings, "k1")
    assert jwks_server.count() == 2


async def test_redirects_are_not_followed(
    aiohttp_server: AiohttpServer,
    jwks_server: FakeJwksServer,
    jwks: JwksCache,
    metrics: Metrics,
) -> None:
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(jwks_server.jwks_uri)

    app = web.Application()
    app.router.add_get("/jwks.json", redirect)
    redirector = await aiohttp_server(app)
    settings = jwks_server.settings(jwks_uri=str(redirector.make_url("/jwks.json")))
    with pytest.raises(TemporarilyUnavailable):
        await jwks.key_for(settings, "k1")
    assert jwks_server.count() == 0
    assert fetches(metrics, "http_status") == 1


async def test_concurrent_misses_share_one_fetch(
    jwks_server: FakeJwksServer, jwks: JwksCache
) -> None:
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    jwks_server.gate = asyncio.Event()
    settings = jwks_server.settings()
    lookups = [asyncio.create_task(jwks.key_for(settings, "k1")) for _ in range(10)]
    await jwks_server.arrived.wait()
    jwks_server.gate.set()
    keys = await asyncio.gather(*lookups)
    assert jwks_server.count() == 1
    assert all(key is keys[0] for key in keys)


async def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch(
    jwks_server: FakeJwksServer, jwks: JwksCache
) -> None:
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    jwks_server.gate = asyncio.Event()
    settings = jwks_server.settings()
    first = asyncio.create_task(jwks.key_for(settings, "k1"))
    second = asyncio.create_task(jwks.key_for(settings, "k1"))
    await jwks_server.arrived.wait()
    first.cancel()
    jwks_server.gate.set()
    await second
    assert first.cancelled()
    assert jwks_server.count() == 1


async def test_discovery_naming_another_issuer_is_refused(
    jwks_server: FakeJwksServer, jwks: JwksCache, metrics: Metrics
) -> None:
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    jwks_server.discovery = {"issuer": "https://evil.example", "jwks_uri": jwks_server.jwks_uri}
    with pytest.raises(TemporarilyUnavailable):
        await jwks.key_for(jwks_server.settings(jwks_uri=None), "k1")
    assert fetches(metrics, "discovery_mismatch") == 1
    assert jwks_server.count() == 0


async def test_discovery_pointing_at_an_untrusted_jwks_uri_is_refused(
    jwks_server: FakeJwksServer, jwks: JwksCache, metrics: Metrics
) -> None:
    jwks_server.discovery = {
        "issuer": jwks_server.base_url,
        "jwks_uri": "http://keys.example.com/jwks.json",
    }
    with pytest.raises(TemporarilyUnavailable):
        await jwks.key_for(jwks_server.settings(jwks_uri=None), "k1")
    assert fetches(metrics, "untrusted_url") == 1


async def test_discovery_path_fetches_the_discovered_jwks(
    jwks_server: FakeJwksServer, jwks: JwksCache
) -> None:
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    await jwks.key_for(jwks_server.settings(jwks_uri=None), "k1")
    assert jwks_server.count("/.well-known/openid-configuration") == 1
    assert jwks_server.count() == 1


async def test_an_unreachable_endpoint_is_an_upstream_error(
    jwks_server: FakeJwksServer, jwks: JwksCache, metrics: Metrics
) -> None:
    settings = jwks_server.settings()
    assert jwks_server.server is not None
    await jwks_server.server.close()
    with pytest.raises(TemporarilyUnavailable) as caught:
        await jwks.key_for(settings, "k1")
    assert caught.value.reason == "jwks_unavailable"
    assert fetches(metrics, "unreachable") == 1


async def test_aclose_cancels_a_fetch_in_flight(
    jwks_server: FakeJwksServer, http: aiohttp.ClientSession, clock: FrozenClock
) -> None:
    cache = JwksCache(http, clock)
    jwks_server.gate = asyncio.Event()
    lookup = asyncio.create_task(cache.key_for(jwks_server.settings(), "k1"))
    await jwks_server.arrived.wait()
    await cache.aclose()
    with pytest.raises(asyncio.CancelledError):
        await lookup
    jwks_server.gate.set()


# -- outages: a hanging or down endpoint -----------------------------------------------------


async def test_a_cached_kid_answers_while_the_endpoint_hangs(
    jwks_server: FakeJwksServer, jwks: JwksCache, clock: FrozenClock
) -> None:
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    settings = jwks_server.settings()
    cached = await jwks.key_for(settings, "k1")
    jwks_server.gate = asyncio.Event()
    jwks_server.arrived.clear()
    clock.advance(settings.jwks_cache_seconds)  # stale: the next lookup refreshes
    # Far below the session's 5 s timeout a blocked lookup would wait for.
    async with asyncio.timeout(2):
        assert await jwks.key_for(settings, "k1") is cached
        await jwks_server.arrived.wait()  # the refresh did start, in the background
    jwks_server.gate.set()
    await jwks.aclose()


async def test_lookups_during_a_hang_share_one_background_fetch(
    jwks_server: FakeJwksServer, jwks: JwksCache, clock: FrozenClock
) -> None:
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    settings = jwks_server.settings()
    await jwks.key_for(settings, "k1")
    jwks_server.gate = asyncio.Event()
    jwks_server.arrived.clear()
    clock.advance(settings.jwks_cache_seconds)
    async with asyncio.timeout(2):
        for _ in range(20):
            await jwks.key_for(settings, "k1")
            clock.advance(1)
        await jwks_server.arrived.wait()
    assert jwks_server.count() == 2
    jwks_server.gate.set()
    await jwks.settle(settings)
    assert jwks_server.count() == 2


async def test_an_unknown_kid_while_the_endpoint_is_down_is_temporarily_unavailable(
    jwks_server: FakeJwksServer, jwks: JwksCache, clock: FrozenClock
) -> None:
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    settings = jwks_server.settings()
    await jwks.key_for(settings, "k1")
    assert jwks_server.server is not None
    await jwks_server.server.close()
    clock.advance(settings.jwks_refetch_interval_seconds)
    for _ in range(2):  # the failed refetch, then the backoff after it
        with pytest.raises(TemporarilyUnavailable) as caught:
            await jwks.key_for(settings, "k2")
        assert caught.value.reason == "jwks_unavailable"
        assert caught.value.retry_after >= 1
    # The kid the cache has still serves.
    await jwks.key_for(settings, "k1")


async def test_an_unknown_kid_is_still_refused_while_the_endpoint_answers(
    jwks_server: FakeJwksServer, jwks: JwksCache, clock: FrozenClock
) -> None:
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    settings = jwks_server.settings()
    await jwks.key_for(settings, "k1")
    clock.advance(settings.jwks_refetch_interval_seconds)
    with pytest.raises(InvalidToken) as caught:
        await jwks.key_for(settings, "k2")
    assert caught.value.reason == "unknown_kid"


async def test_a_cached_key_stops_serving_past_jwks_max_stale_seconds(
    jwks_server: FakeJwksServer, jwks: JwksCache, clock: FrozenClock
) -> None:
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    settings = jwks_server.settings(jwks_cache_seconds=600, jwks_max_stale_seconds=900)
    await jwks.key_for(settings, "k1")
    assert jwks_server.server is not None
    await jwks_server.server.close()
    clock.advance(600 + 899)
    await jwks.key_for(settings, "k1")
    await jwks.settle(settings)
    clock.advance(1)
    with pytest.raises(TemporarilyUnavailable) as caught:
        await jwks.key_for(settings, "k1")
    assert caught.value.reason == "jwks_unavailable"


def test_jwks_max_stale_seconds_defaults_to_a_day(jwks_server: FakeJwksServer) -> None:
    assert jwks_server.settings().jwks_max_stale_seconds == 86400


async def test_require_fetched_names_an_issuer_never_fetched(
    jwks_server: FakeJwksServer, jwks: JwksCache
) -> None:
    settings = jwks_server.settings()
    assert jwks_server.server is not None
    await jwks_server.server.close()
    with pytest.raises(JwksNeverFetched, match="'fake'"):
        await jwks.require_fetched(settings, wait_seconds=2)


async def test_require_fetched_fetches_and_then_passes(
    jwks_server: FakeJwksServer, jwks: JwksCache
) -> None:
    jwks_server.keys = [rsa_key("k1").as_dict(private=False)]
    await jwks.require_fetched(jwks_server.settings(), wait_seconds=2)
    assert jwks_server.count() == 1
