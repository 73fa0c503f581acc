"""``tokenbroker db upgrade`` and the store's place in the running app."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from tokenbroker.cli.main import main
from tokenbroker.config import parse_settings
from tokenbroker.store import Store
from tokenbroker.web import keys
from tokenbroker.web.app import create_app


def test_db_upgrade_migrates_the_configured_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tokenbroker.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert (tmp_path / "data" / "tokenbroker.db").is_file()
    assert "is at revision 0003" in capsys.readouterr().out
    # Twice is fine.
    assert main(["db", "upgrade", "--config", str(config)]) == 0


def test_db_upgrade_with_an_unsupported_url_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tokenbroker.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\n[store]\nurl = "mysql://h/db"\n', encoding="utf-8"
    )
    assert main(["db", "upgrade", "--config", str(config)]) == 1
    assert "store.url must be" in capsys.readouterr().err


async def test_the_app_migrates_applies_config_and_reports_the_store_ready(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    settings = parse_settings(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "issuers": [
                {
                    "name": "env0",
                    "issuer": "https://login.app.env0.com/",
                    "audiences": ["https://prod.env0.com"],
                    "profile": "env0",
                }
            ],
            "organizations": [{"name": "acme", "issuer": "env0", "platform_org_id": "o-1"}],
        },
        {},
    )
    app = create_app(settings)
    client = await aiohttp_client(app)
    response = await client.get("/readyz")
    assert (await response.json())["checks"]["store"] == "ok"
    store: Store = app[keys.STORE]
    assert [o.name for o in await store.policy.list_organizations()] == ["acme"]
