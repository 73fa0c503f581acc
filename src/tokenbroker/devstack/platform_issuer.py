"""A dev platform issuer: mints tokens shaped like each platform's own, really signed.

Every profile with a dev shape (``PlatformProfile.dev``) is its own issuer at
``{base_url}/{shape.path}`` (``{org}`` in the path: one issuer per organization, as the
platform has) with its own RSA key (RS256, as the platforms sign), kept in a directory (files
0600) so tokens minted by one process verify in another. The claims are the profile's; this
module holds only the generic machinery: keys, signing, discovery documents and JWKS.
``create_issuer_app`` serves them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from joserfc import jwt
from joserfc.jwk import RSAKey

from tokenbroker.clock import Clock, SystemClock
from tokenbroker.config.models import IssuerSettings
from tokenbroker.identity.profiles import PROFILES
from tokenbroker.identity.profiles.base import DevIssuerShape, DevTokenRequest

# The profiles the dev issuer imitates, in registration order.
DEV_SHAPES: Mapping[str, DevIssuerShape] = {
    name: profile.dev for name, profile in PROFILES.items() if profile.dev is not None
}
DEV_PROFILES: tuple[str, ...] = tuple(DEV_SHAPES)
DEFAULT_BASE_URL = "http://127.0.0.1:8401"
ALGORITHM = "RS256"
# Kept in the JWKS after a rotation, so tokens signed just before it still verify.
PUBLISHED_KEYS = 2
JWKS_MAX_AGE_SECONDS = 300


def _shape(name: str) -> DevIssuerShape:
    shape = DEV_SHAPES.get(name)
    if shape is None:
        raise ValueError(f"unknown dev profile {name!r} (one of {', '.join(DEV_PROFILES)})")
    return shape


def _per_org(shape: DevIssuerShape) -> bool:
    return "{org}" in shape.path


def _with_org(template: str, profile: str, org: str | None, what: str) -> str:
    if "{org}" not in template:
        return template
    if not org:
        raise ValueError(f"the {profile} {what} names an organization: pass org")
    return template.replace("{org}", org)


class DevPlatformIssuer:
    """Signing keys of the dev platform issuers, and tokens in their profiles' shapes."""

    def __init__(
        self,
        keys_dir: Path,
        base_url: str = DEFAULT_BASE_URL,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.keys_dir = keys_dir
        self.base_url = base_url.rstrip("/")
        self.clock: Clock = clock or SystemClock()
        self._keys: dict[str, list[RSAKey]] = {}

    # -- issuers ---------------------------------------------------------------------------

    def issuer_url(self, profile: str, *, org: str | None = None) -> str:
        """The ``iss`` of a profile's tokens (per-organization issuers name ``org``)."""
        path = _with_org(_shape(profile).path, profile, org, "issuer URL")
        return f"{self.base_url}/{path}"

    def jwks_url(self, profile: str, *, org: str | None = None) -> str:
        """Where a profile's JWKS is served."""
        return f"{self.issuer_url(profile, org=org)}/.well-known/{_shape(profile).jwks_file}"

    def default_audience(self, profile: str, *, org: str | None = None) -> str:
        """The ``aud`` a profile's token gets when none is asked for."""
        return _with_org(_shape(profile).audience, profile, org, "default audience")

    def issuer_settings(
        self,
        profile: str,
        *,
        audiences: list[str] | None = None,
        org: str | None = None,
        **overrides: object,
    ) -> IssuerSettings:
        """IssuerSettings trusting this dev issuer (keys through OIDC discovery by default)."""
        shape = _shape(profile)
        values: dict[str, object] = {
            "name": f"dev-{profile}-{org}" if _per_org(shape) else f"dev-{profile}",
            "issuer": self.issuer_url(profile, org=org),
            "audiences": audiences or [self.default_audience(profile, org=org)],
            "profile": profile,
            "algorithms": [ALGORITHM],
        }
        if shape.required_claims:
            values["required_claims"] = dict(shape.required_claims)
        if shape.issuer_options:
            values["options"] = {
                key: _with_org(value, profile, org, "issuer option")
                for key, value in shape.issuer_options.items()
            }
        values.update(overrides)
        return IssuerSettings.model_validate(values)

    def discovery_document(self, profile: str, *, org: str | None = None) -> dict[str, object]:
        """The OIDC discovery document of a profile's issuer."""
        return {
            "issuer": self.issuer_url(profile, org=org),
            "jwks_uri": self.jwks_url(profile, org=org),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "claims_supported": ["sub", "aud", "exp", "iat", "iss"],
        }

    # -- keys ------------------------------------------------------------------------------

    def signing_key(self, profile: str) -> RSAKey:
        """The key new tokens of a profile are signed with (created on first use)."""
        _shape(profile)
        return self._keyring(profile)[-1]

    def public_jwks(self, profile: str) -> dict[str, object]:
        """The JWKS of a profile: its active key and the one before it, public parts only."""
        _shape(profile)
        keys = self._keyring(profile)[-PUBLISHED_KEYS:]
        return {"keys": [key.as_dict(private=False) for key in reversed(keys)]}

    def rotate(self, profile: str) -> str:
        """Start signing a profile's tokens with a new key; return its kid."""
        _shape(profile)
        name = profile
        keys = [*self._keyring(name), _new_key()][-PUBLISHED_KEYS:]
        _write_private(self._key_file(name), keys, replace=True)
        self._keys[name] = keys
        kid = keys[-1].kid
        assert kid is not None
        return kid

    def _keyring(self, profile: str) -> list[RSAKey]:
        keys = self._keys.get(profile)
        if keys is None:
            path = self._key_file(profile)
            if not path.exists():
                # Another process may create it at the same moment; the first one wins.
                _write_private(path, [_new_key()], replace=False)
            keys = self._keys[profile] = _read_private(path)
        return keys

    def _key_file(self, profile: str) -> Path:
        return self.keys_dir / f"{profile}.jwks.json"

    # -- tokens ----------------------------------------------------------------------------

    def sign(
        self,
        profile: str,
        claims: Mapping[str, object],
        *,
        header: Mapping[str, object] | None = None,
    ) -> str:
        """Sign arbitrary claims with a profile's active key (``kid`` and ``alg`` set)."""
        key = self.signing_key(profile)
        full_header: dict[str, object] = {"alg": ALGORITHM, "kid": key.kid, **(header or {})}
        return jwt.encode(full_header, dict(claims), key, algorithms=[ALGORITHM])

    def mint(
        self,
        profile: str,
        *,
        org: str,
        project: str,
        audience: str | None = None,
        claims: Mapping[str, object] | None = None,
        lifetime_seconds: int | None = None,
        environment: str | None = None,
        issued_at: float | None = None,
    ) -> str:
        """A signed token shaped like the platform's own; ``claims`` override (None removes)."""
        return self.sign(
            profile,
            self.claims_for(
                profile,
                org=org,
                project=project,
                audience=audience,
                claims=claims,
                lifetime_seconds=lifetime_seconds,
                environment=environment,
                issued_at=issued_at,
            ),
        )

    def claims_for(
        self,
        profile: str,
        *,
        org: str,
        project: str,
        audience: str | None = None,
        claims: Mapping[str, object] | None = None,
        lifetime_seconds: int | None = None,
        environment: str | None = None,
        issued_at: float | None = None,
    ) -> dict[str, object]:
        """The claims ``mint`` signs, for tests that want to alter them first."""
        shape = _shape(profile)
        iat = int(self.clock.now() if issued_at is None else issued_at)
        default_lifetime = shape.lifetime_seconds or PROFILES[profile].token_lifetime_seconds
        lifetime = default_lifetime if lifetime_seconds is None else lifetime_seconds
        overrides = dict(claims or {})
        request = DevTokenRequest(
            org=org,
            project=project,
            audience=audience or self.default_audience(profile, org=org),
            issued_at=iat,
            environment=environment,
            overrides=overrides,
        )
        base: dict[str, object] = {"iss": self.issuer_url(profile, org=org), "iat": iat}
        merged = {**base, **shape.claims(request), "exp": iat + lifetime, **overrides}
        return {key: value for key, value in merged.items() if value is not None}


def _new_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"use": "sig", "alg": ALGORITHM}, auto_kid=True)


