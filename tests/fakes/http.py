"""Answers of the thread-served fakes (``http.server`` handlers) that tests run beside a broker."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


def send_json(handler: BaseHTTPRequestHandler, document: object) -> None:
    """Answer 200 with ``document`` as JSON, its length given."""
    body = json.dumps(document).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
