"""``tokenbroker revoke``: give back what ``exchange`` obtained, where the backend allows it.

A Vault token is revoked with ``auth/token/revoke-self``, called by the runner itself with the
token it holds, so the broker needs no endpoint (and no memory) for it. AWS STS session
credentials and GCP access tokens cannot be revoked early by their holder: they expire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from pydantic import ValidationError

from tokenbroker.backends.base import BackendContext, IssuedCredential
from tokenbroker.backends.vault import VaultOidcBackend, VaultOidcSettings
from tokenbroker.client.failures import Unavailable, UsageFailure
from tokenbroker.clock import Clock
from tokenbroker.errors import BrokerError

# revoke-self never uses a login role; the settings model wants one, so it gets a placeholder.
_UNUSED_ROLE = "revoke-self"
_MAX_CA_BYTES = 1024 * 1024

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
    ca_cert_pem: str | None = None


def _read_ca(path: str) -> str:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(_MAX_CA_BYTES)
        return data.decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageFailure(f"VAULT_CACERT={path}: cannot read the CA bundle ({exc})") from None


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
        ca_cert_pem=_read_ca(ca_path) if ca_path else None,
    )


def unrevocable_notes(values: Mapping[str, str]) -> list[str]:
    """Why the other credentials in ``values`` are left to expire."""
    notes = []
    if values.get("AWS_ACCESS_KEY_ID"):
        notes.append(AWS_NOTE)
    if values.get("GOOGLE_OAUTH_ACCESS_TOKEN") or values.get("CLOUDSDK_AUTH_ACCESS_TOKEN"):
        notes.append(GCP_NOTE)
    return notes


def vault_settings(held: VaultTokenHeld) -> VaultOidcSettings:
    """The vault backend's settings for reaching this Vault (https, or http on loopback)."""
    try:
        return VaultOidcSettings(
            address=held.address,
            role=_UNUSED_ROLE,
            namespace=held.namespace,
            ca_cert=held.ca_cert_pem,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise UsageFailure(
            f"cannot revoke at VAULT_ADDR={held.address}: {problems}; the token is only sent "
            "over https (plain http only on loopback), verified against VAULT_CACERT"
        ) from None


async def revoke_vault_token(
    held: VaultTokenHeld, *, http: aiohttp.ClientSession, clock: Clock
) -> None:
    """Revoke the token with ``auth/token/revoke-self`` (the vault backend's own call).

    A token already revoked or expired counts as revoked.
    """
    settings = vault_settings(held)
    backend = VaultOidcBackend(BackendContext(http=http, clock=clock))
    credential = IssuedCredential(
        values={},
        expires_at=datetime.fromtimestamp(clock.now(), tz=UTC),
        revocation_handle=held.token,
    )
    try:
        await backend.revoke(credential, settings)
    except BrokerError as exc:
        raise Unavailable(
            f"could not revoke the Vault token at {held.address}: {exc.description}; "
            "fix: check that Vault is reachable, then run revoke again (the token otherwise "
            "expires with its lease)"
        ) from None
