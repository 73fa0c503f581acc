"""DbKeyStore: the issuer's signing keys shared through the store, sealed at rest."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from tokenbroker.clock import FrozenClock
from tokenbroker.config.models import SigningSettings
from tokenbroker.issuer.keyring import KeyRing
from tokenbroker.issuer.keys import KeyStoreError, SigningKey, generate_signing_key
from tokenbroker.store import Store
from tokenbroker.store.keystore import DbKeyStore
from tokenbroker.store.tables import signing_keys

ENCRYPTION_KEY = "correct horse battery staple, at least this long"
NOW = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


async def _raw_rows(store: Store) -> list[dict[str, object]]:
    async with store.reading() as repo:
        result = await repo.connection.execute(select(signing_keys))
        return [dict(row._mapping) for row in result]


async def test_an_empty_store_has_no_keys(store: Store) -> None:
    assert await DbKeyStore(store, ENCRYPTION_KEY).load() == []


async def test_saved_keys_load_back_equal(store: Store) -> None:
    keys = [
        generate_signing_key("ES256", NOW).retire(NOW + timedelta(minutes=5)),
        generate_signing_key("RS256", NOW + timedelta(minutes=5)),
    ]
    await DbKeyStore(store, ENCRYPTION_KEY).save(keys)
    assert await DbKeyStore(store, ENCRYPTION_KEY).load() == keys


async def test_save_replaces_the_whole_set(store: Store) -> None:
    key_store = DbKeyStore(store, ENCRYPTION_KEY)
    first = generate_signing_key("ES256", NOW)
    second = generate_signing_key("ES256", NOW + timedelta(minutes=1))
    await key_store.save([first])
    await key_store.save([second])
    assert [k.kid for k in await key_store.load()] == [second.kid]


async def test_private_key_material_is_never_stored_in_the_clear(store: Store) -> None:
    key = generate_signing_key("ES256", NOW)
    await DbKeyStore(store, ENCRYPTION_KEY).save([key])
    (row,) = await _raw_rows(store)
    private_d = str(key.private_jwk["d"])
    assert private_d not in json.dumps(row, default=str)
    assert "d" not in row["public_jwk"]  # type: ignore[operator]
    assert str(row["private_jwk_sealed"]).startswith("v1:")


async def test_a_wrong_encryption_key_cannot_load_and_says_so_without_secrets(
    store: Store,
) -> None:
    key = generate_signing_key("ES256", NOW)
    await DbKeyStore(store, ENCRYPTION_KEY).save([key])
    with pytest.raises(KeyStoreError, match=r"wrong store\.encryption_key") as caught:
        await DbKeyStore(store, "another key entirely, also long enough").load()
    assert ENCRYPTION_KEY not in str(caught.value)
    assert str(key.private_jwk["d"]) not in str(caught.value)


async def test_a_sealed_key_moved_to_another_row_does_not_unseal(store: Store) -> None:
    first = generate_signing_key("ES256", NOW)
    second = generate_signing_key("ES256", NOW + timedelta(minutes=1))
    await DbKeyStore(store, ENCRYPTION_KEY).save([first, second])
    rows = {row["kid"]: row for row in await _raw_rows(store)}
    async with store.transaction() as repo:
        await repo.connection.execute(
            update(signing_keys)
            .where(signing_keys.c.kid == second.kid)
            .values(private_jwk_sealed=rows[first.kid]["private_jwk_sealed"])
        )
    with pytest.raises(KeyStoreError, match=second.kid):
        await DbKeyStore(store, ENCRYPTION_KEY).load()


def test_an_empty_encryption_key_is_refused() -> None:
    with pytest.raises(KeyStoreError, match=r"store\.encryption_key"):
        DbKeyStore(None, "")  # type: ignore[arg-type]


async def test_two_instances_on_one_store_sign_with_the_same_key(store: Store) -> None:
    clock = FrozenClock(NOW.timestamp())
    signing = SigningSettings()
    first = await KeyRing.open(DbKeyStore(store, ENCRYPTION_KEY), signing, clock)
    second = await KeyRing.open(DbKeyStore(store, ENCRYPTION_KEY), signing, clock)
    assert first.active.kid == second.active.kid

    rotated: SigningKey = await first.rotate()
    await second.reload()
    assert second.active.kid == rotated.kid
    assert {k["kid"] for k in second.jwks()["keys"]} == {  # type: ignore[attr-defined]
        k["kid"]
        for k in first.jwks()["keys"]  # type: ignore[attr-defined]
    }
