"""``tokenbroker revoke``: give back what ``exchange`` obtained, where the backend allows it.

A Vault token is revoked with ``auth/token/revoke-self``, called by the runner itself with the
token it holds, so the broker needs no endpoint (and no memory) for it. The call is the client's
own, one POST through the client's retries: the runner's client imports no server code. AWS STS
session credentials and GCP access tokens cannot be revoked early by their holder: they expire.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tokenbroker import __version__
from tokenbroker.client.exchange import DEFAULT_TIMEOUT_SECONDS, ClientRuntime, ssl_context
from tokenbroker.client.failures import Unavailable, UsageFailure
from tokenbroker.client.retry import Deadline, HttpReply, post_attempt
from tokenbroker.config.urls import require_trusted_url

# Vault's namespace paths, as the broker accepts them: segments of these, joined by '/'.
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
# revoke-self answers 204 with no body; an error body is a few hundred bytes.
_MAX_VAULT_REPLY_BYTES = 64 * 1024
_MAX_ERROR_CHARS = 300

AWS_NOTE = (
    "AWS credentials (AWS_ACCESS_KEY_ID) cannot be revoked by their holder: STS session "
    "credentials stay valid until they expire (duration_seconds of the credential); an IAM "
    "administrator can revoke all of the role's active sessions if they leaked"
)
GCP_NOTE = (
    "GCP access tokens (GOOGLE_OAUTH_ACCESS_TOKEN) from workload identity federation cannot be "
    "revoked early; they expire after lifetime_seconds (one hour by default)"
)


@dataclass(frozen=True, slots=True)
class VaultTokenHeld:
    """A Vault token the runner holds, with where (and how) to reach its Vault."""

    address: str
    token: str = field(repr=False)
    namespace: str | None = None
    ca_cert: Path | None = None


def vault_token_held(values: Mapping[str, str], env: Mapping[str, str]) -> VaultTokenHeld | None:
    """The Vault token in ``values`` (VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE), if any.

    ``VAULT_CACERT`` (a PEM file, as the Vault CLI reads it) comes from the values or the
    environment, so a Vault behind a private CA is verified too.
    """
    token = values.get("VAULT_TOKEN", "").strip()
    if not token:
        return None
    address = values.get("VAULT_ADDR", "").strip()
    if not address:
        raise UsageFailure("VAULT_TOKEN is set but VAULT_ADDR is not; fix: set VAULT_ADDR")
    ca_path = values.get("VAULT_CACERT") or env.get("VAULT_CACERT")
    return VaultTokenHeld(
        address=address,
        token=token,
        namespace=values.get("VAULT_NAMESPACE", "").strip() or None,
        ca_cert=Path(ca_path) if ca_path else None,
    )


def unrevocable_notes(values: Mapping[str, str]) -> list[str]:
    """Why the other credentials in ``values`` are left to expire."""
    notes = []
    if values.get("AWS_ACCESS_KEY_ID"):
        notes.append(AWS_NOTE)
    if values.get("GOOGLE_OAUTH_ACCESS_TOKEN") or values.get("CLOUDSDK_AUTH_ACCESS_TOKEN"):
        notes.append(GCP_NOTE)
    return notes


def _revoke_self_request(held: VaultTokenHeld) -> tuple[str, dict[str, str]]:
    """The URL and headers of revoke-self; the token only goes over https (http on loopback)."""
    try:
        require_trusted_url(held.address, allow_private=True)
        if "?" in held.address or "#" in held.address:
            raise ValueError("a Vault address must not carry a query or fragment")
        namespace = held.namespace.strip("/") if held.namespace else None
        if namespace is not None and (
            not _NAMESPACE.match(namespace) or ".." in namespace.split("/")
        ):
            raise ValueError(
                "VAULT_NAMESPACE must be path segments of letters, digits, '_', '.' or '-' "
                "separated by '/'"
            )
    except ValueError as exc:
        raise UsageFailure(
            f"cannot revoke at VAULT_ADDR={held.address}: {exc}; the token is only sent "
            "over https (plain http only on loopback), verified against VAULT_CACERT"
        ) from None
    headers = {"X-Vault-Token": held.token, "User-Agent": f"tokenbroker-client/{__version__}"}
    if namespace:
        headers["X-Vault-Namespace"] = namespace
    return held.address.rstrip("/") + "/v1/auth/token/revoke-self", headers


def _vault_errors(reply: HttpReply, token: str) -> str:
    """Vault's own ``errors`` list from an answer, short and without the token."""
    try:
        errors = json.loads(reply.body).get("errors")
    except (ValueError, AttributeError):
        errors = None
    if not isinstance(errors, list) or not errors:
        return ""
    text = "; ".join(str(error) for error in errors).replace(token, "[token]")
    return f": {text[:_MAX_ERROR_CHARS]}"


async def revoke_vault_token(held: VaultTokenHeld, runtime: ClientRuntime) -> None:
    """Revoke the token with ``auth/token/revoke-self``, retried like every client request.

    A token already revoked or expired counts as revoked (revoke-self is granted to every
    valid token, so Vault's 403 means it is already gone).
    """
    url, headers = _revoke_self_request(held)
    tls = ssl_context(held.ca_cert, source="VAULT_CACERT=")
    fix = (
        "fix: check that Vault is reachable, then run revoke again (the token otherwise "
        "expires with its lease)"
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:
        try:
            reply = await runtime.send(
                post_attempt(
                    http,
                    url,
                    headers=headers,
                    max_bytes=_MAX_VAULT_REPLY_BYTES,
                    too_large="Vault's answer to revoke-self is too large",
                ),
                what=f"Vault at {held.address}",
                deadline=Deadline(runtime.clock, DEFAULT_TIMEOUT_SECONDS),
                private_ca="set VAULT_CACERT to its CA bundle",
            )
        except Unavailable as exc:
            raise Unavailable(
                f"could not revoke the Vault token at {held.address}: {exc.message}; {fix}"
            ) from None
    if reply.status in (200, 204, 403):
        return
    raise Unavailable(
        f"could not revoke the Vault token at {held.address}: Vault answered HTTP "
        f"{reply.status}{_vault_errors(reply, held.token)}; {fix}"
    )
