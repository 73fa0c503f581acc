"""A stand-in for Microsoft Entra ID's v2 token endpoint, for tests and ``tokenbroker dev``.

No emulator of Entra ID exists, so this follows Microsoft's documented request and response
formats closely enough that azure-identity (``ClientAssertionCredential``,
``WorkloadIdentityCredential``) and MSAL get tokens from it:

- ``POST /<tenant>/oauth2/v2.0/token``: the client-credentials grant with a JWT client
  assertion (workload identity federation). The assertion's ``iss``, ``sub`` and ``aud`` must
  match a federated identity credential of the application, its signature must verify against
  the issuer's JWKS (found through the issuer's OpenID discovery), and it must be inside its
  time window. The answer is ``{"token_type", "expires_in", "ext_expires_in",
  "access_token"}``, the access token a JWT signed by this server; errors are Entra's
  ``{"error", "error_description": "AADSTS<code>: ...", "error_codes", "timestamp",
  "trace_id", "correlation_id", "error_uri"}``.
- ``GET /<tenant>/v2.0/.well-known/openid-configuration`` and ``GET
  /<tenant>/discovery/v2.0/keys``: the tenant's metadata MSAL reads (with instance discovery
  turned off, ``instance_discovery=False``), and the keys that verify its access tokens.

MSAL and azure-identity want https: ``DevCertificateAuthority`` makes a CA and a loopback
server certificate at runtime. State is in memory; it is a development server, not a security
boundary of its own.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import ssl
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from joserfc.jws import extract_compact

from tokenbroker.clock import Clock, SystemClock
from tokenbroker.config.urls import require_trusted_url
from tokenbroker.devstack.outbound import DocumentUnavailable, OutboundSession

TOKEN_EXCHANGE_AUDIENCE: Final = "api://AzureADTokenExchange"
JWT_BEARER_ASSERTION: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Azure refuses a 21st federated identity credential on one application.
MAX_FEDERATED_CREDENTIALS: Final = 20
DEFAULT_RESOURCES: Final = ("https://management.azure.com", "https://graph.microsoft.com")

_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "ES256", "ES384")
_SIGNING_ALGORITHM: Final = "RS256"
_GUID = re.compile(r"^[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}$")
_MAX_BODY_BYTES = 64 * 1024
_MAX_ASSERTION_BYTES = 32 * 1024
_MAX_DOCUMENT_BYTES = 256 * 1024
_ACCESS_TOKEN_LIFETIME = 3599
# Entra tolerates this much clock skew on an assertion's time window.
_CLOCK_SKEW_SECONDS = 300


@dataclass(frozen=True)
class FederatedIdentityCredential:
    """Which external tokens an application trusts: exact ``issuer`` and ``subject``, an ``aud``."""

    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...] = (TOKEN_EXCHANGE_AUDIENCE,)

    def __post_init__(self) -> None:
        if not self.name or not self.subject or not self.audiences:
            raise ValueError("a federated identity credential needs a name, subject and audience")
        require_trusted_url(self.issuer, allow_private=True)  # a dev issuer on loopback


@dataclass(frozen=True)
class EntraApplication:
    """An app registration (or user-assigned managed identity) and its federated credentials."""

    client_id: str
    federated_credentials: tuple[FederatedIdentityCredential, ...] = ()
    # The service principal's object id: `oid` and `sub` of the tokens it gets.
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        if not _GUID.match(self.client_id):
            raise ValueError(f"client_id must be a lowercase GUID, not {self.client_id!r}")
        credentials = self.federated_credentials
        if len(credentials) > MAX_FEDERATED_CREDENTIALS:
            raise ValueError(
                f"application {self.client_id} has {len(credentials)} federated identity "
                f"credentials; Azure allows at most {MAX_FEDERATED_CREDENTIALS}"
            )
        if len({c.name for c in credentials}) != len(credentials):
            raise ValueError(f"application {self.client_id}: federated credential names repeat")
        if len({(c.issuer, c.subject) for c in credentials}) != len(credentials):
            raise ValueError(
                f"application {self.client_id}: an issuer and subject pair may appear only once"
            )

    def with_credential(self, credential: FederatedIdentityCredential) -> EntraApplication:
        """This application with one more federated credential (refused past the limit)."""
        return replace(self, federated_credentials=(*self.federated_credentials, credential))


@dataclass(frozen=True)
class EntraTenant:
    """A directory: its id and the applications registered in it."""

    tenant_id: str
    applications: tuple[EntraApplication, ...]

    def __post_init__(self) -> None:
        if not _GUID.match(self.tenant_id):
            raise ValueError(f"tenant_id must be a lowercase GUID, not {self.tenant_id!r}")


@dataclass(frozen=True)
class EntraConfig:
    """The tenants the server knows, and the resources tokens may be asked for."""

    tenants: Sequence[EntraTenant]
    resources: tuple[str, ...] = DEFAULT_RESOURCES
    access_token_lifetime_seconds: int = _ACCESS_TOKEN_LIFETIME


@dataclass(frozen=True)
class IssuedAccessToken:
    """What the server issued, so a test or the demo can see which credential matched."""

    tenant_id: str
    client_id: str
    federated_credential: str
    subject: str
    resource: str
    expires_at: float


class _EntraError(Exception):
    """An Entra error answer: OAuth ``error``, an AADSTS code and its message."""

    def __init__(self, error: str, code: int, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        # RFC 6749: a failed client authentication is 401; every other error 400.
        return 401 if self.error == "invalid_client" else 400


class EntraServer:
    """The in-memory directory and handlers of the Entra ID stand-in."""

    def __init__(self, config: EntraConfig, *, clock: Clock | None = None) -> None:
        self._tenants = {
            tenant.tenant_id: {app.client_id: app for app in tenant.applications}
            for tenant in config.tenants
        }
        self._resources = frozenset(config.resources)
        self._lifetime = config.access_token_lifetime_seconds
        self._clock = clock or SystemClock()
        self._key = RSAKey.generate_key(
            2048, parameters={"use": "sig", "alg": _SIGNING_ALGORITHM}, auto_kid=True
        )
        self.issued: list[IssuedAccessToken] = []
        self._outbound = OutboundSession()

    def app(self) -> web.Application:
        """The aiohttp application; it opens its own client session for issuers' JWKS."""
        routes = [
            web.get("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery),
            web.get("/{tenant}/discovery/v2.0/keys", self._keys),
            web.post("/{tenant}/oauth2/v2.0/token", self._token),
        ]
        return self._outbound.application(routes, max_body_bytes=_MAX_BODY_BYTES)

    def add_federated_credential(
        self, tenant_id: str, client_id: str, credential: FederatedIdentityCredential
    ) -> None:
        """Add a federated credential to an application; ValueError past Azure's limit of 20."""
        applications = self._tenants[tenant_id]
        applications[client_id] = applications[client_id].with_credential(credential)

    def access_token_keys(self) -> KeySet:
        """The public keys that verify this server's access tokens."""
        return KeySet.import_key_set({"keys": [self._key.as_dict(private=False)]})

    # --- metadata ----------------------------------------------------------------------------

    async def _discovery(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        if tenant not in self._tenants:
            return _error_response(request, self._clock, _unknown_tenant(tenant))
        base = _base_url(request)
        authority = f"{base}/{tenant}"
        return web.json_response(
            {
                "token_endpoint": f"{authority}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{authority}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": [_SIGNING_ALGORITHM],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{authority}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{authority}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{authority}/oauth2/v2.0/logout",
                "tenant_region_scope": "WW",
                "cloud_instance_name": request.host,
            }
        )

    async def _keys(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        if tenant not in self._tenants:
            return _error_response(request, self._clock, _unknown_tenant(tenant))
        return web.json_response({"keys": [self._key.as_dict(private=False)]})

    # --- the token endpoint ------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        try:
            form = await _form(request)
            return web.json_response(
                await self._client_credentials(request.match_info["tenant"], form, request)
            )
        except _EntraError as exc:
            return _error_response(request, self._clock, exc)

    async def _client_credentials(
        self, tenant: str, form: Mapping[str, str], request: web.Request
    ) -> dict[str, object]:
        applications = self._tenants.get(tenant)
        if applications is None:
            raise _unknown_tenant(tenant)
        grant = form.get("grant_type", "")
        if grant != "client_credentials":
            raise _EntraError(
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        client_id = form.get("client_id", "")
        if not client_id:
            raise _EntraError(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        resource = _resource_of(form.get("scope", ""))
        application = applications.get(client_id.lower())
        if application is None:
            raise _EntraError(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You may "
                "have sent your authentication request to the wrong tenant.",
            )
        if resource not in self._resources:
            raise _EntraError(
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named "
                f"{tenant}. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You "
                "might have sent your authentication request to the wrong tenant.",
            )
        assertion = form.get("client_assertion", "")
        if form.get("client_assertion_type") != JWT_BEARER_ASSERTION or not assertion:
            raise _EntraError(
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        claims, credential = await self._verified_assertion(application, assertion)
        now = self._clock.now()
        expires_at = now + self._lifetime
        access_token = self._access_token(tenant, application, resource, now, request)
        self.issued.append(
            IssuedAccessToken(
                tenant_id=tenant,
                client_id=application.client_id,
                federated_credential=credential.name,
                subject=str(claims["sub"]),
                resource=resource,
                expires_at=expires_at,
            )
        )
        return {
            "token_type": "Bearer",
            "expires_in": self._lifetime,
            "ext_expires_in": self._lifetime,
            "access_token": access_token,
        }

    async def _verified_assertion(
        self, application: EntraApplication, assertion: str
    ) -> tuple[dict[str, object], FederatedIdentityCredential]:
        if len(assertion.encode()) > _MAX_ASSERTION_BYTES:
            raise _malformed()
        unverified = _unverified_claims(assertion)
        issuer, subject = unverified.get("iss"), unverified.get("sub")
        if not isinstance(issuer, str) or not isinstance(subject, str):
            raise _malformed()
        audiences = _audiences(unverified.get("aud"))
        trusted = [c for c in application.federated_credentials if c.issuer == issuer]
        if not trusted:
            raise _no_matching_credential(issuer, subject, audiences)
        # Only an issuer the application trusts is ever fetched from.
        keys = await self._issuer_keys(issuer)
        try:
            claims = dict(jwt.decode(assertion, keys, algorithms=list(_ALGORITHMS)).claims)
        except (JoseError, ValueError):
            raise _EntraError(
                "invalid_client", 700027, "Client assertion failed signature validation."
            ) from None
        self._check_time_window(claims)
        for credential in trusted:
            if credential.subject == subject and set(audiences) & set(credential.audiences):
                return claims, credential
        raise _no_matching_credential(issuer, subject, audiences)

    def _check_time_window(self, claims: Mapping[str, object]) -> None:
        now = self._clock.now()
        expires = _number(claims, "exp")
        not_before = claims.get("nbf", claims.get("iat"))
        starts = float(not_before) if isinstance(not_before, int | float) else None
        if (
            expires is None
            or expires + _CLOCK_SKEW_SECONDS < now
            or (starts is not None and starts - _CLOCK_SKEW_SECONDS > now)
        ):
            raise _EntraError(
                "invalid_client",
                700024,
                f"Client assertion is not within its valid time range. Current time: "
                f"{_iso(now)}, assertion valid from {_iso(starts)}, expiry time of assertion "
                f"{_iso(expires)}. Review the documentation at "
                "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
            )

    async def _issuer_keys(self, issuer: str) -> KeySet:
        # Fetched on every request: keys a test rotates are seen at once.
        discovery = await self._fetch_json(f"{issuer.rstrip('/')}/.well-known/openid-configuration")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise _issuer_unreachable()
        try:
            require_trusted_url(jwks_uri, allow_private=True)
            return KeySet.import_key_set(await self._fetch_json(jwks_uri))  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError, JoseError):
            raise _issuer_unreachable() from None

    async def _fetch_json(self, url: str) -> dict[str, object]:
        try:
            document = await self._outbound.fetch_json(url, _MAX_DOCUMENT_BYTES)
        except DocumentUnavailable:
            raise _issuer_unreachable() from None
        if not isinstance(document, dict):
            raise _issuer_unreachable()
        return document

    def _access_token(
        self,
        tenant: str,
        application: EntraApplication,
        resource: str,
        now: float,
        request: web.Request,
    ) -> str:
        issued_at = int(now)
        claims = {
            "aud": resource,
            "iss": f"{_base_url(request)}/{tenant}/v2.0",
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + self._lifetime,
            "azp": application.client_id,
            # 2: the client authenticated with a certificate or a client assertion.
            "azpacr": "2",
            "idtyp": "app",
            "oid": application.object_id,
            "sub": application.object_id,
            "tid": tenant,
            "uti": uuid.uuid4().hex,
            "ver": "2.0",
        }
        header = {"alg": _SIGNING_ALGORITHM, "typ": "JWT", "kid": self._key.kid}
        return jwt.encode(header, claims, self._key, algorithms=[_SIGNING_ALGORITHM])


def create_entra_app(config: EntraConfig, *, clock: Clock | None = None) -> web.Application:
    """Build the Entra ID stand-in as an aiohttp application."""
    return EntraServer(config, clock=clock).app()


# --- TLS -------------------------------------------------------------------------------------


class DevCertificateAuthority:
    """A CA made at runtime, and loopback server certificates it signs (for MSAL's https)."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokenbroker dev CA")])
        now = dt.datetime.now(dt.UTC)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def ca_pem(self) -> str:
        """The CA certificate, PEM: what clients trust (``REQUESTS_CA_BUNDLE``, ``ca_cert``)."""
        return self._certificate.public_bytes(serialization.Encoding.PEM).decode()

    def server_context(self, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> ssl.SSLContext:
        """A server-side TLS context with a fresh certificate for ``hosts``, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # The ssl module loads a chain only from files: they live just long enough for that.
        with tempfile.TemporaryDirectory(prefix="tokenbroker-tls-") as directory:
            cert_path, key_path = Path(directory) / "server.pem", Path(directory) / "server.key"
            cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
            key_path.touch(mode=0o600)
            key_path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            context.load_cert_chain(cert_path, key_path)
        return context


# --- helpers ---------------------------------------------------------------------------------


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def _form(request: web.Request) -> dict[str, str]:
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise _EntraError("invalid_request", 90020, "The request is too large.") from None
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _resource_of(scope: str) -> str:
    scopes = scope.split()
    if len(scopes) != 1 or not scopes[0].endswith("/.default"):
        raise _EntraError(
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must "
            "have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )
    return scopes[0].removesuffix("/.default")


def _unverified_claims(assertion: str) -> dict[str, object]:
    try:
        claims = json.loads(extract_compact(assertion.encode("ascii")).payload)
    except (JoseError, ValueError, UnicodeError):
        raise _malformed() from None
    if not isinstance(claims, dict):
        raise _malformed()
    return claims


def _audiences(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _number(claims: Mapping[str, object], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _iso(seconds: float | None) -> str:
    if seconds is None:
        return "(none)"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _unknown_tenant(tenant: str) -> _EntraError:
    return _EntraError(
        "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and "
        "are signing into the correct cloud.",
    )


def _malformed() -> _EntraError:
    return _EntraError("invalid_request", 50027, "JWT token is invalid or malformed.")


def _issuer_unreachable() -> _EntraError:
    return _EntraError("invalid_request", 50166, "Request to External OIDC endpoint failed.")


def _no_matching_credential(issuer: str, subject: str, audiences: Sequence[str]) -> _EntraError:
    return _EntraError(
        "invalid_request",
        70021,
        "No matching federated identity record found for presented assertion. "
        f"Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. "
        f"Assertion Audience: '{','.join(audiences)}'.",
    )


def _error_response(request: web.Request, clock: Clock, exc: _EntraError) -> web.Response:
    trace_id = str(uuid.uuid4())
    # Entra echoes the caller's client-request-id (MSAL sends one) as the correlation id.
    supplied = request.headers.get("client-request-id", "").lower()
    correlation_id = supplied if _GUID.match(supplied) else str(uuid.uuid4())
    timestamp = dt.datetime.fromtimestamp(clock.now(), dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    description = (
        f"AADSTS{exc.code}: {exc.message}\r\nTrace ID: {trace_id}\r\n"
        f"Correlation ID: {correlation_id}\r\nTimestamp: {timestamp}"
    )
    return web.json_response(
        {
            "error": exc.error,
            "error_description": description,
            "error_codes": [exc.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{_base_url(request)}/error?code={exc.code}",
        },
        status=exc.status,
    )
