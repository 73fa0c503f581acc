"""``replay = "once"``: a platform token serves one (token, credential) request and its retries.

Really signed dev-issuer tokens against the real app, on SQLite and on PostgreSQL; two apps on
one PostgreSQL schema stand for two brokers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.support.platform import ServedDevIssuer
from tests.support.postgres import fresh_postgres_schema
from tokenbroker.clock import FrozenClock
from tokenbroker.config import Settings, parse_settings
from tokenbroker.web import keys
from tokenbroker.web.app import create_app

NOW = 1_800_000_000.0
ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
Client = TestClient[web.Request, web.Application]


def replay_once_settings(
    data_dir: Path, issuer: ServedDevIssuer, store_url: str | None = None
) -> Settings:
    entry = issuer.issuer_settings("env0").model_dump(mode="json") | {"replay": "once"}
    store: dict[str, object] = {"url": store_url, "encryption_key": "k" * 32} if store_url else {}
    return parse_settings(
        {
            "server": {"data_dir": str(data_dir)},
            "store": store,
            "security": {"allow_private_backends": True},
            "exchange": {"reuse_seconds": 30},
            "rate_limit": {"enabled": False},
            "issuers": [entry],
            "organizations": [{"name": "acme", "issuer": entry["name"], "platform_org_id": ORG}],
            "credentials": [
                {
                    "organization": "acme",
                    "name": name,
                    "type": "oidc_token",
                    "token": "mint",
                    "audience": name,
                }
                for name in ("first", "second")
            ],
            "assignments": [
                {"organization": "acme", "project": PROJECT, "credentials": ["first", "second"]}
            ],
        },
        {},
    )


@pytest.fixture
def clock(dev_issuer: ServedDevIssuer) -> FrozenClock:
    frozen = FrozenClock(NOW)
    dev_issuer.clock = frozen
    return frozen


@pytest.fixture
async def broker(
    tmp_path: Path, dev_issuer: ServedDevIssuer, clock: FrozenClock, aiohttp_client: AiohttpClient
) -> Client:
    app = create_app(replay_once_settings(tmp_path, dev_issuer), clock=clock)
    return await aiohttp_client(app)


async def drop_table(database: Path, table: str) -> None:
    """Drop a table under the running broker; in a thread, so the broker's own writes (on
    this loop) can finish and let go of the file while the drop waits for it."""

    def drop() -> None:
        with sqlite3.connect(database, timeout=30) as db:
            db.execute(f"DROP TABLE {table}")

    await asyncio.to_thread(drop)


async def exchange(client: Client, token: str, credential: str) -> aiohttp.ClientResponse:
    return await client.post(
        "/v1/exchange",
        json={"credential": credential},
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_a_retry_of_a_once_token_gets_the_same_credential(
    broker: Client, dev_issuer: ServedDevIssuer
) -> None:
    token = dev_issuer.mint("env0", org=ORG, project=PROJECT)
    first = await (await exchange(broker, token, "first")).json()
    retry = await (await exchange(broker, token, "first")).json()
    assert retry["values"] == first["values"]
    assert retry["lease"] == first["lease"]


async def test_a_once_token_used_for_another_credential_is_replayed(
    broker: Client, dev_issuer: ServedDevIssuer
) -> None:
    token = dev_issuer.mint("env0", org=ORG, project=PROJECT)
    assert (await exchange(broker, token, "first")).status == 200
    replayed = await exchange(broker, token, "second")
    body = await replayed.json()
    assert (replayed.status, body["error"], body["reason"]) == (
        401,
        "invalid_token",
        "token_replayed",
    )
    events = await broker.server.app[keys.STORE].audit.events(limit=1)
    assert (events[0].outcome, events[0].reason) == ("denied", "token_replayed")


async def test_a_once_token_after_the_reuse_window_is_replayed(
    broker: Client, dev_issuer: ServedDevIssuer, clock: FrozenClock
) -> None:
    token = dev_issuer.mint("env0", org=ORG, project=PROJECT)
    assert (await exchange(broker, token, "first")).status == 200
    clock.advance(31)
    late = await exchange(broker, token, "first")
    assert ((await late.json())["reason"], late.status) == ("token_replayed", 401)


async def test_a_dry_run_does_not_use_up_a_once_token(
    broker: Client, dev_issuer: ServedDevIssuer
) -> None:
    token = dev_issuer.mint("env0", org=ORG, project=PROJECT)
    trace = await broker.post(
        "/v1/exchange?dry_run=true",
        json={"credential": "second"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (await trace.json())["allowed"] is True
    assert (await exchange(broker, token, "first")).status == 200


async def test_a_replay_store_that_cannot_answer_is_a_503_not_an_allow(
    broker: Client, dev_issuer: ServedDevIssuer
) -> None:
    settings = broker.server.app[keys.SETTINGS]
    await drop_table(settings.server.data_dir / "tokenbroker.db", "token_uses")
    refused = await exchange(broker, dev_issuer.mint("env0", org=ORG, project=PROJECT), "first")
    body = await refused.json()
    assert (refused.status, body["reason"]) == (503, "replay_unavailable")
    assert refused.headers["Retry-After"].isdigit()


@pytest.fixture
async def two_brokers(
    tmp_path: Path, dev_issuer: ServedDevIssuer, clock: FrozenClock, aiohttp_client: AiohttpClient
) -> AsyncIterator[tuple[Client, Client]]:
    async with fresh_postgres_schema() as url:
        one = await aiohttp_client(
            create_app(replay_once_settings(tmp_path / "a", dev_issuer, url), clock=clock)
        )
        two = await aiohttp_client(
            create_app(replay_once_settings(tmp_path / "b", dev_issuer, url), clock=clock)
        )
        yield one, two
        await one.close()
        await two.close()


@pytest.mark.postgres
async def test_a_once_token_holds_across_two_brokers_under_concurrency(
    two_brokers: tuple[Client, Client], dev_issuer: ServedDevIssuer
) -> None:
    token = dev_issuer.mint("env0", org=ORG, project=PROJECT)
    one, two = two_brokers
    requests = [
        exchange(broker, token, credential)
        for broker in (one, two)
        for credential in ("first", "second")
        for _ in range(5)
    ]
    answers = await asyncio.gather(*requests)
    served = [await answer.json() for answer in answers if answer.status == 200]
    refused = [await answer.json() for answer in answers if answer.status != 200]
    assert {body["credential"] for body in served} in ({"first"}, {"second"})
    assert len({body["values"]["OIDC_TOKEN"] for body in served}) == 1
    assert {body["reason"] for body in refused} == {"token_replayed"}
    assert len(served) + len(refused) == 20
