"""``POST /v1/exchange``: a platform token in, a credential out (or a dry-run trace)."""

from __future__ import annotations

import json

from aiohttp import web

from tokenbroker.backends.registry import backend_class
from tokenbroker.errors import InvalidToken
from tokenbroker.exchange.service import ExchangeRequest, RunnerDocument
from tokenbroker.logs import request_id_var
from tokenbroker.output import (
    parse_format,
    render,
)
from tokenbroker.web import keys
from tokenbroker.web.bearer import bearer_token
from tokenbroker.web.client_limit import limits_clients
from tokenbroker.web.parsing import MalformedRequest, is_utf8_text, loads_json, query_bool
from tokenbroker.web.refused import audits_refusals


def platform_token(request: web.Request) -> str:
    """The platform token of the Authorization header; 401 when absent or malformed."""
    token = bearer_token(request)
    if token is None:
        raise InvalidToken(
            "token_missing", "send the platform token as 'Authorization: Bearer <token>'"
        )
    return token


async def requested_credential(request: web.Request) -> str | None:
    """The optional ``{"credential": "<name>"}`` body."""
    raw = await request.read()
    if not raw.strip():
        return None
    body = loads_json(raw)
    if not isinstance(body, dict):
        raise MalformedRequest("body_malformed", "the body must be a JSON object")
    unknown = sorted(set(body) - {"credential"})
    if unknown:
        raise MalformedRequest("body_malformed", f"unknown field(s): {', '.join(unknown)}")
    credential = body.get("credential")
    if credential is None:
        return None
    if not isinstance(credential, str) or not 0 < len(credential) <= 128:
        raise MalformedRequest("body_malformed", "credential must be a name of 1-128 characters")
    if not is_utf8_text(credential):
        raise MalformedRequest(
            "credential_malformed", "credential must be UTF-8 text", credential=credential
        )
    return credential


async def exchange(request: web.Request) -> web.Response:
    """Exchange the bearer platform token for the requested credential."""
    fmt = parse_format(request.query.get("format"))
    dry_run = query_bool(request, "dry_run")
    exchange_request = ExchangeRequest(
        token=platform_token(request),
        credential=await requested_credential(request),
        request_id=request_id_var.get(),
        client_address=request.remote,
        format=fmt,
    )
    service = request.app[keys.SERVICE]
    if dry_run:
        trace = await service.explain(exchange_request)
        return web.json_response(trace.as_dict())
    result = await service.exchange(exchange_request)
    if isinstance(result, RunnerDocument):
        if isinstance(result.body, str):
            return _no_store(result.body, "text/plain")
        return _no_store(json.dumps(result.body), "application/json")
    if not result.reused and _runner_gone(request):
        # Issued while the runner hung up: nobody holds it, so it is revoked where it can be.
        await service.orphaned(result, request_id=request_id_var.get())
    content_type, body = render(
        fmt,
        result.credential.name,
        backend_class(result.credential.type),
        result.issued,
        lease=result.lease_id,
    )
    return _no_store(body, content_type)


def _runner_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _no_store(body: str, content_type: str) -> web.Response:
    return web.Response(
        text=body,
        content_type=content_type,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def add_routes(app: web.Application) -> None:
    """Register the exchange route."""
    app.router.add_post("/v1/exchange", limits_clients(audits_refusals(exchange)))
