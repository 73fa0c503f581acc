"""The ``azure_oidc`` backend: env0's "Azure OIDC", Entra ID workload identity federation.

The outbound token is the client assertion of an OAuth client-credentials grant at
``<authority_host>/<tenant_id>/oauth2/v2.0/token``: Entra ID matches its ``iss``, ``sub`` and
``aud`` against a federated identity credential of the application (an app registration or a
user-assigned managed identity), checks its signature against the issuer's JWKS, and answers
with an access token for ``scope``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, ClassVar, Final
from urllib.parse import urlsplit

import aiohttp
from joserfc.errors import JoseError
from joserfc.jws import extract_compact
from pydantic import AfterValidator, BaseModel, Field, ValidationInfo, field_validator

from tokenbroker.backends.base import (
    BackendContext,
    CredentialSettings,
    IssuedCredential,
    OutboundToken,
)
from tokenbroker.backends.http import read_json_object
from tokenbroker.backends.tls import PemBundle, SslContexts
from tokenbroker.config.urls import require_backend_url
from tokenbroker.errors import (
    AccessDenied,
    BrokerError,
    InvalidRequest,
    TemporarilyUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from tokenbroker.identity.models import Identity
from tokenbroker.retry import RetryPolicy, Sleep, TransientFailure, retry_transient

# Microsoft's documented audience of a federated identity credential for Entra ID.
TOKEN_EXCHANGE_AUDIENCE: Final = "api://AzureADTokenExchange"
JWT_BEARER_ASSERTION: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_SCOPE: Final = "https://management.azure.com/.default"
DEFAULT_AUTHORITY_HOST: Final = "https://login.microsoftonline.com"
FEDERATED_TOKEN_FORMAT: Final = "azure-federated-token"

_GUID = re.compile(r"^[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
# A tenant is named by its id or one of its verified domains (contoso.onmicrosoft.com).
_TENANT_DOMAIN = re.compile(r"^(?=.{4,253}$)[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+$")
# Multi-tenant aliases: a client-credentials grant needs the one tenant the app lives in.
_TENANT_ALIASES = frozenset({"common", "organizations", "consumers"})
# Entra's rule for the client-credentials grant: one resource, asked for as `<resource>/.default`.
_SCOPE = re.compile(r"^\S{1,500}/\.default$")
_AADSTS = re.compile(r"^AADSTS(\d+)")
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,2}")
_MESSAGE_MAX = 400
# When Entra throttles without saying for how long: a short wait, then the runner retries.
_DEFAULT_RETRY_AFTER = 5
_MAX_RETRY_AFTER = 300

# OAuth errors that say the request (the credential's settings) is wrong, not the assertion.
_REJECTED: Final = frozenset({"invalid_scope", "invalid_resource", "unsupported_grant_type"})
_TRANSIENT: Final = frozenset({"temporarily_unavailable", "server_error"})


def _guid(value: str) -> str:
    if not _GUID.match(value):
        raise ValueError("must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
    return value.lower()


def _authority_host(value: str, info: ValidationInfo) -> str:
    require_backend_url(value, info)
    parts = urlsplit(value)
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(
            "authority_host is a scheme and host only (https://login.microsoftonline.com)"
        )
    return value.rstrip("/")


Guid = Annotated[str, AfterValidator(_guid)]
AuthorityHost = Annotated[str, AfterValidator(_authority_host)]


class AzureOidcSettings(CredentialSettings):
    """Settings of an ``azure_oidc`` credential: the tenant, the application and what to get."""

    tenant_id: str
    # The app registration's (or user-assigned managed identity's) application id.
    client_id: Guid
    # Not used in the exchange: passed through for the tools that need one (az, azurerm).
    subscription_id: Guid | None = None
    scope: str = DEFAULT_SCOPE
    authority_host: AuthorityHost = DEFAULT_AUTHORITY_HOST
    # A private CA of the authority host (Azure Stack Hub, a test authority); PEM text.
    ca_cert: PemBundle | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    max_retries: int = Field(default=2, ge=0, le=5)

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if value.lower() in _TENANT_ALIASES:
            raise ValueError(
                f"{value!r} names no tenant; use the tenant id the application lives in"
            )
        if _GUID.match(value):
            return value.lower()
        if not _TENANT_DOMAIN.match(value):
            raise ValueError("must be a tenant id (GUID) or a verified domain of the tenant")
        return value

    @field_validator("scope")
    @classmethod
    def _default_scope(cls, value: str) -> str:
        if not _SCOPE.match(value):
            raise ValueError(
                "the client-credentials grant takes one resource's '/.default' scope, "
                "e.g. https://management.azure.com/.default"
            )
        return value

    @property
    def token_url(self) -> str:
        """Entra ID's v2 token endpoint of the tenant."""
        return f"{self.authority_host}/{self.tenant_id}/oauth2/v2.0/token"


