"""The client side of the dev stand-ins (Entra ID, Google STS): they fetch issuers' documents.

Each stand-in opens one client session while its app runs (``app.cleanup_ctx``) and fetches
discovery documents and JWKS through it, as the real services do: no redirects, a size limit,
200 or nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

_TIMEOUT_SECONDS = 10


class DocumentUnavailable(Exception):
    """The document could not be fetched: no answer, not 200, or not JSON."""


class DocumentTooLarge(DocumentUnavailable):
    """The document is larger than the caller allows."""


class OutboundSession:
    """A client session that lives as long as the stand-in's app; ``fetch_json`` uses it."""

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None

    def application(
        self, routes: Iterable[web.AbstractRouteDef], *, max_body_bytes: int
    ) -> web.Application:
        """An app of ``routes`` that opens this session while it runs."""
        app = web.Application(client_max_size=max_body_bytes)
        app.add_routes(routes)
        app.cleanup_ctx.append(self.cleanup_ctx)
        return app

    @asynccontextmanager
    async def cleanup_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        """Open the session when the app starts and close it when the app stops."""
        timeout = aiohttp.ClientTimeout(total=_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._http = session
            yield
            self._http = None

    async def fetch_json(self, url: str, max_bytes: int) -> object:
        """The JSON document at ``url``; DocumentUnavailable (or DocumentTooLarge) otherwise."""
        assert self._http is not None, "the app is not running"
        try:
            async with self._http.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise DocumentUnavailable(f"{url} answered {response.status}")
                body = await response.content.read(max_bytes + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DocumentUnavailable(str(exc)) from None
        if len(body) > max_bytes:
            raise DocumentTooLarge(f"{url} is larger than {max_bytes} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise DocumentUnavailable(f"{url} is not JSON") from None
