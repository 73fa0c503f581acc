"""DbKeyStore: the issuer's signing keys shared through the store, sealed at rest."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tokenbroker.backends.registry import INSTALLED
from tokenbroker.clock import FrozenClock
from tokenbroker.config import Settings, parse_settings
from tokenbroker.config.models import SigningSettings
from tokenbroker.errors import ConfigError
from tokenbroker.issuer.keyring import KeyRing
from tokenbroker.issuer.keys import (
    FileKeyStore,
    KeyChange,
    KeyStore,
    KeyStoreError,
    SigningKey,
    generate_signing_key,
)
from tokenbroker.store import Store
from tokenbroker.store.keystore import ENCRYPTION_KEY_FILENAME, DbKeyStore, open_key_store
from tokenbroker.store.tables import signing_keys

ENCRYPTION_KEY = "correct horse battery staple, at least this long"
NOW = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


def _appending(key: SigningKey) -> KeyChange:
    return lambda stored: [*stored, key]


async def _raw_rows(store: Store) -> list[dict[str, object]]:
    async with store.reading() as repo:
        result = await repo.connection.execute(select(signing_keys))
        return [dict(row._mapping) for row in result]


async def test_an_empty_store_has_no_keys(store: Store) -> None:
    assert await DbKeyStore(store, ENCRYPTION_KEY).load() == []


async def _store_keys(key_store: KeyStore, keys: list[SigningKey]) -> None:
    await key_store.update(lambda _: keys)


async def test_updated_keys_load_back_equal(store: Store) -> None:
    keys = [
        generate_signing_key("ES256", NOW).retire(NOW + timedelta(minutes=5)),
        generate_signing_key("RS256", NOW + timedelta(minutes=5)),
    ]
    assert await DbKeyStore(store, ENCRYPTION_KEY).update(lambda _: keys) == keys
    assert await DbKeyStore(store, ENCRYPTION_KEY).load() == keys


async def test_an_update_replaces_the_whole_set(store: Store) -> None:
    key_store = DbKeyStore(store, ENCRYPTION_KEY)
    first = generate_signing_key("ES256", NOW)
    second = generate_signing_key("ES256", NOW + timedelta(minutes=1))
    await _store_keys(key_store, [first])
    await _store_keys(key_store, [second])
    assert [k.kid for k in await key_store.load()] == [second.kid]


async def test_an_update_sees_the_stored_keys_and_none_leaves_them(store: Store) -> None:
    key_store = DbKeyStore(store, ENCRYPTION_KEY)
    key = generate_signing_key("ES256", NOW)
    await _store_keys(key_store, [key])
    seen: list[list[SigningKey]] = []

    def look(stored: list[SigningKey]) -> None:
        seen.append(stored)

    assert await key_store.update(look) == [key]
    assert seen == [[key]]
    assert await key_store.load() == [key]


async def test_a_failing_change_writes_nothing(store: Store) -> None:
    key_store = DbKeyStore(store, ENCRYPTION_KEY)
    key = generate_signing_key("ES256", NOW)
    await _store_keys(key_store, [key])

    def fail(stored: list[SigningKey]) -> list[SigningKey]:
        raise KeyStoreError("refused")

    with pytest.raises(KeyStoreError, match="refused"):
        await key_store.update(fail)
    assert await key_store.load() == [key]


async def test_concurrent_updates_keep_every_change(store: Store) -> None:
    added = [generate_signing_key("ES256", NOW) for _ in range(6)]
    await asyncio.gather(
        *(DbKeyStore(store, ENCRYPTION_KEY).update(_appending(key)) for key in added)
    )
    stored = await DbKeyStore(store, ENCRYPTION_KEY).load()
    assert sorted(k.kid for k in stored) == sorted(k.kid for k in added)


async def test_an_unreachable_database_is_a_key_store_error_naming_no_secret() -> None:
    unreachable = await Store.open(
        "postgresql+asyncpg://tokenbroker:hunter2@127.0.0.1:9/none", credential_types=INSTALLED
    )
    try:
        with pytest.raises(KeyStoreError, match="cannot read signing keys") as caught:
            await DbKeyStore(unreachable, ENCRYPTION_KEY).load()
    finally:
        await unreachable.close()
    assert "hunter2" not in str(caught.value)


async def test_private_key_material_is_never_stored_in_the_clear(store: Store) -> None:
    key = generate_signing_key("ES256", NOW)
    await _store_keys(DbKeyStore(store, ENCRYPTION_KEY), [key])
    (row,) = await _raw_rows(store)
    private_d = str(key.private_jwk["d"])
    assert private_d not in json.dumps(row, default=str)
    assert "d" not in row["public_jwk"]  # type: ignore[operator]
    assert str(row["private_jwk_sealed"]).startswith("v1:")


async def test_a_wrong_encryption_key_cannot_load_and_says_so_without_secrets(
    store: Store,
) -> None:
    key = generate_signing_key("ES256", NOW)
    await _store_keys(DbKeyStore(store, ENCRYPTION_KEY), [key])
    with pytest.raises(KeyStoreError, match=r"wrong store\.encryption_key") as caught:
        await DbKeyStore(store, "another key entirely, also long enough").load()
    assert ENCRYPTION_KEY not in str(caught.value)
    assert str(key.private_jwk["d"]) not in str(caught.value)


async def test_a_sealed_key_moved_to_another_row_does_not_unseal(store: Store) -> None:
    first = generate_signing_key("ES256", NOW)
    second = generate_signing_key("ES256", NOW + timedelta(minutes=1))
    await _store_keys(DbKeyStore(store, ENCRYPTION_KEY), [first, second])
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


async def test_rings_opening_together_on_an_empty_store_share_one_active_key(
    store: Store,
) -> None:
    clock = FrozenClock(NOW.timestamp())
    rings = await asyncio.gather(
        *(
            KeyRing.open(DbKeyStore(store, ENCRYPTION_KEY), SigningSettings(), clock)
            for _ in range(4)
        )
    )
    assert len({ring.active.kid for ring in rings}) == 1
    stored = await DbKeyStore(store, ENCRYPTION_KEY).load()
    assert [(k.kid, k.state) for k in stored] == [(rings[0].active.kid, "active")]


async def test_concurrent_rotations_keep_every_new_key_and_one_active(store: Store) -> None:
    clock = FrozenClock(NOW.timestamp())
    first = await KeyRing.open(DbKeyStore(store, ENCRYPTION_KEY), SigningSettings(), clock)
    second = await KeyRing.open(DbKeyStore(store, ENCRYPTION_KEY), SigningSettings(), clock)
    original = first.active
    new = await asyncio.gather(first.rotate(), second.rotate())
    stored = {k.kid: k for k in await DbKeyStore(store, ENCRYPTION_KEY).load()}
    assert set(stored) == {original.kid, new[0].kid, new[1].kid}
    assert [k.kid for k in stored.values() if k.state == "active"] in ([new[0].kid], [new[1].kid])
    await first.reload()
    await second.reload()
    assert first.active.kid == second.active.kid


# -- open_key_store: how the server and the CLI get their key store ---------------------


def _settings(data_dir: Path, store_url: str, encryption_key: str | None) -> Settings:
    store: dict[str, object] = {"url": store_url}
    if encryption_key is not None:
        store["encryption_key"] = encryption_key
    return parse_settings({"server": {"data_dir": str(data_dir)}, "store": store}, {})


async def test_the_configured_encryption_key_seals_the_keys(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path / "data", store_url, ENCRYPTION_KEY)
    key = generate_signing_key("ES256", NOW)
    await _store_keys(await open_key_store(settings, store), [key])
    assert await DbKeyStore(store, ENCRYPTION_KEY).load() == [key]
    assert not (tmp_path / "data" / ENCRYPTION_KEY_FILENAME).exists()


async def test_an_embedded_store_generates_its_encryption_key_once_and_reuses_it(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    settings = _settings(data_dir, f"sqlite+aiosqlite:///{data_dir / 'tokenbroker.db'}", None)
    store = await Store.open(settings.store.resolved_url(data_dir), credential_types=INSTALLED)
    try:
        await store.upgrade()
        key = generate_signing_key("ES256", NOW)
        await (await open_key_store(settings, store)).update(lambda _: [key])
        key_file = data_dir / ENCRYPTION_KEY_FILENAME
        generated = key_file.read_text()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert len(generated.strip()) >= 40
        assert await (await open_key_store(settings, store)).load() == [key]
        assert key_file.read_text() == generated
        assert await DbKeyStore(store, generated.strip()).load() == [key]
    finally:
        await store.close()
    assert [p.name for p in data_dir.iterdir() if p.name.startswith(".")] == []


async def test_an_empty_generated_key_file_is_a_config_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / ENCRYPTION_KEY_FILENAME).write_text("\n")
    settings = _settings(data_dir, f"sqlite+aiosqlite:///{data_dir / 'tokenbroker.db'}", None)
    store = await Store.open(settings.store.resolved_url(data_dir), credential_types=INSTALLED)
    try:
        with pytest.raises(ConfigError) as caught:
            await open_key_store(settings, store)
    finally:
        await store.close()
    assert caught.value.problems[0].startswith("store.encryption_key: ")
    assert "is empty" in caught.value.problems[0]


def test_postgresql_without_an_encryption_key_is_refused_by_the_config(tmp_path: Path) -> None:
    # Refused while loading the config, before anything connects or migrates.
    url = "postgresql+asyncpg://tokenbroker@127.0.0.1:9/none"
    for key in (None, ""):
        with pytest.raises(ConfigError) as caught:
            _settings(tmp_path, url, key)
        assert caught.value.problems == [
            "store: encryption_key is required when the store is PostgreSQL, "
            "so that instances can share signing keys"
        ]
    assert not (tmp_path / ENCRYPTION_KEY_FILENAME).exists()


async def _file_store_keys(data_dir: Path, keys: list[SigningKey]) -> Path:
    file_store = FileKeyStore(data_dir / "keys")
    await file_store.update(lambda _: keys)
    return file_store.path


async def test_keys_of_the_old_key_file_are_imported_into_an_empty_store_once(
    store: Store, store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path / "data", store_url, ENCRYPTION_KEY)
    old = generate_signing_key("ES256", NOW)
    key_file = await _file_store_keys(settings.server.data_dir, [old])
    before = key_file.read_bytes()
    with caplog.at_level(logging.INFO, logger="tokenbroker.store.keystore"):
        key_store = await open_key_store(settings, store)
    assert await key_store.load() == [old]
    assert key_file.read_bytes() == before
    assert old.kid in caplog.text
    assert "imported" in caplog.text
    assert str(old.private_jwk["d"]) not in caplog.text
    ring = await KeyRing.open(key_store, SigningSettings(), FrozenClock(NOW.timestamp()))
    assert ring.active.kid == old.kid


async def test_the_old_key_file_is_not_imported_over_keys_already_in_the_store(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path / "data", store_url, ENCRYPTION_KEY)
    current = generate_signing_key("ES256", NOW)
    await _store_keys(DbKeyStore(store, ENCRYPTION_KEY), [current])
    await _file_store_keys(settings.server.data_dir, [generate_signing_key("ES256", NOW)])
    key_store = await open_key_store(settings, store)
    assert await key_store.load() == [current]


async def test_without_an_old_key_file_nothing_is_imported(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path / "data", store_url, ENCRYPTION_KEY)
    assert await (await open_key_store(settings, store)).load() == []
    assert not (settings.server.data_dir / "keys").exists()
