"""OpenBao fixtures for tests; the server and set-up helpers live in tokenbroker.devstack.openbao.

Use the session-scoped ``openbao`` fixture (register this module in ``pytest_plugins``), or
``with OpenBaoDevServer() as bao:`` for a server of your own. When the issuer's JWKS is served on
the test's event loop, call ``configure_jwt_auth`` through ``asyncio.to_thread`` (OpenBao
fetches the JWKS while it handles the config write). Give each test its own auth ``path`` on
the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping

import hvac
import pytest

from tests.support.platform import ServedDevIssuer
from tokenbroker.devstack.openbao import (
    OpenBaoDevServer,
    OpenBaoStartError,
    configure_jwt_auth,
    free_port_pair,
    kv_policy,
)
from tokenbroker.identity.profiles.env0 import AUDIENCE as ENV0_AUDIENCE

__all__ = [
    "OpenBaoDevServer",
    "OpenBaoStartError",
    "configure_jwt_auth",
    "create_namespace",
    "free_port_pair",
    "kv_policy",
    "trust_env0_tokens",
]


def create_namespace(client: hvac.Client, namespace: str) -> None:
    """Create an OpenBao namespace (OpenBao 2.3+ has them in every edition), if it is missing."""
    with contextlib.suppress(hvac.exceptions.InvalidRequest):
        client.sys.create_namespace(path=namespace)


async def trust_env0_tokens(
    bao: OpenBaoDevServer,
    issuer: ServedDevIssuer,
    path: str,
    *,
    role: str,
    org: str,
    policy: str,
    kv_mount: str,
    audience: str = ENV0_AUDIENCE,
    claims: Mapping[str, str] | None = None,
    token_ttl: str | None = None,
) -> None:
    """JWT auth at ``path`` trusting the dev issuer's env0 tokens of ``org`` (and ``claims``).

    The role's tokens get ``policy``, read/write on ``kv_mount``. In a thread: OpenBao fetches
    the JWKS, served on the test's event loop, while it takes the write.
    """
    await asyncio.to_thread(
        configure_jwt_auth,
        bao.client(),
        path=path,
        jwks_url=issuer.jwks_url("env0"),
        bound_issuer=issuer.issuer_url("env0"),
        role=role,
        bound_audiences=[audience],
        bound_claims={"organizationId": org, **(claims or {})},
        policies=[policy],
        kv_mount=kv_mount,
        token_ttl=token_ttl,
    )


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