@dataclass(frozen=True, slots=True)
class _AccessToken:
    value: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class EntraError:
    """The fields of an Entra ID error answer that may be shown (never a token)."""

    error: str
    message: str
    codes: tuple[int, ...]
    trace_id: str | None
    correlation_id: str | None

    @property
    def aadsts(self) -> str | None:
        """``AADSTS<code>`` of the first error code, when Entra gave one."""
        return f"AADSTS{self.codes[0]}" if self.codes else None

    def details(self) -> dict[str, object]:
        """What goes into the broker's error body under ``upstream``, for support requests."""
        upstream: dict[str, object] = {"error": self.error, "error_codes": list(self.codes)}
        if self.trace_id:
            upstream["trace_id"] = self.trace_id
        if self.correlation_id:
            upstream["correlation_id"] = self.correlation_id
        return {"upstream": upstream}


def _text(value: object, secrets: Sequence[str], limit: int = _MESSAGE_MAX) -> str:
    if not isinstance(value, str):
        return ""
    for secret in secrets:
        if secret:
            value = value.replace(secret, "[redacted]")
    # Entra does not echo assertions, but a description must never carry one even if it did.
    value = _JWT_LIKE.sub("[redacted]", value)
    return "".join(ch if ch.isprintable() else " " for ch in value).strip()[:limit]


def parse_entra_error(body: Mapping[str, object] | None, secrets: Sequence[str]) -> EntraError:
    """Read Entra's ``{"error", "error_description", "error_codes", "trace_id", ...}``."""
    body = body or {}
    description = body.get("error_description")
    # Entra appends "Trace ID: ...", "Correlation ID: ...", "Timestamp: ..." lines: kept apart.
    first_line = description.splitlines()[0] if isinstance(description, str) and description else ""
    raw_codes = body.get("error_codes")
    codes = tuple(
        code
        for code in (raw_codes if isinstance(raw_codes, list) else [])
        if isinstance(code, int) and not isinstance(code, bool)
    )
    if not codes and (match := _AADSTS.match(first_line)):
        codes = (int(match[1]),)
    return EntraError(
        error=_text(body.get("error"), secrets, 64),
        message=_text(first_line, secrets),
        codes=codes,
        trace_id=_text(body.get("trace_id"), secrets, 64) or None,
        correlation_id=_text(body.get("correlation_id"), secrets, 64) or None,
    )


def _retry_after(header: str | None) -> int:
    # Entra sends delta-seconds; a date or garbage falls back to the short default.
    if header is not None and header.strip().isdigit():
        return max(1, min(int(header.strip()), _MAX_RETRY_AFTER))
    return _DEFAULT_RETRY_AFTER


def map_entra_error(
    status: int,
    body: Mapping[str, object] | None,
    secrets: Sequence[str],
    *,
    retry_after: str | None = None,
) -> Exception:
    """The refusal an Entra ID error answer means; a TransientFailure when worth retrying.

    Every refusal of the assertion (no matching federated credential ``AADSTS70021``, unknown
    application ``AADSTS700016``, assertion outside its time window ``AADSTS700024``, a bad
    signature, an unknown tenant) is a 403 carrying Entra's code and description: the broker
    accepted the runner's token, Entra refused the broker's request.
    """
    entra = parse_entra_error(body, secrets)
    label = entra.message or entra.error or f"HTTP {status}"
    if status == 429 or status == 503 or entra.error == "temporarily_unavailable":
        return TransientFailure(
            TemporarilyUnavailable(
                "backend_unavailable",
                f"Entra ID is throttling or unavailable (HTTP {status}): {label}",
                retry_after=_retry_after(retry_after),
            )
        )
    if status >= 500 or entra.error in _TRANSIENT:
        return TransientFailure(
            UpstreamError("backend_error", f"Entra ID failed (HTTP {status}): {label}")
        )
    error: BrokerError
    if entra.error in _REJECTED:
        error = InvalidRequest(
            "backend_rejected_request",
            f"Entra ID rejected the request: {label}",
            details=entra.details(),
        )
    elif 400 <= status < 500:
        error = AccessDenied(
            "backend_refused",
            f"Entra ID refused the client assertion: {label}",
            details=entra.details(),
        )
    else:
        error = UpstreamError("backend_error", f"Entra ID answered HTTP {status}: {label}")
    return error


def _expires_in(value: object) -> int | None:
    # v2 answers a number; v1 endpoints (and some proxies) a string of digits.
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and value.isdigit():
        seconds = int(value)
    else:
        return None
    return seconds if seconds > 0 else None


def _assertion_expiry(token: str) -> datetime | None:
    # The outbound token was minted by the broker or validated by it moments ago: reading its
    # `exp` back is not trusting caller input.
    try:
        exp = json.loads(extract_compact(token.encode("ascii")).payload)["exp"]
    except (JoseError, ValueError, KeyError, TypeError, UnicodeError):
        return None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return datetime.fromtimestamp(exp, UTC)


