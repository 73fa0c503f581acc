"""A property: whatever arrives at any route (body, headers, query, content type), never a 5xx.

Requests are written as raw bytes to a real server on loopback, so nothing a client library
would refuse to send is left out: repeated headers, charsets that do not exist, bodies in any
encoding. Tokens are the real ones too (an admin token, a signed platform token) beside junk.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpServer
from tests.support.platform import ServedDevIssuer
from tests.web.admin.conftest import ADMIN_TOKEN
from tests.web.test_hostile_requests import ORG, PROJECT, hostile_settings

from tokenbroker.config import parse_settings
from tokenbroker.web.app import create_app

# Per route: every route gets its own run, so none is starved of the inputs that matter to it.
MAX_EXAMPLES = 30


def route_templates() -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves (building the app does no I/O)."""
    app = create_app(parse_settings({"server": {"data_dir": "unused"}}, {}))
    return sorted(
        {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None and route.method != "HEAD"
        }
    )


_segments = st.text(max_size=20).map(lambda s: urllib.parse.quote(s, safe=""))
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)
# Nesting past the interpreter's stack first: Hypothesis starts from the first alternative.
_bodies = (
    st.sampled_from([b"[" * 2_000, b"[" * 60_000, b'{"a": ' * 5_000])
    | st.binary(max_size=200)
    | st.lists(st.tuples(st.text(max_size=10), st.text(max_size=10)), max_size=4).map(
        lambda pairs: urllib.parse.urlencode(pairs).encode()
    )
    | _json_values.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(
        st.sampled_from(["credential", "name", "grant_type", "subject_token", "audience", "x"]),
        _json_values,
        max_size=4,
    ).map(lambda v: json.dumps(v).encode())
)
_content_types = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]
).flatmap(
    lambda base: st.sampled_from(
        ["", "; charset=utf-8", "; charset=utf-16", "; charset=bogus"]
    ).map(lambda param: base + param)
)
_queries = st.lists(
    st.tuples(
        st.sampled_from(["dry_run", "format", "limit", "outcome", "before", "project", "x"]),
        st.sampled_from(["true", "1", "yes", "", "json", "env", "-1", "9" * 30]) | st.text(),
    ),
    max_size=4,
).map(urllib.parse.urlencode)
_header_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


def _request(method: str, path: str, query: str, headers: list[bytes], body: bytes) -> bytes:
    target = (path + ("?" + query if query else "")).encode()
    head = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: broker", b"Connection: close"]
    head += [*headers, b"Content-Length: " + str(len(body)).encode()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _status(port: int, raw: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(("method", "template"), route_templates())
async def test_no_request_to_a_route_gets_a_5xx(
    tmp_path: Path,
    dev_issuer: ServedDevIssuer,
    aiohttp_server: AiohttpServer,
    method: str,
    template: str,
) -> None:
    server = await aiohttp_server(create_app(hostile_settings(tmp_path, dev_issuer)))
    platform = dev_issuer.mint("env0", org=ORG, project=PROJECT)
    authorization = st.sampled_from(
        [f"Bearer {ADMIN_TOKEN}", f"Bearer {platform}", "Bearer junk", "Basic eA==", ""]
    ).map(lambda v: b"Authorization: " + v.encode())

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        segments=st.lists(_segments, min_size=3, max_size=3),
        query=_queries,
        auth=st.lists(authorization, min_size=1, max_size=2),
        content_type=_content_types,
        extra=st.lists(_header_bytes.map(lambda v: b"X-Junk: " + v), max_size=2),
        body=_bodies,
    )
    def run(
        segments: list[str],
        query: str,
        auth: list[bytes],
        content_type: str,
        extra: list[bytes],
        body: bytes,
    ) -> None:
        path = template
        for segment in segments:
            start, end = path.find("{"), path.find("}")
            if start < 0:
                break
            path = path[:start] + (segment or "x") + path[end + 1 :]
        headers = [*auth, b"Content-Type: " + content_type.encode(), *extra]
        status = _status(server.port, _request(method, path, query, headers, body))
        assert status < 500, (method, path, query, headers, body[:200])

    await asyncio.to_thread(run)
