"""A JWKS document served over loopback HTTP from a thread, for a session-scoped OpenBao.

It runs in a thread, not on a test's event loop, so OpenBao can fetch keys from it across many
tests, and while a test blocks in a synchronous hvac call. OpenBao accepts an http ``jwks_url``
on loopback.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from tests.fakes.http import send_json

JWKS_PATH = "/.well-known/jwks.json"


class _JwksHandler(BaseHTTPRequestHandler):
    server: _JwksHttpServer

    def do_GET(self) -> None:
        if self.path != JWKS_PATH:
            self.send_error(404)
            return
        self.server.fetches += 1
        send_json(self, self.server.document)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


class _JwksHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    document: Mapping[str, object]
    fetches: int


class JwksServer:
    """Serves a JWKS document at ``url`` from a background thread until closed."""

    def __init__(self, document: Mapping[str, object]) -> None:
        self._server = _JwksHttpServer(("127.0.0.1", 0), _JwksHandler)
        self._server.document = document
        self._server.fetches = 0
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The JWKS URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{JWKS_PATH}"

    @property
    def fetches(self) -> int:
        """How many times the JWKS was fetched."""
        return self._server.fetches

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
