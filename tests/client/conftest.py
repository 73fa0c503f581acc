"""Fixtures of the client's tests: the stand-ins, and an environment without CI variables."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pytest_aiohttp import AiohttpServer

from tests.client.fakes import (
    BrokerStandIn,
    GitHubStandIn,
    serve_broker_stand_in,
    serve_github_stand_in,
)


@pytest.fixture
async def broker_stand_in(aiohttp_server: AiohttpServer) -> AsyncIterator[BrokerStandIn]:
    """A running broker stand-in; hung requests are released at teardown."""
    stand_in = await serve_broker_stand_in(aiohttp_server)
    yield stand_in
    stand_in.release.set()


@pytest.fixture
async def github_stand_in(aiohttp_server: AiohttpServer) -> AsyncIterator[GitHubStandIn]:
    """A running GitHub ID-token endpoint stand-in."""
    stand_in = await serve_github_stand_in(aiohttp_server)
    yield stand_in
    stand_in.release.set()