class AzureOidcBackend:
    """Exchange the outbound token, as a client assertion, for an Entra ID access token."""

    type_name: ClassVar[str] = "azure_oidc"
    settings_model: ClassVar[type[BaseModel]] = AzureOidcSettings
    # What POST /oauth2/token returns as access_token for this type.
    oauth_token_value: ClassVar[str] = "AZURE_ACCESS_TOKEN"
    oauth_token_type: ClassVar[str] = "urn:ietf:params:oauth:token-type:access_token"
    # What Entra ID expects in `aud` unless a federated credential names another audience.
    default_mint_audience: ClassVar[str] = TOKEN_EXCHANGE_AUDIENCE
    # The bare assertion, for `az login --federated-token` and AZURE_FEDERATED_TOKEN_FILE:
    # the runner's own tools exchange it (and refresh) without the broker calling Entra.
    runner_documents: ClassVar[Mapping[str, bool]] = {FEDERATED_TOKEN_FORMAT: True}

    def __init__(self, context: BackendContext, *, sleep: Sleep = asyncio.sleep) -> None:
        self._http = context.http
        self._clock = context.clock
        self._sleep = sleep
        self._ssl = SslContexts()

    def runner_document(
        self,
        fmt: str,
        *,
        credential: str,
        settings: BaseModel,
        outbound: OutboundToken | None,
        broker_url: str,
    ) -> dict[str, object] | str:
        """The client assertion alone, as plain text."""
        if fmt == FEDERATED_TOKEN_FORMAT and outbound is not None:
            return outbound.value
        raise InvalidRequest("format_not_supported", f"azure_oidc does not render {fmt}")

    async def exchange(
        self, identity: Identity, outbound_token: str, settings: BaseModel
    ) -> IssuedCredential:
        """Client-credentials grant with the outbound token as the assertion."""
        assert isinstance(settings, AzureOidcSettings)
        token = await retry_transient(
            lambda: self._token(outbound_token, settings),
            policy=RetryPolicy(retries=settings.max_retries),
            sleep=self._sleep,
        )
        values = {
            "AZURE_ACCESS_TOKEN": token.value,
            "AZURE_CLIENT_ID": settings.client_id,
            "AZURE_TENANT_ID": settings.tenant_id,
        }
        if settings.subscription_id is not None:
            values["AZURE_SUBSCRIPTION_ID"] = settings.subscription_id
        # Terraform's azurerm provider takes no access token (it could not refresh one): it
        # runs the same exchange itself from the assertion, so it gets the assertion.
        values |= {
            "ARM_CLIENT_ID": settings.client_id,
            "ARM_TENANT_ID": settings.tenant_id,
            "ARM_USE_OIDC": "true",
            "ARM_OIDC_TOKEN": outbound_token,
        }
        if settings.subscription_id is not None:
            values["ARM_SUBSCRIPTION_ID"] = settings.subscription_id
        assertion_expires = _assertion_expiry(outbound_token)
        # The values are one credential: it is due when its first part (usually the
        # assertion, whose lifetime is the platform's or the broker's) expires.
        expires_at = min(token.expires_at, assertion_expires or token.expires_at)
        metadata: dict[str, object] = {
            "token_type": "Bearer",
            "scope": settings.scope,
            "access_token_expires_at": token.expires_at.isoformat(),
        }
        return IssuedCredential(values=values, expires_at=expires_at, metadata=metadata)

    async def _token(self, assertion: str, settings: AzureOidcSettings) -> _AccessToken:
        form = {
            "grant_type": "client_credentials",
            "client_id": settings.client_id,
            "scope": settings.scope,
            "client_assertion_type": JWT_BEARER_ASSERTION,
            "client_assertion": assertion,
        }
        try:
            async with self._http.post(
                settings.token_url,
                data=form,
                ssl=self._ssl.for_bundle(settings.ca_cert),
                timeout=aiohttp.ClientTimeout(total=settings.timeout_seconds),
                # A redirect would carry the assertion to another host.
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                body = await read_json_object(response, "Entra ID")
        except TimeoutError:
            raise UpstreamTimeout(
                "backend_timeout",
                f"Entra ID at {settings.authority_host} did not answer within "
                f"{settings.timeout_seconds:g}s",
            ) from None
        except aiohttp.ClientSSLError:
            # Configuration, not weather: retrying cannot fix a certificate.
            raise UpstreamError(
                "backend_unreachable",
                f"TLS verification of {settings.authority_host} failed; check ca_cert",
            ) from None
        except aiohttp.ClientError as exc:
            raise TransientFailure(
                UpstreamError(
                    "backend_unreachable",
                    f"Entra ID at {settings.authority_host} could not be reached "
                    f"({type(exc).__name__})",
                )
            ) from None
        if status != 200:
            raise map_entra_error(status, body, [assertion], retry_after=retry_after)
        if body is None:
            raise UpstreamError("backend_error", "Entra ID answered with no JSON object")
        access_token = body.get("access_token")
        expires_in = _expires_in(body.get("expires_in"))
        if not isinstance(access_token, str) or not access_token:
            raise UpstreamError("backend_error", "Entra ID answered without an access_token")
        if expires_in is None:
            raise UpstreamError("backend_error", "Entra ID answered without a valid expires_in")
        now = datetime.fromtimestamp(self._clock.now(), UTC)
        return _AccessToken(access_token, now + timedelta(seconds=expires_in))
