"""``tokenbroker keys list`` and ``tokenbroker keys rotate``, run in-process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tokenbroker.cli.main import main
from tokenbroker.clock import SystemClock
from tokenbroker.config.models import SigningSettings
from tokenbroker.issuer.keyring import KeyRing
from tokenbroker.issuer.keys import FileKeyStore, SigningKey


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


def _stored(data_dir: Path) -> list[SigningKey]:
    return asyncio.run(FileKeyStore(data_dir / "keys").load())


def _start_broker_keys(data_dir: Path) -> SigningKey:
    # What `tokenbroker serve` does on first start: open the ring, which makes the first key.
    ring = asyncio.run(
        KeyRing.open(FileKeyStore(data_dir / "keys"), SigningSettings(), SystemClock())
    )
    return ring.active


def test_keys_rotate_changes_the_active_kid_and_retires_the_old_one(
    config: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _start_broker_keys(data_dir)
    assert main(["keys", "rotate", "--config", str(config)]) == 0
    stored = {k.kid: k for k in _stored(data_dir)}
    active = [k for k in stored.values() if k.state == "active"]
    assert len(active) == 1
    assert active[0].kid != old.kid
    assert stored[old.kid].state == "retiring"
    assert f"active key: {active[0].kid}" in capsys.readouterr().out


def test_keys_rotate_twice_keeps_every_retiring_key_published(config: Path, data_dir: Path) -> None:
    _start_broker_keys(data_dir)
    assert main(["keys", "rotate", "--config", str(config)]) == 0
    assert main(["keys", "rotate", "--config", str(config)]) == 0
    assert sorted(k.state for k in _stored(data_dir)) == ["active", "retiring", "retiring"]


def test_keys_list_shows_kid_alg_and_state_but_no_private_key(
    config: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _start_broker_keys(data_dir)
    assert main(["keys", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()
    assert header.split() == ["KID", "ALG", "STATE", "CREATED", "RETIRED"]
    assert row.split()[:3] == [key.kid, "ES256", "active"]
    assert str(key.private_jwk["d"]) not in out


def test_keys_list_json_is_one_object_per_key_newest_first(
    config: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _start_broker_keys(data_dir)
    main(["keys", "rotate", "--config", str(config)])
    capsys.readouterr()
    assert main(["keys", "list", "--json", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out)
    assert [r["state"] for r in rows] == ["active", "retiring"]
    assert set(rows[0]) == {"kid", "alg", "state", "created", "retired"}
    assert all(str(k.private_jwk["d"]) not in out for k in _stored(data_dir))


def test_keys_list_before_the_first_start_says_there_are_none(
    config: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "list", "--config", str(config)]) == 0
    assert "no signing keys yet" in capsys.readouterr().out
    assert not data_dir.exists()


def test_keys_rotate_with_a_corrupt_key_file_fails_with_one_line(
    config: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data_dir / "keys").mkdir(parents=True)
    (data_dir / "keys" / "signing-keys.json").write_text("{")
    assert main(["keys", "rotate", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tokenbroker: ")
    assert "not valid JSON" in err
    assert "Traceback" not in err


def test_keys_without_an_action_is_a_usage_error(config: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys"])
    assert exited.value.code == 2
