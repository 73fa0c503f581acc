"""The key ring: first start, restarts, rotation and the published key set."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet

from tokenbroker.clock import FrozenClock
from tokenbroker.config.models import SigningSettings
from tokenbroker.issuer.keyring import KeyRing, opened_keys, rotated_keys
from tokenbroker.issuer.keys import FileKeyStore, KeyStoreError, generate_signing_key
from tokenbroker.issuer.minting import mint_token

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth"}
NOW = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


def _published_kids(ring: KeyRing) -> list[str]:
    keys = ring.jwks()["keys"]
    assert isinstance(keys, list)
    return [k["kid"] for k in keys]


def _verify(token: str, jwks: dict[str, object]) -> dict[str, object]:
    key_set = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    return dict(jwt.decode(token, key_set, algorithms=["ES256", "RS256"]).claims)


def _mint(ring: KeyRing, clock: FrozenClock) -> str:
    return mint_token(
        ring,
        issuer_url="https://broker.example.com",
        subject="runner",
        audience="vault",
        lifetime_seconds=900,
        claims={},
        clock=clock,
    )


async def test_first_start_generates_and_saves_an_es256_key(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    ring = await KeyRing.open(store, signing, clock)
    assert ring.active.algorithm == "ES256"
    assert ring.active.state == "active"
    assert [k.kid for k in await store.load()] == [ring.active.kid]


async def test_first_start_generates_rs256_when_configured(
    store: FileKeyStore, clock: FrozenClock
) -> None:
    ring = await KeyRing.open(store, SigningSettings(algorithm="RS256"), clock)
    assert ring.active.algorithm == "RS256"
    assert ring.algorithms() == ["RS256"]


async def test_a_restart_reuses_the_saved_key(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    first = await KeyRing.open(store, signing, clock)
    clock.advance(86400)
    again = await KeyRing.open(FileKeyStore(store.directory), signing, clock)
    assert again.active.kid == first.active.kid
    assert len(await store.load()) == 1


async def test_jwks_never_holds_a_private_member(store: FileKeyStore, clock: FrozenClock) -> None:
    ring = await KeyRing.open(store, SigningSettings(algorithm="RS256"), clock)
    await ring.rotate()
    published = ring.jwks()["keys"]
    assert isinstance(published, list)
    assert len(published) == 2
    for key in published:
        assert not PRIVATE_MEMBERS & set(key)


async def test_rotation_publishes_the_old_key_until_its_period_is_over(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    ring = await KeyRing.open(store, signing, clock)
    old = ring.active
    new = await ring.rotate()
    assert new.kid != old.kid
    assert ring.active == new
    assert _published_kids(ring) == [new.kid, old.kid]
    clock.advance(signing.retire_after_seconds - 1)
    assert _published_kids(ring) == [new.kid, old.kid]
    clock.advance(1)
    assert _published_kids(ring) == [new.kid]


async def test_rotation_saves_the_old_key_as_retiring(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    ring = await KeyRing.open(store, signing, clock)
    old = ring.active
    clock.advance(10)
    new = await ring.rotate()
    stored = {k.kid: k for k in await store.load()}
    assert stored[new.kid].state == "active"
    assert stored[old.kid].state == "retiring"
    retired_at = stored[old.kid].retired_at
    assert retired_at is not None
    assert retired_at.timestamp() == clock.now()


async def test_a_start_after_the_period_drops_the_retired_key_from_the_store(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    ring = await KeyRing.open(store, signing, clock)
    old = ring.active
    new = await ring.rotate()
    clock.advance(signing.retire_after_seconds - 1)
    assert {k.kid for k in (await KeyRing.open(store, signing, clock)).keys} == {
        new.kid,
        old.kid,
    }
    clock.advance(1)
    restarted = await KeyRing.open(store, signing, clock)
    assert [k.kid for k in restarted.keys] == [new.kid]
    assert [k.kid for k in await store.load()] == [new.kid]


async def test_a_token_minted_before_rotation_verifies_against_the_jwks_after_it(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    ring = await KeyRing.open(store, signing, clock)
    before = _mint(ring, clock)
    await ring.rotate()
    after = _mint(ring, clock)
    jwks = ring.jwks()
    assert _verify(before, jwks)["sub"] == "runner"
    assert _verify(after, jwks)["sub"] == "runner"
    key_set = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    assert jwt.decode(before, key_set).header["kid"] != jwt.decode(after, key_set).header["kid"]


async def test_a_token_of_a_dropped_key_no_longer_verifies(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    ring = await KeyRing.open(store, signing, clock)
    before = _mint(ring, clock)
    old_kid = ring.active.kid
    await ring.rotate()
    clock.advance(signing.retire_after_seconds)
    jwks = ring.jwks()
    assert old_kid not in _published_kids(ring)
    with pytest.raises(InvalidKeyIdError):
        _verify(before, jwks)


async def test_a_newly_configured_algorithm_takes_over_and_the_old_key_retires(
    store: FileKeyStore, clock: FrozenClock
) -> None:
    es = await KeyRing.open(store, SigningSettings(algorithm="ES256"), clock)
    rs = await KeyRing.open(store, SigningSettings(algorithm="RS256"), clock)
    assert rs.active.algorithm == "RS256"
    assert [(k.kid, k.state) for k in rs.keys] == [
        (rs.active.kid, "active"),
        (es.active.kid, "retiring"),
    ]
    assert rs.algorithms() == ["ES256", "RS256"]


async def test_reload_picks_up_a_rotation_made_by_another_process(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    serving = await KeyRing.open(store, signing, clock)
    old = serving.active
    other = await KeyRing.open(FileKeyStore(store.directory), signing, clock)
    new = await other.rotate()
    assert serving.active == old
    await serving.reload()
    assert serving.active.kid == new.kid
    assert _published_kids(serving) == [new.kid, old.kid]


async def test_reload_of_a_store_without_an_active_key_keeps_the_current_keys(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    ring = await KeyRing.open(store, signing, clock)
    active = ring.active
    await store.update(lambda _: [active.retire(active.created_at)])
    with pytest.raises(KeyStoreError, match="no active signing key"):
        await ring.reload()
    assert ring.active == active


async def test_readiness_check_signs_with_the_active_key(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    ring = await KeyRing.open(store, signing, clock)
    await ring.check()


async def test_a_corrupt_store_fails_open_with_a_key_store_error(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    store.directory.mkdir(parents=True)
    store.path.write_text("{")
    with pytest.raises(KeyStoreError):
        await KeyRing.open(store, signing, clock)


async def test_the_ring_repr_shows_no_key_material(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    ring = await KeyRing.open(store, signing, clock)
    assert str(ring.active.private_jwk["d"]) not in repr(ring)
    assert ring.active.kid in repr(ring)


async def test_rings_opening_together_on_an_empty_store_share_one_active_key(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    rings = await asyncio.gather(
        *(KeyRing.open(FileKeyStore(store.directory), signing, clock) for _ in range(4))
    )
    assert len({ring.active.kid for ring in rings}) == 1
    assert [k.kid for k in await store.load()] == [rings[0].active.kid]


async def test_concurrent_rotations_keep_every_new_key_and_one_active(
    store: FileKeyStore, signing: SigningSettings, clock: FrozenClock
) -> None:
    first = await KeyRing.open(store, signing, clock)
    second = await KeyRing.open(FileKeyStore(store.directory), signing, clock)
    original = first.active
    new = await asyncio.gather(first.rotate(), second.rotate())
    stored = {k.kid: k for k in await store.load()}
    assert set(stored) == {original.kid, new[0].kid, new[1].kid}
    assert [k.kid for k in stored.values() if k.state == "active"] in ([new[0].kid], [new[1].kid])
    await first.reload()
    await second.reload()
    assert first.active.kid == second.active.kid


def test_opening_a_store_with_a_usable_active_key_changes_nothing() -> None:
    candidate = generate_signing_key("ES256", NOW)
    active = generate_signing_key("ES256", NOW)
    assert opened_keys([active], candidate, NOW, 3600) is None


def test_opening_an_empty_store_makes_the_candidate_active() -> None:
    candidate = generate_signing_key("ES256", NOW)
    assert opened_keys([], candidate, NOW, 3600) == [candidate]


def test_opening_drops_expired_retiring_keys_and_keeps_the_active_one() -> None:
    old = generate_signing_key("ES256", NOW).retire(NOW)
    active = generate_signing_key("ES256", NOW)
    later = NOW + timedelta(seconds=3600)
    candidate = generate_signing_key("ES256", later)
    assert opened_keys([old, active], candidate, later, 3600) == [active]


def test_opening_with_another_algorithm_retires_the_active_key() -> None:
    active = generate_signing_key("ES256", NOW)
    candidate = generate_signing_key("RS256", NOW)
    assert opened_keys([active], candidate, NOW, 3600) == [active.retire(NOW), candidate]


def test_a_rotation_retires_every_active_key_and_adds_the_fresh_one() -> None:
    # Two actives happen only in a hand-edited store; a rotation still leaves exactly one.
    a, b = generate_signing_key("ES256", NOW), generate_signing_key("ES256", NOW)
    fresh = generate_signing_key("ES256", NOW)
    assert rotated_keys([a, b], fresh, NOW, 3600) == [a.retire(NOW), b.retire(NOW), fresh]
