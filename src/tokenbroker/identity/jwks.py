"""The JWKS cache: each trusted issuer's verification keys, fetched with aiohttp and kept warm.

Keys come from the issuer's ``jwks_uri`` or, when unset, from its OIDC discovery document.
A key set is fresh for the issuer's ``Cache-Control: max-age`` bounded to
``[60 s, jwks_cache_seconds]``. How an exchange waits on the endpoint:

- A cached ``kid`` never waits. Once its set is past its lifetime, the key still serves for up
  to ``jwks_max_stale_seconds`` while a refresh runs in the background; past that it no longer
  serves and the lookup waits for a fetch, like an issuer never fetched.
- One fetch per issuer is in flight at a time; every lookup that needs it shares it.
- An unknown ``kid`` triggers at most one refetch per ``jwks_refetch_interval_seconds``. While
  the endpoint is failing, an unknown ``kid`` is TemporarilyUnavailable (the issuer may have
  rotated to it), not a refusal; so is an issuer whose keys were never fetched.

Responses are size-capped and must be JSON; an empty key set is never cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key, RSAKey

from tokenbroker.clock import Clock
from tokenbroker.config.models import IssuerSettings
from tokenbroker.config.urls import require_trusted_url
from tokenbroker.errors import InvalidToken, TemporarilyUnavailable
from tokenbroker.metrics import Metrics

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 256 * 1024
MIN_CACHE_SECONDS = 60
MIN_RSA_BITS = 2048
# Only asymmetric key types: a symmetric ("oct") key in a JWKS would be a published secret.
_ACCEPTED_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
_MAX_AGE = re.compile(r"max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_NO_CACHE = re.compile(r"\bno-(?:store|cache)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """One fetched key set, imported into joserfc keys once, indexed by ``kid``."""

    by_kid: Mapping[str, Key]
    keys: tuple[Key, ...]

    def find(self, kid: str | None) -> Key | None:
        """The key for ``kid``; a token without ``kid`` only matches a set of exactly one key."""
        if kid is None:
            return self.keys[0] if len(self.keys) == 1 else None
        return self.by_kid.get(kid)


class JwksFetchError(Exception):
    """A JWKS or discovery fetch failed; ``outcome`` is the metrics label."""

    def __init__(self, outcome: str, description: str) -> None:
        super().__init__(description)
        self.outcome = outcome
        self.description = description


class JwksNeverFetched(Exception):
    """Readiness: an issuer's keys have never been fetched, so its tokens cannot be checked."""


@dataclass(slots=True)
class _Entry:
    keys: PublicKeys | None = None
    expires_at: float = -math.inf
    last_fetch_at: float = -math.inf
    retry_at: float = -math.inf
    last_error: str = ""


def parse_jwks(document: Mapping[str, object]) -> PublicKeys:
    """Import the usable signing keys of a JWKS document; raise JwksFetchError when none are."""
    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list):
        raise JwksFetchError("invalid", "the JWKS has no 'keys' list")
    by_kid: dict[str, Key] = {}
    keys: list[Key] = []
    for raw in raw_keys:
        key = _import_signing_key(raw)
        if key is None:
            continue
        kid = raw.get("kid")
        if isinstance(kid, str):
            if kid in by_kid:
                continue
            by_kid[kid] = key
        keys.append(key)
    if not keys:
        raise JwksFetchError("empty", "the JWKS holds no usable signing key")
    return PublicKeys(by_kid=by_kid, keys=tuple(keys))


def _import_signing_key(raw: object) -> Key | None:
    if not isinstance(raw, dict) or raw.get("kty") not in _ACCEPTED_KEY_TYPES:
        return None
    if raw.get("use", "sig") != "sig" or ("kid" in raw and not isinstance(raw["kid"], str)):
        return None
    modulus = raw.get("n")
    if isinstance(modulus, str) and len(modulus) * 6 < MIN_RSA_BITS - 8:
        return None  # refused before joserfc imports it (and warns about its size)
    try:
        key = JWKRegistry.import_key(raw)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    if isinstance(key, RSAKey) and key.public_key.key_size < MIN_RSA_BITS:
        return None
    return key


