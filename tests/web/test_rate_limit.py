"""Exchanges are rate limited per organization: 429 with Retry-After, audited as a denial."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from tests.support.platform import ServedDevIssuer

from tokenbroker.clock import FrozenClock
from tokenbroker.config import Settings, parse_settings
from tokenbroker.web import keys
from tokenbroker.web.app import create_app

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
OTHER_ORG = "0b9d3a7e-1111-4222-8333-444455556666"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
NOW = 1_800_000_000.0


def broker_settings(
    tmp_path: object, dev_issuer: ServedDevIssuer, **rate_limit: object
) -> Settings:
    """Two organizations of the dev env0 issuer, each with a Vault credential assigned."""
    issuer = dev_issuer.issuer_settings("env0")
    credential = {
        "type": "vault_oidc",
        "name": "prod-vault",
        # Dry runs never call it: nothing needs to listen here.
        "settings": {"address": "http://127.0.0.1:9", "role": "r"},
    }
    return parse_settings(
        {
            "server": {"data_dir": str(tmp_path)},
            "security": {"allow_private_backends": True},
            "rate_limit": {"requests_per_minute": 60, "burst": 2, **rate_limit},
            "issuers": [issuer.model_dump(mode="json")],
            "organizations": [
                {"name": "acme", "issuer": issuer.name, "platform_org_id": ORG},
                {"name": "other", "issuer": issuer.name, "platform_org_id": OTHER_ORG},
            ],
            "credentials": [
                {**credential, "organization": "acme"},
                {**credential, "organization": "other"},
            ],
            "assignments": [
                {"organization": "acme", "project": PROJECT, "credentials": ["prod-vault"]},
                {"organization": "other", "project": PROJECT, "credentials": ["prod-vault"]},
            ],
        },
        {},
    )


@pytest.fixture
async def client(
    tmp_path: object, dev_issuer: ServedDevIssuer, aiohttp_client: AiohttpClient
) -> TestClient[web.Request, web.Application]:
    clock = FrozenClock(NOW)
    dev_issuer.clock = clock
    settings = broker_settings(tmp_path, dev_issuer)
    return await aiohttp_client(create_app(settings, clock=clock))


async def dry_run(
    client: TestClient[web.Request, web.Application], dev_issuer: ServedDevIssuer, org: str
) -> aiohttp.ClientResponse:
    token = dev_issuer.mint("env0", org=org, project=PROJECT)
    return await client.post(
        "/v1/exchange?dry_run=true",
        json={"credential": "prod-vault"},
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_an_organization_over_its_burst_gets_429_with_retry_after(
    client: TestClient[web.Request, web.Application], dev_issuer: ServedDevIssuer
) -> None:
    allowed = [await dry_run(client, dev_issuer, ORG) for _ in range(2)]
    assert [(await r.json())["allowed"] for r in allowed] == [True, True]
    limited = await dry_run(client, dev_issuer, ORG)
    trace = await limited.json()
    assert trace["allowed"] is False
    assert trace["reason"] == "rate_limited"
    assert [check["check"] for check in trace["checks"]] == ["token", "identity", "rate_limit"]
    assert trace["checks"][-1]["ok"] is False
    assert trace["checks"][-1]["reason"] == "rate_limited"
    exchange = await client.post(
        "/v1/exchange",
        json={"credential": "prod-vault"},
        headers={"Authorization": f"Bearer {dev_issuer.mint('env0', org=ORG, project=PROJECT)}"},
    )
    body = await exchange.json()
    assert (exchange.status, body["error"]) == (429, "rate_limited")
    assert exchange.headers["Retry-After"] == "1"
    events = await client.server.app[keys.STORE].audit.events()
    assert sum(1 for e in events if e.reason.endswith("rate_limited")) == 2


async def test_another_organization_has_its_own_bucket(
    client: TestClient[web.Request, web.Application], dev_issuer: ServedDevIssuer
) -> None:
    for _ in range(3):
        await dry_run(client, dev_issuer, ORG)
    other = await dry_run(client, dev_issuer, OTHER_ORG)
    assert (await other.json())["allowed"] is True


async def test_the_bucket_refills_with_time(
    client: TestClient[web.Request, web.Application], dev_issuer: ServedDevIssuer
) -> None:
    for _ in range(3):
        await dry_run(client, dev_issuer, ORG)
    clock = client.server.app[keys.CLOCK]
    assert isinstance(clock, FrozenClock)
    clock.advance(1)
    assert (await (await dry_run(client, dev_issuer, ORG)).json())["allowed"] is True


async def test_a_refused_redis_with_on_redis_error_deny_is_a_retryable_503(
    tmp_path: object, dev_issuer: ServedDevIssuer, aiohttp_client: AiohttpClient
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dev_issuer.clock = FrozenClock(NOW)
    settings = broker_settings(
        tmp_path, dev_issuer, redis_url=f"redis://127.0.0.1:{port}/0", on_redis_error="deny"
    )
    client = await aiohttp_client(create_app(settings, clock=dev_issuer.clock))
    exchange = await client.post(
        "/v1/exchange",
        json={"credential": "prod-vault"},
        headers={"Authorization": f"Bearer {dev_issuer.mint('env0', org=ORG, project=PROJECT)}"},
    )
    body = await exchange.json()
    assert exchange.status == 503
    assert (body["error"], body["reason"]) == ("temporarily_unavailable", "rate_limit_unavailable")
    assert int(exchange.headers["Retry-After"]) >= 1
