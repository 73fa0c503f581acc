"""``oidc_token``: a broker-signed JWT for any audience (like ``gitpod idp token --audience``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import ClassVar

from joserfc.errors import JoseError
from joserfc.jws import extract_compact
from pydantic import BaseModel

from tokenbroker.backends.base import BackendContext, CredentialSettings, IssuedCredential
from tokenbroker.errors import InvalidRequest
from tokenbroker.identity.models import Identity


class OidcTokenSettings(CredentialSettings):
    """No settings of its own: the credential's ``audience`` and ``token = "mint"`` say it all."""


class OidcTokenBackend:
    """Hands the minted outbound token to the runner as ``OIDC_TOKEN``."""

    type_name: ClassVar[str] = "oidc_token"
    settings_model: ClassVar[type[BaseModel]] = OidcTokenSettings
    # Its credential is the outbound token: in passthrough that would be the platform token.
    mint_only: ClassVar[bool] = True
    oauth_token_value: ClassVar[str] = "OIDC_TOKEN"
    oauth_token_type: ClassVar[str] = "urn:ietf:params:oauth:token-type:jwt"

    def __init__(self, context: BackendContext) -> None:
        self._context = context

    async def exchange(
        self, identity: Identity, outbound_token: str, settings: BaseModel
    ) -> IssuedCredential:
        """Return the outbound token itself; its ``exp`` is the credential's expiry."""
        return IssuedCredential(
            values={"OIDC_TOKEN": outbound_token},
            expires_at=_expiry_of_minted(outbound_token),
            metadata={"token_type": "jwt"},
        )


def _expiry_of_minted(token: str) -> datetime:
    # The service minted and signed this token moments ago: reading `exp` back from our own
    # output is not trusting caller input. A passthrough credential would hand back the
    # platform token itself, which the service refuses for this type before we get here.
    try:
        payload = json.loads(extract_compact(token.encode("ascii")).payload)
        exp = payload["exp"]
    except (JoseError, ValueError, KeyError, TypeError, UnicodeError):
        raise InvalidRequest(
            "token_mode_invalid", "oidc_token credentials need token = 'mint'"
        ) from None
    if not isinstance(exp, int):
        raise InvalidRequest("token_mode_invalid", "oidc_token credentials need token = 'mint'")
    return datetime.fromtimestamp(exp, UTC)
