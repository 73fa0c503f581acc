"""OpenBao fixtures for tests; the server and set-up helpers live in tokenbroker.devstack.openbao.

Use the session-scoped ``openbao`` fixture (register this module in ``pytest_plugins``), or
``with OpenBaoDevServer() as bao:`` for a server of your own. When the issuer's JWKS is served on
the test's event loop, call ``configure_jwt_auth`` through ``asyncio.to_thread`` (OpenBao
fetches the JWKS while it handles the config write). Give each test its own auth ``path`` on
the shared server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import hvac
import pytest

from tokenbroker.devstack.openbao import (
    OpenBaoDevServer,
    OpenBaoStartError,
    configure_jwt_auth,
    free_port_pair,
    kv_policy,
)

__all__ = [
    "OpenBaoDevServer",
    "OpenBaoStartError",
    "configure_jwt_auth",
    "create_namespace",
    "free_port_pair",
    "kv_policy",
]


def create_namespace(client: hvac.Client, namespace: str) -> None:
    """Create an OpenBao namespace (OpenBao 2.3+ has them in every edition), if it is missing."""
    with contextlib.suppress(hvac.exceptions.InvalidRequest):
        client.sys.create_namespace(path=namespace)


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBaoDevServer]:
    """One real OpenBao dev server for the whole test session (starting one takes seconds)."""
    with OpenBaoDevServer() as server:
        yield server


@pytest.fixture(scope="session")
def openbao_tls() -> Iterator[OpenBaoDevServer]:
    """A real OpenBao dev server behind TLS with its own CA (``ca_cert_pem``)."""
    with OpenBaoDevServer(tls=True) as server:
        yield server