def cache_seconds(cache_control: str | None, issuer: IssuerSettings) -> float:
    """How long to keep a key set: the response's max-age bounded to [60 s, the issuer's cap]."""
    ceiling = issuer.jwks_cache_seconds
    floor = min(MIN_CACHE_SECONDS, ceiling)
    if not cache_control:
        return float(ceiling)
    if _NO_CACHE.search(cache_control):
        return float(floor)
    match = _MAX_AGE.search(cache_control)
    if match is None:
        return float(ceiling)
    return float(max(floor, min(int(match.group(1)), ceiling)))


class JwksCache:
    """Per-issuer JWKS cache; one instance per application, shared by every request."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        clock: Clock,
        metrics: Metrics | None = None,
        *,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
        allow_private_backends: bool = False,
    ) -> None:
        self._http = http
        # [security]'s policy for jwks_uri values found through discovery.
        self._allow_private = allow_private_backends
        self._clock = clock
        self._metrics = metrics
        self._max_bytes = max_document_bytes
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}

    async def key_for(self, issuer: IssuerSettings, kid: str | None) -> Key:
        """The issuer's verification key for ``kid``, fetching the key set when needed.

        Raises InvalidToken ``unknown_kid`` when the key is not published (after at most one
        rate-limited refetch) and TemporarilyUnavailable ``jwks_unavailable`` when the keys
        cannot be fetched and none that may serve is cached for ``kid``.
        """
        entry = self._entry(issuer)
        now = self._clock.now()
        if entry.keys is not None and now < _serves_until(issuer, entry):
            key = entry.keys.find(kid)
            if key is not None:
                self._count_lookup(hit=True)
                if now >= entry.expires_at:
                    self._refresh_in_background(issuer, entry, now)
                return key
            if issuer.name not in self._inflight:
                if now < entry.retry_at:
                    # The endpoint is failing: the issuer may well have rotated to this kid.
                    raise _unavailable(issuer, entry, now)
                # The issuer may have rotated its keys; look again, but only so often, so a
                # stream of made-up kids cannot turn us into a load generator against it.
                if now - entry.last_fetch_at < issuer.jwks_refetch_interval_seconds:
                    raise _unknown_kid(issuer, kid)
        elif now < entry.retry_at and issuer.name not in self._inflight:
            raise _unavailable(issuer, entry, now)
        self._count_lookup(hit=False)
        await asyncio.shield(self._start_fetch(issuer, entry))
        now = self._clock.now()
        if entry.keys is None or now >= _serves_until(issuer, entry):
            raise _unavailable(issuer, entry, now)
        key = entry.keys.find(kid)
        if key is None:
            if now < entry.retry_at:
                raise _unavailable(issuer, entry, now)
            raise _unknown_kid(issuer, kid)
        return key

    async def require_fetched(self, issuer: IssuerSettings, wait_seconds: float) -> None:
        """Readiness: raise JwksNeverFetched unless the issuer's keys were fetched at least once.

        A fetch is started (or joined) and awaited for at most ``wait_seconds``.
        """
        entry = self._entry(issuer)
        if entry.keys is None:
            self._refresh_in_background(issuer, entry, self._clock.now())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_seconds):
                    await self.settle(issuer)
        if entry.keys is None:
            raise JwksNeverFetched(
                f"the keys of issuer {issuer.name!r} were never fetched: {entry.last_error}"
            )

    async def settle(self, issuer: IssuerSettings) -> None:
        """Wait until the issuer's fetch in flight, if any (a background refresh too), is done."""
        task = self._inflight.get(issuer.name)
        if task is not None:
            await asyncio.shield(task)

    async def aclose(self) -> None:
        """Cancel fetches still in flight (at application shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _entry(self, issuer: IssuerSettings) -> _Entry:
        entry = self._entries.get(issuer.name)
        if entry is None:
            entry = self._entries[issuer.name] = _Entry()
        return entry

    def _refresh_in_background(self, issuer: IssuerSettings, entry: _Entry, now: float) -> None:
        # After a failure the endpoint is left alone for the refetch interval, so a hanging
        # or failing issuer costs one request per interval, not one per exchange.
        if issuer.name not in self._inflight and now >= entry.retry_at:
            self._start_fetch(issuer, entry)

    def _start_fetch(self, issuer: IssuerSettings, entry: _Entry) -> asyncio.Task[None]:
        # Lookups share one fetch per issuer. Callers await it shielded, so a waiter that is
        # cancelled (client went away) does not cancel the fetch for the others.
        task = self._inflight.get(issuer.name)
        if task is None:
            task = asyncio.create_task(self._fetch_into(issuer, entry))
            self._inflight[issuer.name] = task
            task.add_done_callback(lambda _: self._inflight.pop(issuer.name, None))
        return task

    async def _fetch_into(self, issuer: IssuerSettings, entry: _Entry) -> None:
        started = self._clock.now()
        entry.last_fetch_at = started
        try:
            keys, cache_control = await self._fetch(issuer)
        except JwksFetchError as exc:
            entry.retry_at = started + issuer.jwks_refetch_interval_seconds
            entry.last_error = exc.description
            self._count_fetch(issuer, exc.outcome)
            log.warning(
                "JWKS fetch failed for issuer %s (%s): %s%s",
                issuer.name,
                exc.outcome,
                exc.description,
                "; serving cached keys" if entry.keys is not None else "",
            )
            return
        entry.keys = keys
        entry.expires_at = started + cache_seconds(cache_control, issuer)
        entry.retry_at = -math.inf
        entry.last_error = ""
        self._count_fetch(issuer, "ok")

    async def _fetch(self, issuer: IssuerSettings) -> tuple[PublicKeys, str | None]:
        jwks_uri = issuer.jwks_uri or await self._discover(issuer)
        document, cache_control = await self._get_json(jwks_uri)
        return parse_jwks(document), cache_control

    async def _discover(self, issuer: IssuerSettings) -> str:
        url = issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document, _ = await self._get_json(url)
        # A discovery document speaking for another issuer must not hand us its keys.
        if document.get("issuer") != issuer.issuer:
            raise JwksFetchError(
                "discovery_mismatch", "the discovery document names a different issuer"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise JwksFetchError("invalid", "the discovery document has no jwks_uri")
        try:
            return require_trusted_url(jwks_uri, allow_private=self._allow_private)
        except ValueError as exc:
            raise JwksFetchError("untrusted_url", f"discovered jwks_uri: {exc}") from None

    async def _get_json(self, url: str) -> tuple[dict[str, object], str | None]:
        try:
            # Redirects are not followed: the URL was checked, wherever it points was not.
            async with self._http.get(
                url, allow_redirects=False, headers={"Accept": "application/json"}
            ) as response:
                if response.status != 200:
                    raise JwksFetchError("http_status", f"GET {url}: HTTP {response.status}")
                if "json" not in response.content_type:
                    raise JwksFetchError("not_json", f"GET {url}: not a JSON response")
                if (response.content_length or 0) > self._max_bytes:
                    raise _too_large(url, self._max_bytes)
                body = bytearray()
                async for chunk in response.content.iter_chunked(16 * 1024):
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise _too_large(url, self._max_bytes)
                cache_control = response.headers.get("Cache-Control")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JwksFetchError("unreachable", f"GET {url}: {type(exc).__name__}") from None
        try:
            document = json.loads(body)
        except ValueError:
            raise JwksFetchError("not_json", f"GET {url}: not a JSON document") from None
        if not isinstance(document, dict):
            raise JwksFetchError("invalid", f"GET {url}: not a JSON object")
        return document, cache_control

    def _count_fetch(self, issuer: IssuerSettings, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.jwks_fetches.labels(issuer=issuer.name, outcome=outcome).inc()

    def _count_lookup(self, *, hit: bool) -> None:
        if self._metrics is not None:
            metrics = self._metrics
            (metrics.jwks_cache_hits if hit else metrics.jwks_cache_misses).inc()


def _too_large(url: str, limit: int) -> JwksFetchError:
    return JwksFetchError("too_large", f"GET {url}: response over {limit} bytes")


def _unknown_kid(issuer: IssuerSettings, kid: str | None) -> InvalidToken:
    shown = repr(kid[:64]) if kid is not None else "(none)"
    return InvalidToken("unknown_kid", f"issuer {issuer.name!r} publishes no key with kid {shown}")


def _serves_until(issuer: IssuerSettings, entry: _Entry) -> float:
    return entry.expires_at + issuer.jwks_max_stale_seconds


def _unavailable(issuer: IssuerSettings, entry: _Entry, now: float) -> TemporarilyUnavailable:
    # Retry once the next fetch may be tried; a fetch may also just have failed (or be running).
    return TemporarilyUnavailable(
        "jwks_unavailable",
        f"the keys of issuer {issuer.name!r} cannot be fetched: {entry.last_error}",
        retry_after=max(1, math.ceil(entry.retry_at - now)) if entry.retry_at > now else 1,
    )
