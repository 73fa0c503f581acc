"""Talking to the broker's ``POST /v1/exchange``, and reading its answers and errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from tokenbroker import __version__
from tokenbroker.client.failures import ClientFailure, Denied, Unavailable, UsageFailure
from tokenbroker.client.retry import Attempt, HttpReply, post_attempt
from tokenbroker.config.urls import require_trusted_url
from tokenbroker.identity.profiles import PROFILES

# Formats the client may ask for; the broker decides which it serves (and says so when not).
CLIENT_FORMATS = (
    "env",
    "shell",
    "json",
    "aws-credential-process",
    "gcp-executable",
    "gcp-external-account",
    "azure-federated-token",
)
# A credential document is a few KB; anything far larger is not the broker talking.
MAX_REPLY_BYTES = 1024 * 1024

# What to do about each refusal, by the broker's stable ``reason`` code.
_FIXES: dict[str, str] = {
    "token_missing": "no token reached the broker; check that no proxy strips the "
    "Authorization header",
    "token_malformed": "the platform token is not a JWT; check the variable or file it came from",
    "token_expired": "the platform token has expired; get a fresh one (re-run the step)",
    "token_too_old": "the platform token is older than the broker accepts; get a fresh one",
    "token_not_yet_valid": "the token is not valid yet; check the runner's clock",
    "token_issued_in_future": "the token was issued in the future; check the runner's clock",
    "token_too_large": "the token is over the broker's size limit; check where it came from",
    "signature_invalid": "the token is not signed by its issuer's keys; use the platform's "
    "token unmodified",
    "unknown_kid": "the token's signing key is not in its issuer's JWKS; get a fresh token",
    "unknown_issuer": "the broker does not trust this token's issuer; an administrator must "
    "add it under [[issuers]]",
    "audience_invalid": "the token's audience is not one the broker accepts; request the token "
    "for the broker's audience (--audience) or ask an administrator to add it",
    "algorithm_not_allowed": "the token's algorithm is not allowed for its issuer",
    "organization_unknown": "the platform organization is not registered at the broker; an "
    "administrator must add it",
    "project_not_assigned": "no credential is assigned to this project; an administrator must "
    "assign one",
    "credential_not_assigned": "pick an assigned credential with --credential, or ask an "
    "administrator to assign this one to the project",
    "credential_required": "several credentials are assigned; name one with --credential",
    "bound_claims_mismatch": "this run does not satisfy the credential's bound claims; run again "
    "with --dry-run to see expected and actual values",
    "backend_refused": "the backend (Vault role, AWS trust policy, GCP provider) refused the "
    "broker's token; check its bound claims and audience",
    "credential_misconfigured": "the credential's settings are wrong; an administrator must fix "
    "them",
    "unknown_format": "choose a --format this broker serves",
    "format_not_supported": "choose a --format this credential type supports (e.g. json)",
    "rate_limited": "too many exchanges; wait and retry, or raise --timeout",
    # Refusals only one platform's tokens meet: that platform's profile says what to do.
    **{
        reason: hint
        for profile in PROFILES.values()
        for reason, hint in profile.runner.refusal_hints.items()
    },
}
_DEFAULT_DENIED_FIX = "run again with --dry-run to see which check fails"
_DEFAULT_UNAVAILABLE_FIX = "retry later; if it persists, give the broker's operators the request id"


def fix_for(reason: str | None) -> str:
    """What the user can do about a refusal with this ``reason``."""
    return _FIXES.get(reason or "", _DEFAULT_DENIED_FIX)


@dataclass(frozen=True, slots=True)
class BrokerRefusal:
    """The broker's OAuth-style error body, as far as it could be read."""

    error: str | None
    reason: str | None
    description: str | None
    request_id: str | None


def exchange_url(broker_url: str, path: str = "/v1/exchange") -> str:
    """``<broker><path>``; the broker must be https (http only on loopback)."""
    try:
        # The runner's own choice of broker, often internal: only https is required.
        require_trusted_url(broker_url, allow_private=True)
    except ValueError as exc:
        raise UsageFailure(
            f"--broker {broker_url!r} is not usable ({exc}); the platform token is sent there, "
            "so it must be https (plain http only on loopback)"
        ) from None
    if "?" in broker_url or "#" in broker_url:
        raise UsageFailure(f"--broker {broker_url!r} must not carry a query or fragment")
    return broker_url.rstrip("/") + path


def exchange_query(fmt: str, *, dry_run: bool) -> dict[str, str]:
    """The query of an exchange request."""
    return {"dry_run": "true"} if dry_run else {"format": fmt}


def broker_attempt(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    *,
    body: Mapping[str, object] | None,
    query: dict[str, str] | None = None,
) -> Attempt:
    """One POST of ``body`` to the broker, as an attempt for ``send_with_retries``."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/plain",
        "User-Agent": f"tokenbroker-client/{__version__}",
    }
    return post_attempt(
        http,
        url,
        headers=headers,
        body=body,
        query=query,
        max_bytes=MAX_REPLY_BYTES,
        too_large="the broker's answer is too large to be a credential",
    )


def read_broker_error(reply: HttpReply) -> BrokerRefusal:
    """The error fields of a refusal; all ``None`` when the body is not the broker's JSON."""
    try:
        document = json.loads(reply.body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        document = {}

    def text(key: str) -> str | None:
        value = document.get(key)
        return value if isinstance(value, str) and value else None

    return BrokerRefusal(
        text("error"),
        text("reason"),
        text("error_description"),
        text("request_id") or reply.headers.get("X-Request-Id"),
    )


def failure_for_reply(reply: HttpReply) -> ClientFailure:
    """The failure (and exit code) for a broker answer that is not a success."""
    error = read_broker_error(reply)
    code = error.error or f"HTTP {reply.status}"
    if error.reason:
        code += f" ({error.reason})"
    description = error.description or "no description"
    where = f" [request id {error.request_id}]" if error.request_id else ""
    if 300 <= reply.status < 400:
        return UsageFailure(
            f"the broker answered a redirect (HTTP {reply.status}); redirects are not followed "
            "since they would carry the token elsewhere. fix: use the final URL as --broker"
        )
    if reply.status == 429 or reply.status >= 500:
        fix = _FIXES.get(error.reason or "", _DEFAULT_UNAVAILABLE_FIX)
        return Unavailable(
            f"the broker could not serve the exchange: HTTP {reply.status} {code}: "
            f"{description}{where}\nfix: {fix}"
        )
    fix = fix_for(error.reason)
    return Denied(
        f"the broker refused the exchange: HTTP {reply.status} {code}: {description}{where}"
        f"\nfix: {fix}"
    )


def read_trace(reply: HttpReply) -> dict[str, object]:
    """The decision trace of a dry run (a JSON object)."""
    try:
        document = json.loads(reply.body)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("checks"), list):
        raise Unavailable("the broker's dry-run answer is not a decision trace")
    return document
