"""Reading backends' JSON answers through the shared session: size-capped, never trusted."""

from __future__ import annotations

import json
from collections.abc import Mapping

import aiohttp

from tokenbroker.errors import UpstreamError

# A token endpoint's answer is a small JSON object; a huge body is a misbehaving upstream.
DEFAULT_MAX_BYTES = 64 * 1024


async def read_json_object(
    response: aiohttp.ClientResponse, service: str, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Mapping[str, object] | None:
    """The answer as a JSON object, or None when it is not one; UpstreamError when oversized."""
    received = bytearray()
    async for chunk in response.content.iter_chunked(16 * 1024):
        received += chunk
        if len(received) > max_bytes:
            raise UpstreamError("backend_error", f"{service} answered with an oversized body")
    try:
        parsed = json.loads(received)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    return {str(key): value for key, value in parsed.items()}
