"""Credentials sent with bytes the HTTP parser refuses never reach a log line or a response.

A real ``tokenbroker serve`` process at DEBUG, in both log formats, gets a canary admin token
and a canary platform JWT (really signed by the dev issuer) in ``Authorization`` headers that
end in a byte aiohttp's parser refuses, run past its 8190-byte line limit, or are well formed.
Everything the process writes (its own loggers, aiohttp's, every library's) and every byte
sent back is searched for the canaries.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from tests.support.platform import ServedDevIssuer
from tests.support.serve import free_port, start_serve, wait_until_ready, write_config

from tokenbroker.devstack.processes import stop_process
from tokenbroker.web.admin.auth import admin_token_digest

ADMIN_CANARY = "admin-canary-5f0c1b9e7d2a4c38"
ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
# What a runner's shell sends: a token file with CRLF line ends leaves a \r on the value.
REFUSED_ENDINGS = [b"\x7f", b"\x01", b"\r"]
OVER_LINE_LIMIT = b"A" * 9000


async def raw_request(port: int, request_line: bytes, authorization: bytes) -> bytes:
    """Send one request over a plain socket, exactly these bytes, and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            request_line + b"\r\nHost: broker\r\nAuthorization: " + authorization + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        )
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def leaked(canary: str, text: bytes) -> bool:
    """Whether the canary, or its last part (a JWT's signature), shows in ``text``."""
    parts = [canary, canary.rsplit(".", 1)[-1]]
    return any(part.encode() in text for part in parts)


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_canary_credentials_with_refused_bytes_never_show_in_logs_or_answers(
    tmp_path: Path, dev_issuer: ServedDevIssuer, log_format: str
) -> None:
    port = free_port()
    issuer = dev_issuer.issuer_settings("env0")
    config = write_config(
        tmp_path / "serve.toml",
        {
            "server": {"data_dir": str(tmp_path / "data"), "host": "127.0.0.1", "port": port},
            "logging": {"level": "DEBUG", "format": log_format},
            "admin": {"tokens": [admin_token_digest(ADMIN_CANARY)]},
            "security": {"allow_private_backends": True},
            "issuers": [issuer.model_dump(mode="json")],
        },
    )
    jwt_canary = dev_issuer.mint("env0", org=ORG, project=PROJECT)
    log = tmp_path / "serve.log"
    process = start_serve(config, log)
    answers: list[bytes] = []
    try:
        await asyncio.to_thread(wait_until_ready, process, port, log)
        targets = [
            (b"POST /v1/exchange HTTP/1.1", jwt_canary),
            (b"GET /v1/admin/organizations HTTP/1.1", ADMIN_CANARY),
        ]
        for request_line, canary in targets:
            bearer = b"Bearer " + canary.encode()
            for ending in REFUSED_ENDINGS:
                answers.append(await raw_request(port, request_line, bearer + ending))
            answers.append(await raw_request(port, request_line, bearer + OVER_LINE_LIMIT))
        async with aiohttp.ClientSession() as client:
            well_formed = [
                ("POST", "/v1/exchange", jwt_canary),
                ("GET", "/v1/admin/organizations", ADMIN_CANARY),
            ]
            for method, path, canary in well_formed:
                async with client.request(
                    method,
                    f"http://127.0.0.1:{port}{path}",
                    headers={"Authorization": f"Bearer {canary}"},
                ) as reply:
                    answers.append(await reply.read())
                    assert reply.status < 500
    finally:
        returncode = stop_process(process, 30)
    output = log.read_bytes()
    assert returncode == 0, output.decode(errors="replace")
    refused = [answer for answer in answers if answer.startswith(b"HTTP/1.")]
    assert len(refused) == 2 * (len(REFUSED_ENDINGS) + 1)
    assert all(answer.startswith(b"HTTP/1.0 400 ") for answer in refused), refused
    assert all(b'"invalid_request"' in answer for answer in refused), refused
    # The requests did reach the process and were logged, just without the credentials.
    assert output.count(b"malformed HTTP request from 127.0.0.1") == len(refused)
    for canary in (jwt_canary, ADMIN_CANARY):
        assert not leaked(canary, output), output.decode(errors="replace")
        assert not any(leaked(canary, answer) for answer in answers), answers
