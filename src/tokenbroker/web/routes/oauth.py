"""``POST /oauth2/token``: RFC 8693 token exchange over the same service."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

from aiohttp import web

from tokenbroker.backends.base import CredentialTraits, SingleToken
from tokenbroker.errors import (
    AccessDenied,
    BrokerError,
    InvalidGrant,
    InvalidRequest,
    InvalidTarget,
    InvalidToken,
    UnsupportedGrantType,
)
from tokenbroker.exchange.service import ExchangeRequest, ExchangeResult
from tokenbroker.logs import request_id_var
from tokenbroker.policy.models import Credential
from tokenbroker.web import keys
from tokenbroker.web.client_limit import limits_clients
from tokenbroker.web.parsing import MalformedRequest, UnsupportedTarget, read_form
from tokenbroker.web.refused import audits_refusals

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
SUBJECT_TOKEN_TYPES = frozenset(
    {"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"}
)
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
# Reasons that mean "this audience is not yours to ask for" rather than "your token is bad".
_TARGET_REASONS = frozenset(
    {"credential_not_assigned", "credential_required", "project_not_assigned", "no_project"}
)


def _as_oauth_error(exc: BrokerError) -> BrokerError:
    # RFC 6749 section 5.2 codes for a token endpoint; upstream failures keep their own.
    if isinstance(exc, InvalidToken):
        return InvalidGrant(exc.reason, exc.description)
    if isinstance(exc, AccessDenied):
        if exc.reason in _TARGET_REASONS:
            return InvalidTarget(exc.reason, exc.description)
        return InvalidGrant(exc.reason, exc.description)
    return exc


def single_token_check(requested_type: str | None) -> Callable[[Credential, CredentialTraits], str]:
    """RFC 8693's refusals, run with the exchange's checks before any backend is called.

    The credential must be one token, of ``requested_token_type`` when the caller names one.
    """

    def fits(credential: Credential, traits: CredentialTraits) -> str:
        token = traits.single_token
        if token is None:
            raise InvalidTarget(
                "token_type_unsupported",
                f"credential {credential.name!r} ({credential.type}) is not a single token; "
                "use POST /v1/exchange",
            )
        if requested_type and requested_type != token.token_type:
            raise InvalidRequest(
                "requested_token_type_unsupported", f"this credential issues {token.token_type}"
            )
        return f"credential {credential.name!r} is one token of type {token.token_type}"

    return fits


async def exchange_form(request: web.Request) -> Mapping[str, str]:
    """The token request's form; RFC 8693 parameters the broker does not implement are refused.

    Ignoring them would answer a different question than the one asked: a token for an actor,
    a resource or a scope the broker never checked.
    """
    fields = await read_form(request)
    if "actor_token" in fields or "actor_token_type" in fields:
        raise MalformedRequest(
            "actor_token_unsupported", "delegation (actor_token) is not supported"
        )
    if "scope" in fields:
        raise MalformedRequest(
            "scope_unsupported", "scope is not supported; name the credential as audience"
        )
    if "resource" in fields:
        raise UnsupportedTarget(
            "resource_unsupported", "resource is not supported; name the credential as audience"
        )
    return fields


async def token(request: web.Request) -> web.Response:
    """Exchange ``subject_token`` for the credential named by ``audience``."""
    fields = await exchange_form(request)
    grant_type = fields.get("grant_type")
    if grant_type is None:
        raise InvalidRequest("grant_type_missing", "grant_type is required")
    if grant_type != TOKEN_EXCHANGE_GRANT:
        raise UnsupportedGrantType("grant_type_unsupported", f"use {TOKEN_EXCHANGE_GRANT}")
    subject_token = fields.get("subject_token")
    if not subject_token:
        raise InvalidRequest("subject_token_missing", "subject_token is required")
    if fields.get("subject_token_type") not in SUBJECT_TOKEN_TYPES:
        raise InvalidRequest(
            "subject_token_type_unsupported",
            f"subject_token_type must be one of: {', '.join(sorted(SUBJECT_TOKEN_TYPES))}",
        )
    audience = fields.get("audience") or None
    service = request.app[keys.SERVICE]
    exchange_request = ExchangeRequest(
        token=subject_token,
        credential=audience,
        request_id=request_id_var.get(),
        client_address=request.remote,
        output=single_token_check(fields.get("requested_token_type")),
    )
    try:
        result = await service.exchange(exchange_request)
    except BrokerError as exc:
        raise _as_oauth_error(exc) from None
    # No format was asked for: the credential was issued, not described.
    assert isinstance(result, ExchangeResult)
    # The check above ran before the backend: this credential is a single token.
    single = cast(SingleToken, result.traits.single_token)
    issued_type = single.token_type
    now = request.app[keys.CLOCK].now()
    return web.json_response(
        {
            "access_token": result.issued.values[single.value_name],
            "issued_token_type": issued_type,
            "token_type": "Bearer" if issued_type == ACCESS_TOKEN_TYPE else "N_A",
            "expires_in": max(0, int(result.issued.expires_at.timestamp() - now)),
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def add_routes(app: web.Application) -> None:
    """Register the token endpoint."""
    app.router.add_post("/oauth2/token", limits_clients(audits_refusals(token)))