def _write_private(path: Path, keys: list[RSAKey], *, replace: bool) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    document = {"keys": [key.as_dict(private=True) for key in keys]}
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    # Created 0600 from the start: the private key is never readable by others, not even briefly.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        if replace:
            os.replace(temporary, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _read_private(path: Path) -> list[RSAKey]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return [RSAKey.import_key(data) for data in document["keys"]]


def create_issuer_app(issuer: DevPlatformIssuer) -> web.Application:
    """An aiohttp app serving every dev profile's discovery document and JWKS."""
    cache = {"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"}
    app = web.Application()
    for profile, shape in DEV_SHAPES.items():
        discovery, jwks = _issuer_handlers(issuer, profile, cache)
        app.router.add_get(f"/{shape.path}/.well-known/openid-configuration", discovery)
        app.router.add_get(f"/{shape.path}/.well-known/{shape.jwks_file}", jwks)
    return app


def _issuer_handlers(
    issuer: DevPlatformIssuer, profile: str, cache: Mapping[str, str]
) -> tuple[Handler, Handler]:
    async def discovery(request: web.Request) -> web.Response:
        document = issuer.discovery_document(profile, org=request.match_info.get("org"))
        return web.json_response(document, headers=cache)

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(issuer.public_jwks(profile), headers=cache)

    return discovery, jwks
