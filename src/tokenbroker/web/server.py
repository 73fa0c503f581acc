"""Serving the app: aiohttp's runner, with generic answers to requests its HTTP parser refuses.

aiohttp answers a request its parser refuses (a header byte it does not allow, a line over
8190 bytes) from ``RequestHandler.handle_error``, before any middleware runs: the 400 body is
the parser's message, which quotes the offending header line (a whole ``Authorization:
Bearer ...`` included), and the same text is logged at ERROR with a traceback. aiohttp 3.14
has no setting for either; from 4.0 (aio-libs/aiohttp#12925) such requests pass through the
middlewares instead. Until then the request handler is subclassed, which needs the server and
the runner that build it subclassed too: ``BrokerAppRunner`` is ``web.AppRunner`` with that one
change (web/serving.py serves on it).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError

from tokenbroker.web.errors import error_response

log = logging.getLogger(__name__)


class GenericParserErrorHandler(web.RequestHandler):
    """aiohttp's request handler, answering a request its parser refused with a generic 400.

    The answer and the log line name the kind of error, never the parser's message: it quotes
    the request's bytes, a credential among them.
    """

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The response for a request that never reached the app."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # A first request that is not HTTP at all is a port scan or TLS to a plain port.
        level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.INFO
        log.log(level, "malformed HTTP request from %s: %s", request.remote, type(exc).__name__)
        response = error_response(
            status, "invalid_request", "the HTTP request is malformed", reason="http_malformed"
        )
        response.force_close()
        return response


class BrokerServer(web.Server):
    """aiohttp's low-level server, serving each connection with ``GenericParserErrorHandler``."""

    def __call__(self) -> GenericParserErrorHandler:
        """A handler for a new connection, as ``web.Server`` makes one."""
        return GenericParserErrorHandler(self, loop=self._loop, **self._kwargs)


class BrokerAppRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a ``BrokerServer``."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        kwargs: dict[str, Any] = server._kwargs
        return BrokerServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            **kwargs,
        )
