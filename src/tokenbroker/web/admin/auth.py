"""Admin authentication: a bearer token whose SHA-256 is configured in ``[admin]``.

A token is global (``tokens``, ``named_tokens``) or scoped to some organizations
(``org_tokens``); either way it resolves to an :class:`AdminPrincipal`, which the admin API and
the console ask what the bearer may see.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from tokenbroker.config.models import GLOBAL_ADMIN_NAME, AdminSettings
from tokenbroker.errors import Forbidden, Unauthorized
from tokenbroker.web.bearer import bearer_token


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    """Who an admin token belongs to: its name, and the organizations it may see (None: all)."""

    name: str
    organizations: frozenset[str] | None = None

    @property
    def is_global(self) -> bool:
        """Whether this admin sees every organization (and the broker-wide pages)."""
        return self.organizations is None

    def may_see(self, organization: str | None) -> bool:
        """Whether the admin may see and change this organization."""
        if self.organizations is None:
            return True
        return organization is not None and organization in self.organizations


ADMIN_PRINCIPAL = web.RequestKey("admin_principal", AdminPrincipal)


def admin_token_digest(token: str) -> str:
    """The form an admin token is configured in: ``sha256:<hex>`` of its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def admin_token_matches(token: str, configured: Sequence[str]) -> bool:
    """Whether the token's digest is one of the configured ones, compared in constant time."""
    return (
        AdminTokens([(d, AdminPrincipal(GLOBAL_ADMIN_NAME)) for d in configured]).find(token)
        is not None
    )


class AdminTokens:
    """The configured admin tokens' digests, each with the principal it authenticates."""

    def __init__(self, entries: Sequence[tuple[str, AdminPrincipal]]) -> None:
        self._entries = tuple((digest.encode("ascii"), who) for digest, who in entries)

    @classmethod
    def from_settings(cls, admin: AdminSettings) -> AdminTokens:
        """Every token of ``[admin]``: ``tokens`` are named ``admin``, the others by their name."""
        entries = [(digest, AdminPrincipal(GLOBAL_ADMIN_NAME)) for digest in admin.tokens]
        entries += [(t.hash, AdminPrincipal(t.name)) for t in admin.named_tokens]
        entries += [
            (t.hash, AdminPrincipal(t.name, frozenset(t.organizations))) for t in admin.org_tokens
        ]
        return cls(entries)

    def by_name(self, name: str) -> AdminPrincipal | None:
        """The principal of that name (a console session remembers the name only)."""
        for _, who in self._entries:
            if who.name == name:
                return who
        return None

    def find(self, token: str) -> AdminPrincipal | None:
        """The principal of the token, or None; every digest is compared, in constant time,
        so the time taken does not say which one matched."""
        presented = admin_token_digest(token).encode("ascii")
        found: AdminPrincipal | None = None
        for digest, who in self._entries:
            if hmac.compare_digest(presented, digest):
                found = who
        return found


def admin_auth_middleware(tokens: AdminTokens) -> Middleware:
    """A middleware admitting only requests that carry a configured admin token; the handler
    finds its principal at ``request[ADMIN_PRINCIPAL]``."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = bearer_token(request)
        if token is None:
            raise Unauthorized(
                "admin_token_required", "send an admin token as 'Authorization: Bearer <token>'"
            )
        principal = tokens.find(token)
        if principal is None:
            raise Forbidden("admin_token_invalid", "the admin token is not valid")
        request[ADMIN_PRINCIPAL] = principal
        return await handler(request)

    return authenticate
