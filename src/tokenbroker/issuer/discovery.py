"""The broker issuer's OpenID Provider metadata (OpenID Connect Discovery 1.0)."""

from __future__ import annotations

from collections.abc import Sequence

from tokenbroker.issuer.minting import REGISTERED_CLAIMS

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
_DEFAULT_ALGORITHMS = ("ES256", "RS256")
# Claims the broker adds to every minted token, besides the registered ones and copied claims.
_BROKER_CLAIMS = ("platform_iss", "tokenbroker")


def openid_configuration(
    issuer_url: str, *, algorithms: Sequence[str] = _DEFAULT_ALGORITHMS
) -> dict[str, object]:
    """The discovery document for ``issuer_url``; ``algorithms`` lists the keys' algorithms."""
    issuer = issuer_url.rstrip("/")
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/oauth2/token",
        "grant_types_supported": [TOKEN_EXCHANGE_GRANT],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(algorithms),
        "scopes_supported": ["openid"],
        "claims_supported": sorted(REGISTERED_CLAIMS) + list(_BROKER_CLAIMS),
    }
