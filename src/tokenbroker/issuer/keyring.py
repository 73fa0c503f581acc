"""The key ring: the issuer's keys in memory, one active for signing, all published.

Rotation keeps the old key published as ``retiring`` for ``signing.retire_after_seconds``
(longer than any token lifetime), so a token signed just before a rotation still verifies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from joserfc import jwk, jws

from tokenbroker.clock import Clock
from tokenbroker.config.models import SigningSettings
from tokenbroker.issuer.keys import (
    KeyStore,
    KeyStoreError,
    SigningKey,
    generate_signing_key,
    import_signing_key,
)

log = logging.getLogger(__name__)

SigningJwk = jwk.ECKey | jwk.RSAKey


class KeyRing:
    """The issuer's signing keys, loaded from a :class:`KeyStore`; build with :meth:`open`."""

    def __init__(self, store: KeyStore, signing: SigningSettings, clock: Clock) -> None:
        self._store = store
        self._signing = signing
        self._clock = clock
        self._lock = asyncio.Lock()
        self._keys: tuple[SigningKey, ...] = ()
        self._active: SigningKey | None = None
        # Parsed joserfc keys by kid, so neither minting nor a reload re-imports key material.
        self._imported: dict[str, SigningJwk] = {}

    def __repr__(self) -> str:
        active = self._active.kid if self._active else None
        return f"KeyRing(active={active!r}, keys={len(self._keys)})"

    @classmethod
    async def open(cls, store: KeyStore, signing: SigningSettings, clock: Clock) -> KeyRing:
        """Load the stored keys, generating and saving a first key (or one of a newly configured
        algorithm) when needed, and dropping retiring keys whose publication period is over.

        Instances opening together on one empty store end with the same single active key.
        """
        ring = cls(store, signing, clock)
        async with ring._lock:
            now = ring._now()
            # Made before taking the store's lock, so generation never holds it; unused (and
            # dropped) when the store already has a usable active key.
            candidate = await _generated(signing, now)
            keys = await store.update(
                lambda stored: opened_keys(stored, candidate, now, signing.retire_after_seconds)
            )
            ring._install(keys)
        return ring

    @property
    def active(self) -> SigningKey:
        """The key new tokens are signed with."""
        assert self._active is not None, "KeyRing is built by KeyRing.open"
        return self._active

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """Every key held, active first, then retiring ones newest first."""
        return self._keys

    def signer(self) -> tuple[SigningKey, SigningJwk]:
        """The active key and its joserfc key, together, so a reload cannot split them."""
        active = self.active
        return active, self._imported[active.kid]

    def jwks(self) -> dict[str, object]:
        """The JWK Set to publish: the active key and retiring keys still in their period."""
        now = self._now()
        published = _without_expired(self._keys, now, self._signing.retire_after_seconds)
        return {"keys": [key.public_jwk() for key in published]}

    def algorithms(self) -> list[str]:
        """The algorithms of the published keys, sorted, for the discovery document."""
        return sorted({key.algorithm for key in self._keys})

    async def rotate(self) -> SigningKey:
        """Make a new active key, retire the current one (published for its period); save both.

        Concurrent rotations (other instances, ``tokenbroker keys rotate``) take turns in the
        store, so each one's new key is kept: at most the newest stays active.
        """
        async with self._lock:
            now = self._now()
            fresh = await _generated(self._signing, now)
            keys = await self._store.update(
                lambda stored: rotated_keys(stored, fresh, now, self._signing.retire_after_seconds)
            )
            self._install(keys)
            return self.active

    async def reload(self) -> None:
        """Pick up keys another process saved (``tokenbroker keys rotate``, other instances)."""
        async with self._lock:
            stored = await self._store.load()
            keys = _without_expired(stored, self._now(), self._signing.retire_after_seconds)
            if _newest_active(keys) is None:
                # Keep signing with what we hold rather than publish a ring that cannot sign.
                raise KeyStoreError("the key store holds no active signing key")
            self._install(keys)

    async def refresh_forever(self, interval_seconds: float) -> None:
        """Reload every ``interval_seconds`` until cancelled; a failed reload keeps the old keys."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.reload()
            except KeyStoreError as exc:
                log.warning("signing key reload failed: %s", exc)

    async def check(self) -> None:
        """Readiness: the active key can sign (raises otherwise)."""
        key, signer = self.signer()
        jws.serialize_compact({"alg": key.algorithm}, b"readiness", signer, [key.algorithm])

    def _install(self, keys: Sequence[SigningKey]) -> None:
        active = _newest_active(keys)
        if active is None:
            raise KeyStoreError("no active signing key")
        imported = {k.kid: self._imported.get(k.kid) or import_signing_key(k) for k in keys}
        retiring = sorted(
            (k for k in keys if k.kid != active.kid), key=lambda k: k.created_at, reverse=True
        )
        self._keys = (active, *retiring)
        self._imported = imported
        self._active = active

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), tz=UTC)


def _newest_active(keys: Sequence[SigningKey]) -> SigningKey | None:
    active = [k for k in keys if k.state == "active"]
    return max(active, key=lambda k: k.created_at) if active else None


def _without_expired(
    keys: Sequence[SigningKey], now: datetime, retire_after_seconds: int
) -> list[SigningKey]:
    """Keys still to publish: active ones, and retiring ones inside their period."""
    period = timedelta(seconds=retire_after_seconds)
    kept: list[SigningKey] = []
    for key in keys:
        if key.state == "retiring":
            # A retiring key without a retirement time (hand-edited) counts from its creation.
            retired_at = key.retired_at or key.created_at
            if now >= retired_at + period:
                continue
        kept.append(key)
    return kept


def opened_keys(
    stored: Sequence[SigningKey], candidate: SigningKey, now: datetime, retire_after_seconds: int
) -> list[SigningKey] | None:
    """The key set to store when a ring opens, or None when ``stored`` is fine as it is.

    ``candidate`` becomes the active key only when there is none of its algorithm yet.
    """
    keys = _without_expired(stored, now, retire_after_seconds)
    active = _newest_active(keys)
    if active is None or active.algorithm != candidate.algorithm:
        return _with_new_active(keys, candidate, now)
    return keys if len(keys) != len(stored) else None


def rotated_keys(
    stored: Sequence[SigningKey], fresh: SigningKey, now: datetime, retire_after_seconds: int
) -> list[SigningKey]:
    """The key set after a rotation: every active key retired at ``now``, ``fresh`` active."""
    return _with_new_active(_without_expired(stored, now, retire_after_seconds), fresh, now)


def _with_new_active(
    keys: Sequence[SigningKey], fresh: SigningKey, now: datetime
) -> list[SigningKey]:
    return [k.retire(now) if k.state == "active" else k for k in keys] + [fresh]


async def _generated(signing: SigningSettings, now: datetime) -> SigningKey:
    # RSA generation takes tens of milliseconds: keep it off the event loop.
    return await asyncio.to_thread(generate_signing_key, signing.algorithm, now)
