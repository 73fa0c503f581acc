"""A broker app under test: the settings of one organization, and a runner's requests.

``one_org_settings`` is the policy most tests need: organization ``acme`` of one issuer, its
credentials (all assigned to one project when ``project`` is given), loopback backends allowed.
``post_exchange`` and ``post_token_exchange`` are the two ways a runner asks for a credential.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from joserfc.jwk import KeySet

from tests.support.platform import ServedDevIssuer
from tokenbroker.config import IssuerSettings, Settings, parse_settings
from tokenbroker.policy.models import AuditEvent
from tokenbroker.web import keys

ORGANIZATION = "acme"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
# The broker's own token: no backend to call, so what fails is what the test broke.
ID_TOKEN: dict[str, object] = {
    "organization": ORGANIZATION,
    "name": "id-token",
    "type": "oidc_token",
    "token": "mint",
    "audience": "https://example.test/ci",
}


def credential_entry(
    name: str, type_name: str, settings: Mapping[str, object], /, **extra: Any
) -> dict[str, object]:
    """A credential of ``acme``; ``extra["settings"]`` overrides single settings, the rest of
    ``extra`` is added (``token``, ``audience``, ``bound_claims``...)."""
    merged = {**settings, **extra.pop("settings", {})}
    return {
        "organization": ORGANIZATION,
        "name": name,
        "type": type_name,
        "settings": merged,
        **extra,
    }


def one_org_settings(
    data_dir: Path,
    issuer: IssuerSettings,
    credentials: Sequence[Mapping[str, object]],
    *,
    org: str,
    project: str | None = None,
    **sections: object,
) -> Settings:
    """Organization ``acme`` (platform id ``org``) of ``issuer`` with ``credentials``.

    With ``project``, every credential is assigned to it. ``sections`` are added as they are;
    a ``server`` section is merged with the data directory.
    """
    server: dict[str, object] = {"data_dir": str(data_dir)}
    server.update(sections.pop("server", {}))  # type: ignore[call-overload]
    policy: dict[str, object] = {
        "server": server,
        # The backends and issuers of tests listen on loopback.
        "security": {"allow_private_backends": True},
        "issuers": [issuer.model_dump(mode="json")],
        "organizations": [{"name": ORGANIZATION, "issuer": issuer.name, "platform_org_id": org}],
        "credentials": list(credentials),
    }
    if project is not None:
        names = [str(credential["name"]) for credential in credentials]
        policy["assignments"] = [
            {"organization": ORGANIZATION, "project": project, "credentials": names}
        ]
    return parse_settings({**policy, **sections}, {})


async def post_exchange(
    client: TestClient[Any, Any],
    token: str | None,
    credential: str | None = None,
    *,
    query: str = "",
) -> aiohttp.ClientResponse:
    """POST /v1/exchange with ``token`` as bearer (none when None), naming ``credential``."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = {"credential": credential} if credential is not None else None
    return await client.post(f"/v1/exchange{query}", json=body, headers=headers)


async def post_token_exchange(
    client: TestClient[Any, Any], subject_token: str, audience: str, **form: str
) -> aiohttp.ClientResponse:
    """POST /oauth2/token: an RFC 8693 exchange of a JWT for ``audience``, ``form`` added."""
    data = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": JWT_TOKEN_TYPE,
        "audience": audience,
        **form,
    }
    return await client.post("/oauth2/token", data=data)


@dataclass
class ServedBroker:
    """A broker app served on ``public_url``, trusting the dev platform issuer ``issuer``.

    Test modules subclass it with the stand-ins their broker is wired to and a ``token``.
    """

    client: TestClient[web.Request, None]
    app: web.Application
    public_url: str
    issuer: ServedDevIssuer

    async def exchange(
        self, token: str, credential: str, *, query: str = ""
    ) -> aiohttp.ClientResponse:
        """POST /v1/exchange with a bearer token, naming a credential."""
        return await post_exchange(self.client, token, credential, query=query)

    async def jwks(self) -> KeySet:
        """The broker's own published keys."""
        response = await self.client.get("/.well-known/jwks.json")
        return KeySet.import_key_set(await response.json())

    async def audit(self, credential: str | None = None) -> list[AuditEvent]:
        """Audit events, optionally of one credential."""
        return await self.app[keys.STORE].audit.events(credential=credential)


class ReservedPort:
    """A loopback port bound now and served by a test server later, for an app whose settings
    name its own URL: no other process can take the port in between (a port that was only
    found free could be)."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]

    def server(self, app: web.Application) -> TestServer:
        """A test server of ``app`` listening on the reserved port."""
        reserved = self._socket
        return TestServer(app, port=self.port, socket_factory=lambda *_: reserved)
