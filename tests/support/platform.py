"""The dev platform issuer as a pytest fixture: real RSA keys, served by a real aiohttp server.

``dev_issuer.mint("env0", org=..., project=...)`` gives a signed env0-shaped token and
``dev_issuer.issuer_settings("env0")`` the IssuerSettings that trust it. Set
``dev_issuer.clock`` to the app's FrozenClock so minted ``iat``/``exp`` match the validator's time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from tokenbroker.devstack.platform_issuer import DevPlatformIssuer, create_issuer_app


class ServedDevIssuer(DevPlatformIssuer):
    """A DevPlatformIssuer with the test server that serves its discovery and JWKS."""

    server: TestServer

    async def stop(self) -> None:
        """Stop serving (the issuer's JWKS endpoint goes down)."""
        await self.server.close()


@pytest.fixture
async def dev_issuer(tmp_path: Path, aiohttp_server: AiohttpServer) -> ServedDevIssuer:
    """A dev platform issuer with keys in tmp_path, served on loopback for the test."""
    issuer = ServedDevIssuer(tmp_path / "dev-issuer-keys")
    issuer.server = await aiohttp_server(create_issuer_app(issuer))
    issuer.base_url = str(issuer.server.make_url("")).rstrip("/")
    return issuer
