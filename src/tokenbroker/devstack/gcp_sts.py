"""A stand-in for Google's STS and IAM Credentials APIs, for tests and ``tokenbroker dev``.

No emulator of either exists, so this follows Google's documented request and response formats
closely enough that google-auth's ``identity_pool.Credentials`` refreshes against it:

- ``POST /v1/token``: RFC 8693 token exchange (form or JSON). The subject token's signature is
  verified against the JWKS of the workload identity provider's issuer; ``aud``, lifetime and
  expiry are checked; the attribute mapping and condition are applied; a federated access
  token comes back.
- ``POST /v1/projects/-/serviceAccounts/<email>:generateAccessToken``: with a federated token
  as bearer, a service account's access token, when the account lets the principal in.
- ``GET /v1/tokeninfo?access_token=...``: who an access token belongs to, so a demo can "use" it.

State is in memory; it is a development server, not a security boundary of its own.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, TypeAlias

from aiohttp import web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pydantic import BaseModel, ConfigDict, Field

from tokenbroker.clock import Clock, SystemClock
from tokenbroker.config.urls import require_trusted_url
from tokenbroker.devstack.outbound import DocumentTooLarge, DocumentUnavailable, OutboundSession
from tokenbroker.identity.models import Claims

TOKEN_EXCHANGE_GRANT: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TOKEN_TYPES: Final = frozenset(
    {"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"}
)
IAM_HOST: Final = "iam.googleapis.com"

_PROVIDER_AUDIENCE = re.compile(
    r"^//iam\.googleapis\.com/(?P<pool>projects/\d+/locations/global/"
    r"workloadIdentityPools/[a-z0-9-]{4,32})/providers/[a-z0-9-]{4,32}$"
)
# `assertion.sub` or `assertion['oidc.circleci.com/project-id']`: the part of Google's CEL
# attribute mappings that picks one claim.
_MAPPING_EXPRESSION = re.compile(
    r"""^assertion(?:\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\[(?P<quote>['"])(?P<key>[^'"]+)(?P=quote)\])$"""
)
_ATTRIBUTE_NAME = re.compile(r"^(google\.subject|google\.groups|attribute\.[a-z_][a-z0-9_]{0,99})$")
_LIFETIME = re.compile(r"^(\d{1,6})(?:\.\d{1,9})?s$")

_MAX_BODY_BYTES = 64 * 1024
_MAX_SUBJECT_TOKEN_BYTES = 32 * 1024
_MAX_JWKS_BYTES = 256 * 1024
_MAX_SUBJECT_BYTES = 127
_FEDERATED_LIFETIME = 3600
_DEFAULT_SA_LIFETIME = 3600
_LONG_SA_LIFETIME = 43200
_MAX_TOKEN_LIFETIME = 48 * 3600
_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "ES256", "ES384")

AttributeCondition: TypeAlias = Callable[[Claims], bool] | Mapping[str, object]

_CONDITION_REJECTED = "The given credential is rejected by the attribute condition."
_UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_PERMISSION_DENIED = (
    "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
)


@dataclass(frozen=True)
class WorkloadIdentityProvider:
    """A workload identity pool provider: whose tokens it accepts and how it reads them.

    ``audience`` is the provider's full name as STS callers give it
    (``//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/X``).
    ``attribute_condition`` is a callable over the token's claims, or claim -> required value.
    """

    audience: str
    issuer: str
    jwks_uri: str
    allowed_audiences: tuple[str, ...] = ()
    attribute_mapping: Mapping[str, str] = field(
        default_factory=lambda: {"google.subject": "assertion.sub"}
    )
    attribute_condition: AttributeCondition | None = None

    def __post_init__(self) -> None:
        if not _PROVIDER_AUDIENCE.match(self.audience):
            raise ValueError(f"not a workload identity provider name: {self.audience!r}")
        require_trusted_url(self.jwks_uri, allow_private=True)  # a dev stand-in on loopback
        if "google.subject" not in self.attribute_mapping:
            raise ValueError("attribute_mapping must map google.subject")
        for name, expression in self.attribute_mapping.items():
            if not _ATTRIBUTE_NAME.match(name) or not _MAPPING_EXPRESSION.match(expression):
                raise ValueError(f"unsupported attribute mapping {name!r} = {expression!r}")

    @property
    def pool(self) -> str:
        """The pool's resource name: ``projects/N/locations/global/workloadIdentityPools/P``."""
        match = _PROVIDER_AUDIENCE.match(self.audience)
        assert match is not None
        return match["pool"]

    @property
    def accepted_audiences(self) -> tuple[str, ...]:
        """``aud`` values accepted; by default the provider's name as an https URL, like Google."""
        return self.allowed_audiences or (f"https:{self.audience}",)


@dataclass(frozen=True)
class ServiceAccount:
    """A service account and the principals (IAM member strings) that may impersonate it.

    Members are ``principal://iam.googleapis.com/<pool>/subject/<subject>``,
    ``principalSet://iam.googleapis.com/<pool>/attribute.<name>/<value>`` or
    ``principalSet://iam.googleapis.com/<pool>/*``, as in a ``roles/iam.workloadIdentityUser``
    binding. ``allow_long_lifetime`` stands for the org policy that allows tokens up to 12 h.
    """

    email: str
    members: tuple[str, ...]
    allow_long_lifetime: bool = False


@dataclass(frozen=True)
class GcpStsConfig:
    """Providers and service accounts the server knows."""

    providers: Sequence[WorkloadIdentityProvider]
    service_accounts: Sequence[ServiceAccount] = ()
    max_token_lifetime_seconds: int = _MAX_TOKEN_LIFETIME


@dataclass(frozen=True)
class _FederatedToken:
    pool: str
    subject: str
    attributes: Mapping[str, str]
    scopes: tuple[str, ...]
    expires_at: float

    @property
    def principal(self) -> str:
        return f"principal://{IAM_HOST}/{self.pool}/subject/{self.subject}"

    def matches(self, member: str) -> bool:
        prefix = f"principalSet://{IAM_HOST}/{self.pool}/"
        if member == self.principal or member == f"{prefix}*":
            return True
        if member.startswith(f"{prefix}attribute."):
            name, _, value = member[len(prefix) :].partition("/")
            return self.attributes.get(name) == value
        return False


@dataclass(frozen=True)
class _AccessToken:
    principal: str
    email: str | None
    scopes: tuple[str, ...]
    expires_at: float


class _StsError(Exception):
    """An OAuth error answer of STS: ``{"error", "error_description"}`` with status 400."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class GcpStsServer:
    """The in-memory state and handlers of the STS + IAM Credentials stand-in."""

    def __init__(self, config: GcpStsConfig, *, clock: Clock | None = None) -> None:
        self._providers = {provider.audience: provider for provider in config.providers}
        self._service_accounts = {account.email: account for account in config.service_accounts}
        self._max_token_lifetime = config.max_token_lifetime_seconds
        self._clock = clock or SystemClock()
        self._federated: dict[str, _FederatedToken] = {}
        self._access: dict[str, _AccessToken] = {}
        self._outbound = OutboundSession()

    def app(self) -> web.Application:
        """The aiohttp application; it opens its own client session for JWKS fetches."""
        routes = [
            web.post("/v1/token", self._token),
            web.post("/v1/projects/{project}/serviceAccounts/{target}", self._generate),
            web.get("/v1/tokeninfo", self._tokeninfo),
        ]
        return self._outbound.application(routes, max_body_bytes=_MAX_BODY_BYTES)

    # --- STS ---------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        try:
            fields = await _request_fields(request)
            return web.json_response(await self._exchange(fields))
        except _StsError as exc:
            return web.json_response(
                {"error": exc.error, "error_description": exc.description}, status=400
            )

    async def _exchange(self, fields: Mapping[str, str]) -> dict[str, object]:
        if fields.get("grant_type") != TOKEN_EXCHANGE_GRANT:
            raise _StsError("unsupported_grant_type", 'Invalid value for "grant_type".')
        if fields.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            raise _StsError("invalid_request", 'Invalid value for "requested_token_type".')
        if fields.get("subject_token_type") not in SUBJECT_TOKEN_TYPES:
            raise _StsError("invalid_request", 'Invalid value for "subject_token_type".')
        subject_token = fields.get("subject_token", "")
        if not subject_token:
            raise _StsError("invalid_request", 'Missing required parameter: "subject_token".')
        if len(subject_token.encode()) > _MAX_SUBJECT_TOKEN_BYTES:
            raise _StsError("invalid_request", "The subject token is too large.")
        provider = self._providers.get(fields.get("audience", ""))
        if provider is None:
            raise _StsError(
                "invalid_target",
                'The target service indicated by the "audience" parameters is invalid. This '
                "might either be because the pool or provider is disabled or deleted or because "
                "it doesn't exist.",
            )
        scopes = tuple(fields.get("scope", "").split())
        claims = await self._verified_claims(provider, subject_token)
        attributes = _map_attributes(provider.attribute_mapping, claims)
        if not _condition_holds(provider.attribute_condition, claims):
            raise _StsError("unauthorized_client", _CONDITION_REJECTED)
        subject = attributes["google.subject"]
        if len(subject.encode()) > _MAX_SUBJECT_BYTES:
            raise _StsError(
                "invalid_grant", "The mapped attribute google.subject exceeds 127 bytes."
            )
        now = self._clock.now()
        expires_in = int(min(_FEDERATED_LIFETIME, _number(claims, "exp") - now))
        token = f"ya29.d.dev-{secrets.token_urlsafe(32)}"
        self._federated[token] = _FederatedToken(
            pool=provider.pool,
            subject=subject,
            attributes=attributes,
            scopes=scopes,
            expires_at=now + expires_in,
        )
        return {
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": expires_in,
        }

    async def _verified_claims(self, provider: WorkloadIdentityProvider, token: str) -> Claims:
        keys = await self._jwks(provider)
        try:
            decoded = jwt.decode(token, keys, algorithms=list(_ALGORITHMS))
        except (JoseError, ValueError) as exc:
            raise _StsError(
                "invalid_grant", f"Invalid ID Token: the JWT could not be verified ({exc})."
            ) from None
        claims: dict[str, object] = dict(decoded.claims)
        if claims.get("iss") != provider.issuer:
            raise _StsError("invalid_grant", "The issuer in the ID Token does not match.")
        audiences = claims.get("aud")
        presented = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(presented, list) or not set(map(str, presented)) & set(
            provider.accepted_audiences
        ):
            raise _StsError(
                "invalid_grant",
                "The audience in ID Token does not match the expected audience.",
            )
        issued_at, expires = _number(claims, "iat"), _number(claims, "exp")
        now = self._clock.now()
        if expires <= now:
            raise _StsError("invalid_grant", "ID Token expired.")
        if issued_at > now + 60:
            raise _StsError("invalid_grant", "ID Token issued in the future.")
        if expires - issued_at > self._max_token_lifetime:
            raise _StsError(
                "invalid_grant", "The ID Token lifetime (exp - iat) exceeds the maximum allowed."
            )
        return claims

    async def _jwks(self, provider: WorkloadIdentityProvider) -> KeySet:
        # Fetched on every exchange: keys rotated by a test are seen at once.
        try:
            document = await self._outbound.fetch_json(provider.jwks_uri, _MAX_JWKS_BYTES)
            return KeySet.import_key_set(document)  # type: ignore[arg-type]
        except DocumentTooLarge:
            raise _StsError("invalid_grant", "The issuer's JWKS is too large.") from None
        except (DocumentUnavailable, ValueError, KeyError, TypeError, JoseError):
            raise _StsError("invalid_grant", "Unable to retrieve the issuer's JWKS.") from None

    # --- IAM Credentials ---------------------------------------------------------------------

    async def _generate(self, request: web.Request) -> web.Response:
        email, _, method = request.match_info["target"].rpartition(":")
        if method != "generateAccessToken" or not email:
            return _google_error(404, "NOT_FOUND", "Method not found.")
        federated = self._bearer(request)
        if federated is None:
            return _google_error(401, "UNAUTHENTICATED", _UNAUTHENTICATED)
        account = self._service_accounts.get(email)
        if account is None or not any(federated.matches(m) for m in account.members):
            return _google_error(403, "PERMISSION_DENIED", _PERMISSION_DENIED)
        try:
            body = await request.json()
        except ValueError:
            return _google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(body, dict):
            return _google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        scopes = body.get("scope")
        if (
            not isinstance(scopes, list)
            or not scopes
            or not all(isinstance(s, str) and s for s in scopes)
        ):
            return _google_error(400, "INVALID_ARGUMENT", "Scope required.")
        lifetime = _lifetime_seconds(body.get("lifetime", f"{_DEFAULT_SA_LIFETIME}s"))
        limit = _LONG_SA_LIFETIME if account.allow_long_lifetime else _DEFAULT_SA_LIFETIME
        if lifetime is None or not 1 <= lifetime <= limit:
            return _google_error(
                400,
                "INVALID_ARGUMENT",
                f"The lifetime must be between 1s and {limit}s.",
            )
        expires_at = self._clock.now() + lifetime
        token = f"ya29.c.dev-{secrets.token_urlsafe(32)}"
        self._access[token] = _AccessToken(
            principal=federated.principal,
            email=account.email,
            scopes=tuple(scopes),
            expires_at=expires_at,
        )
        expire_time = datetime.fromtimestamp(int(expires_at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({"accessToken": token, "expireTime": expire_time})

    def _bearer(self, request: web.Request) -> _FederatedToken | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        federated = self._federated.get(token.strip())
        if federated is None or federated.expires_at <= self._clock.now():
            return None
        return federated

    # --- token info --------------------------------------------------------------------------

    async def _tokeninfo(self, request: web.Request) -> web.Response:
        token = request.query.get("access_token", "")
        now = self._clock.now()
        access = self._access.get(token)
        if access is None:
            federated = self._federated.get(token)
            if federated is not None:
                access = _AccessToken(
                    federated.principal, None, federated.scopes, federated.expires_at
                )
        if access is None or access.expires_at <= now:
            return web.json_response(
                {"error": "invalid_token", "error_description": "Invalid Value"}, status=400
            )
        info: dict[str, object] = {
            "sub": access.principal,
            "scope": " ".join(access.scopes),
            "exp": str(int(access.expires_at)),
            "expires_in": str(int(access.expires_at - now)),
        }
        if access.email is not None:
            info["email"] = access.email
        return web.json_response(info)


class _ProviderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audience: str
    issuer: str
    jwks_uri: str
    allowed_audiences: list[str] = Field(default_factory=list)
    attribute_mapping: dict[str, str] = Field(
        default_factory=lambda: {"google.subject": "assertion.sub"}
    )
    attribute_condition: dict[str, str | int | bool] | None = None


class _ServiceAccountEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str
    members: list[str] = Field(min_length=1)
    allow_long_lifetime: bool = False


class _ConfigDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[_ProviderEntry] = Field(min_length=1)
    service_accounts: list[_ServiceAccountEntry] = Field(default_factory=list)
    max_token_lifetime_seconds: int = Field(default=_MAX_TOKEN_LIFETIME, gt=0)


def parse_gcp_sts_config(data: Mapping[str, object]) -> GcpStsConfig:
    """Build a config from plain data (TOML/JSON); conditions are claim -> value mappings there.

    Raises ValueError (pydantic's ValidationError is one) when the data does not validate.
    """
    document = _ConfigDocument.model_validate(dict(data))
    return GcpStsConfig(
        providers=[
            WorkloadIdentityProvider(
                audience=entry.audience,
                issuer=entry.issuer,
                jwks_uri=entry.jwks_uri,
                allowed_audiences=tuple(entry.allowed_audiences),
                attribute_mapping=entry.attribute_mapping,
                attribute_condition=entry.attribute_condition,
            )
            for entry in document.providers
        ],
        service_accounts=[
            ServiceAccount(
                email=entry.email,
                members=tuple(entry.members),
                allow_long_lifetime=entry.allow_long_lifetime,
            )
            for entry in document.service_accounts
        ],
        max_token_lifetime_seconds=document.max_token_lifetime_seconds,
    )


def create_gcp_sts_app(config: GcpStsConfig, *, clock: Clock | None = None) -> web.Application:
    """Build the STS + IAM Credentials stand-in as an aiohttp application."""
    return GcpStsServer(config, clock=clock).app()


async def _request_fields(request: web.Request) -> dict[str, str]:
    # Google's STS takes a form (google-auth sends one) or a JSON object (the REST reference).
    try:
        if request.content_type == "application/json":
            body = await request.json()
            if not isinstance(body, dict):
                raise _StsError("invalid_request", "Invalid JSON payload received.")
            return {str(k): v for k, v in body.items() if isinstance(v, str)}
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise _StsError("invalid_request", "The request is too large.") from None
    except ValueError:
        raise _StsError("invalid_request", "Invalid JSON payload received.") from None
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _number(claims: Claims, name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _StsError("invalid_grant", f'The ID Token has no valid "{name}" claim.')
    return float(value)


def _claim_by_expression(expression: str, claims: Claims) -> object:
    match = _MAPPING_EXPRESSION.match(expression)
    assert match is not None  # checked when the provider was built
    return claims.get(match["name"] or match["key"])


def _map_attributes(mapping: Mapping[str, str], claims: Claims) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for name, expression in mapping.items():
        value = _claim_by_expression(expression, claims)
        if value is None:
            continue
        attributes[name] = value if isinstance(value, str) else json.dumps(value)
    if not attributes.get("google.subject"):
        raise _StsError("invalid_grant", "The mapped attribute google.subject is empty.")
    return attributes


def _condition_holds(condition: AttributeCondition | None, claims: Claims) -> bool:
    if condition is None:
        return True
    if isinstance(condition, Mapping):
        return all(claims.get(name) == value for name, value in condition.items())
    try:
        return bool(condition(claims))
    except Exception:
        # A CEL condition that errors evaluates to a rejection, never to acceptance.
        return False


def _lifetime_seconds(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    match = _LIFETIME.match(value)
    return int(match[1]) if match else None


def _google_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": status, "message": message, "status": code}}, status=status
    )
