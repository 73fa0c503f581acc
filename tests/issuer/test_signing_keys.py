"""Signing keys and the file key store."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from joserfc import jwk

from tokenbroker.issuer.keys import (
    FileKeyStore,
    KeyChange,
    KeyStoreError,
    SigningKey,
    generate_signing_key,
    import_signing_key,
    key_from_record,
    key_to_record,
)

NOW = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth"}


def _appending(key: SigningKey) -> KeyChange:
    return lambda stored: [*stored, key]


def test_es256_key_is_p256_with_its_rfc7638_thumbprint_as_kid() -> None:
    key = generate_signing_key("ES256", NOW)
    imported = jwk.ECKey.import_key(key.public_jwk())  # type: ignore[arg-type]
    assert key.algorithm == "ES256"
    assert key.state == "active"
    assert key.created_at == NOW
    assert key.retired_at is None
    assert imported.curve_name == "P-256"
    assert key.kid == jwk.thumbprint(
        {"kty": "EC", **{m: key.private_jwk[m] for m in ("crv", "x", "y")}}
    )


def test_rs256_key_is_rsa_2048() -> None:
    key = generate_signing_key("RS256", NOW)
    imported = jwk.RSAKey.import_key(key.public_jwk())  # type: ignore[arg-type]
    assert key.algorithm == "RS256"
    assert imported.raw_value.key_size == 2048
    assert key.kid == imported.thumbprint()


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_public_jwk_never_holds_a_private_member(algorithm: str) -> None:
    key = generate_signing_key(algorithm, NOW)  # type: ignore[arg-type]
    public = key.public_jwk()
    assert "d" in key.private_jwk
    assert not PRIVATE_MEMBERS & set(public)
    assert public["kid"] == key.kid
    assert public["alg"] == algorithm
    assert public["use"] == "sig"


def test_repr_of_a_key_does_not_show_private_material() -> None:
    key = generate_signing_key("ES256", NOW)
    assert str(key.private_jwk["d"]) not in repr(key)
    assert "private_jwk" not in repr(key)


def test_retire_marks_the_key_retiring_at_the_given_time() -> None:
    key = generate_signing_key("ES256", NOW)
    later = datetime(2027, 1, 16, tzinfo=UTC)
    retired = key.retire(later)
    assert (retired.state, retired.retired_at, retired.kid) == ("retiring", later, key.kid)


def test_a_record_round_trips_to_the_same_key() -> None:
    key = generate_signing_key("RS256", NOW).retire(NOW)
    assert key_from_record(json.loads(json.dumps(key_to_record(key)))) == key


def test_a_key_whose_kid_does_not_match_its_material_is_refused() -> None:
    key = generate_signing_key("ES256", NOW)
    other = generate_signing_key("ES256", NOW)
    forged = key_from_record({**key_to_record(key), "kid": other.kid})
    with pytest.raises(KeyStoreError, match="thumbprint"):
        import_signing_key(forged)


def test_a_key_without_its_private_part_is_refused() -> None:
    key = generate_signing_key("ES256", NOW)
    public_only = key_from_record({**key_to_record(key), "private_jwk": key.public_jwk()})
    with pytest.raises(KeyStoreError, match="no private part"):
        import_signing_key(public_only)


def test_an_rsa_key_stored_as_es256_is_refused_without_leaking_it() -> None:
    rsa = generate_signing_key("RS256", NOW)
    mislabelled = key_from_record({**key_to_record(rsa), "algorithm": "ES256"})
    with pytest.raises(KeyStoreError) as caught:
        import_signing_key(mislabelled)
    assert str(rsa.private_jwk["d"]) not in str(caught.value)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"kid": ""}, "no kid"),
        ({"algorithm": "HS256"}, "unknown algorithm"),
        ({"state": "pending"}, "unknown state"),
        ({"private_jwk": "nope"}, "no private_jwk"),
        ({"created_at": "yesterday"}, "malformed created_at"),
        ({"created_at": "2027-01-15T08:00:00"}, "without a time zone"),
    ],
)
def test_a_bad_record_is_refused_naming_the_problem(
    change: dict[str, object], problem: str
) -> None:
    record = {**key_to_record(generate_signing_key("ES256", NOW)), **change}
    with pytest.raises(KeyStoreError, match=problem):
        key_from_record(record)


async def test_an_absent_key_file_is_an_empty_set(store: FileKeyStore) -> None:
    assert await store.load() == []
    assert not store.directory.exists()


async def test_updated_keys_load_back_unchanged(store: FileKeyStore) -> None:
    keys = [generate_signing_key("ES256", NOW).retire(NOW), generate_signing_key("RS256", NOW)]
    assert await store.update(lambda _: keys) == keys
    assert await store.load() == keys


async def test_an_update_sees_the_stored_keys_and_none_leaves_them(store: FileKeyStore) -> None:
    key = generate_signing_key("ES256", NOW)
    await store.update(lambda _: [key])
    seen: list[list[SigningKey]] = []

    def look(stored: list[SigningKey]) -> None:
        seen.append(stored)

    assert await store.update(look) == [key]
    assert seen == [[key]]
    assert await store.load() == [key]


async def test_an_update_that_changes_nothing_writes_no_key_file(store: FileKeyStore) -> None:
    assert await store.update(lambda _: None) == []
    assert not store.path.exists()


async def test_the_key_file_is_0600_in_a_0700_directory(store: FileKeyStore) -> None:
    await store.update(lambda _: [generate_signing_key("ES256", NOW)])
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.lock_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700


async def test_updating_tightens_an_existing_directory_to_0700(store: FileKeyStore) -> None:
    store.directory.mkdir(parents=True, mode=0o755)
    store.directory.chmod(0o755)
    await store.update(lambda _: [generate_signing_key("ES256", NOW)])
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700


async def test_an_update_replaces_the_whole_set_and_leaves_no_temp_file(
    store: FileKeyStore,
) -> None:
    first, second = generate_signing_key("ES256", NOW), generate_signing_key("ES256", NOW)
    await store.update(lambda _: [first])
    await store.update(lambda _: [second])
    assert await store.load() == [second]
    assert sorted(p.name for p in store.directory.iterdir()) == sorted(
        [FileKeyStore.LOCK_FILENAME, FileKeyStore.FILENAME]
    )


async def test_an_update_waits_for_another_holder_of_the_lock_and_sees_its_keys(
    store: FileKeyStore,
) -> None:
    # The test plays another process (`tokenbroker keys rotate`) holding the lock file.
    theirs, ours = generate_signing_key("ES256", NOW), generate_signing_key("ES256", NOW)
    await store.update(lambda _: [])
    holder = os.open(store.lock_path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        update = asyncio.create_task(store.update(_appending(ours)))
        done, _ = await asyncio.wait({update}, timeout=0.3)
        assert not done, "the update ran while another process held the lock"
        document = {"format": 1, "keys": [key_to_record(theirs)]}
        store.path.write_text(json.dumps(document), encoding="utf-8")
    finally:
        os.close(holder)
    assert await update == [theirs, ours]
    assert await store.load() == [theirs, ours]


async def test_concurrent_updates_keep_every_change(store: FileKeyStore) -> None:
    added = [generate_signing_key("ES256", NOW) for _ in range(8)]
    await asyncio.gather(*(store.update(_appending(key)) for key in added))
    assert sorted(k.kid for k in await store.load()) == sorted(k.kid for k in added)


async def test_a_failing_change_releases_the_lock_and_writes_nothing(store: FileKeyStore) -> None:
    def fail(stored: list[SigningKey]) -> list[SigningKey]:
        raise KeyStoreError("refused")

    with pytest.raises(KeyStoreError, match="refused"):
        await store.update(fail)
    key = generate_signing_key("ES256", NOW)
    assert await store.update(lambda _: [key]) == [key]


async def test_a_corrupt_key_file_is_a_key_store_error(store: FileKeyStore) -> None:
    key = generate_signing_key("ES256", NOW)
    await store.update(lambda _: [key])
    store.path.write_text(store.path.read_text()[:-20])
    with pytest.raises(KeyStoreError, match="not valid JSON") as caught:
        await store.load()
    assert str(key.private_jwk["d"]) not in str(caught.value)


async def test_a_key_file_of_another_format_is_refused(store: FileKeyStore) -> None:
    store.directory.mkdir(parents=True)
    store.path.write_text(json.dumps({"format": 99, "keys": []}))
    with pytest.raises(KeyStoreError, match="unsupported format"):
        await store.load()


def test_the_store_repr_names_only_the_directory(tmp_path: Path) -> None:
    assert repr(FileKeyStore(tmp_path)) == f"FileKeyStore({str(tmp_path)!r})"
