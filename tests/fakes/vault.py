"""A scripted fake Vault: answers each request with the next scripted reply and records it.

For what a real OpenBao cannot be made to do on demand: stall, answer 412 or 503, send bad
JSON, redirect. Serve ``FakeVault().app()`` with pytest-aiohttp's ``aiohttp_server``.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as the fake saw it."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: object


@dataclass(frozen=True, slots=True)
class Reply:
    """A scripted answer: a status and a JSON body (or raw bytes), or a stall that never ends."""

    status: int = 200
    body: object = None
    raw: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    stall: bool = False


def login_ok(
    client_token: str = "s.FakeClientTokenValue0000000000",
    *,
    lease_duration: int = 3600,
    policies: Iterable[str] = ("default", "env0-access"),
) -> Reply:
    """A successful JWT login answer, shaped like Vault's."""
    return Reply(
        200,
        {
            "request_id": "00000000-0000-0000-0000-000000000000",
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": None,
            "auth": {
                "client_token": client_token,
                "accessor": "fake-accessor",
                "policies": list(policies),
                "token_policies": list(policies),
                "lease_duration": lease_duration,
                "renewable": True,
                "entity_id": "fake-entity",
            },
        },
    )


def vault_errors(status: int, *messages: str) -> Reply:
    """An error answer with Vault's ``{"errors": [...]}`` body."""
    return Reply(status, {"errors": list(messages)})


class FakeVault:
    """Answers with the scripted replies in order, then with ``default``; records every request."""

    def __init__(self, replies: Iterable[Reply] = (), *, default: Reply | None = None) -> None:
        self._replies = deque(replies)
        self._default = default if default is not None else login_ok()
        self.requests: list[Recorded] = []

    def app(self) -> web.Application:
        """The aiohttp application to serve."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        text = await request.text()
        body: object = json.loads(text) if text else None
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        reply = self._replies.popleft() if self._replies else self._default
        if reply.stall:
            # Never answers; the client's timeout ends it and server shutdown cancels this.
            await asyncio.Event().wait()
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
        if reply.body is None:
            return web.Response(status=reply.status, headers=reply.headers)
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)
