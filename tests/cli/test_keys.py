"""``tokenbroker keys list`` and ``tokenbroker keys rotate``, run in-process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from tokenbroker.backends.registry import INSTALLED
from tokenbroker.cli.main import main
from tokenbroker.clock import SystemClock
from tokenbroker.config import load_settings
from tokenbroker.config.models import SigningSettings
from tokenbroker.issuer.keyring import KeyRing
from tokenbroker.issuer.keys import FileKeyStore, KeyStore, SigningKey, generate_signing_key
from tokenbroker.store import Store
from tokenbroker.store.keystore import ENCRYPTION_KEY_FILENAME, open_key_store

_T = TypeVar("_T")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The data directory the config below points at."""
    return tmp_path / "data"


@pytest.fixture
def config(tmp_path: Path, data_dir: Path) -> Path:
    """A config file with its data directory in a temp folder."""
    path = tmp_path / "tokenbroker.toml"
    path.write_text(f'[server]\ndata_dir = "{data_dir}"\n', encoding="utf-8")
    return path


def _with_key_store(config: Path, work: Callable[[KeyStore], Awaitable[_T]]) -> _T:
    settings = load_settings(config)

    async def run() -> _T:
        store = await Store.open(
            settings.store.resolved_url(settings.server.data_dir), credential_types=INSTALLED
        )
        try:
            await store.upgrade()
            return await work(await open_key_store(settings, store))
        finally:
            await store.close()

    return asyncio.run(run())


def _stored(config: Path) -> list[SigningKey]:
    return _with_key_store(config, lambda key_store: key_store.load())


def _start_broker_keys(config: Path) -> SigningKey:
    # What `tokenbroker serve` does on first start: open the ring, which makes the first key.
    async def open_ring(key_store: KeyStore) -> SigningKey:
        return (await KeyRing.open(key_store, SigningSettings(), SystemClock())).active

    return _with_key_store(config, open_ring)


def test_keys_rotate_changes_the_active_kid_and_retires_the_old_one(
    config: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _start_broker_keys(config)
    assert main(["keys", "rotate", "--config", str(config)]) == 0
    stored = {k.kid: k for k in _stored(config)}
    active = [k for k in stored.values() if k.state == "active"]
    assert len(active) == 1
    assert active[0].kid != old.kid
    assert stored[old.kid].state == "retiring"
    assert f"active key: {active[0].kid}" in capsys.readouterr().out


def test_keys_rotate_twice_keeps_every_retiring_key_published(config: Path, data_dir: Path) -> None:
    _start_broker_keys(config)
    assert main(["keys", "rotate", "--config", str(config)]) == 0
    assert main(["keys", "rotate", "--config", str(config)]) == 0
    assert sorted(k.state for k in _stored(config)) == ["active", "retiring", "retiring"]


def test_keys_list_shows_kid_alg_and_state_but_no_private_key(
    config: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _start_broker_keys(config)
    assert main(["keys", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()
    assert header.split() == ["KID", "ALG", "STATE", "CREATED", "RETIRED"]
    assert row.split()[:3] == [key.kid, "ES256", "active"]
    assert str(key.private_jwk["d"]) not in out


def test_keys_list_json_is_one_object_per_key_newest_first(
    config: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _start_broker_keys(config)
    main(["keys", "rotate", "--config", str(config)])
    capsys.readouterr()
    assert main(["keys", "list", "--json", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out)
    assert [r["state"] for r in rows] == ["active", "retiring"]
    assert set(rows[0]) == {"kid", "alg", "state", "created", "retired"}
    assert all(str(k.private_jwk["d"]) not in out for k in _stored(config))


def test_keys_list_before_the_first_start_says_there_are_none(
    config: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "list", "--config", str(config)]) == 0
    assert "no signing keys yet" in capsys.readouterr().out
    assert not (data_dir / ENCRYPTION_KEY_FILENAME).exists()


def test_keys_rotate_before_the_first_start_makes_the_store_and_its_keys(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "rotate", "--config", str(config)]) == 0
    assert sorted(k.state for k in _stored(config)) == ["active", "retiring"]


def test_keys_list_shows_the_keys_of_an_install_that_kept_them_in_a_file(
    config: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = generate_signing_key("ES256", datetime.now(UTC))
    asyncio.run(FileKeyStore(data_dir / "keys").update(lambda _: [old]))
    _start_broker_keys(config)
    assert main(["keys", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == [old.kid, "ES256", "active"]


def test_keys_rotate_with_a_wrong_encryption_key_fails_with_one_line(
    config: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _start_broker_keys(config)
    (data_dir / ENCRYPTION_KEY_FILENAME).write_text("not the key the store was sealed with\n")
    assert main(["keys", "rotate", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tokenbroker: ")
    assert "wrong store.encryption_key" in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_keys_list_with_an_unusable_encryption_key_file_names_the_problem(
    config: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _start_broker_keys(config)
    (data_dir / ENCRYPTION_KEY_FILENAME).write_text("\n")
    assert main(["keys", "list", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tokenbroker: invalid configuration:\n  store.encryption_key: ")
    assert "Traceback" not in err


def test_keys_without_an_action_is_a_usage_error(config: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys"])
    assert exited.value.code == 2
