"""The ``gcp_oidc`` backend: Google STS token exchange, then optional service-account impersonation.

The outbound token goes to Google's Security Token Service (RFC 8693) for a federated access
token of a workload identity pool; with ``service_account`` set, that token calls IAM
Credentials' ``generateAccessToken`` for a service account's token, as google-auth's
``identity_pool.Credentials`` does.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, ClassVar, Final, Literal
from urllib.parse import quote

import aiohttp
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tokenbroker.backends.base import (
    BackendContext,
    CredentialSettings,
    IssuedCredential,
    OutboundToken,
)
from tokenbroker.backends.http import read_json_object
from tokenbroker.config.urls import require_backend_url
from tokenbroker.errors import (
    AccessDenied,
    InvalidRequest,
    UpstreamError,
    UpstreamTimeout,
)
from tokenbroker.identity.models import Identity
from tokenbroker.retry import RetryPolicy, Sleep, TransientFailure, retry_transient

TOKEN_EXCHANGE_GRANT: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:jwt"
CLOUD_PLATFORM_SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TOKEN_URL: Final = "https://sts.googleapis.com/v1/token"
DEFAULT_IAM_ENDPOINT: Final = "https://iamcredentials.googleapis.com"

# Pool and provider ids are 4-32 lowercase letters, digits and hyphens (Google's rule).
WORKLOAD_AUDIENCE: Final = re.compile(
    r"^//iam\.googleapis\.com/projects/(?P<project>\d+)/locations/global/"
    r"workloadIdentityPools/(?P<pool>[a-z0-9-]{4,32})/providers/(?P<provider>[a-z0-9-]{4,32})$"
)
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_SCOPE = re.compile(r"^\S{1,512}$")
_RFC3339 = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})$"
)

_DEFAULT_LIFETIME = 3600
_LONG_LIFETIME_MAX = 43200
_MESSAGE_MAX = 300

# Google's OAuth errors (STS) and google.rpc status codes (IAM Credentials), by meaning.
_REFUSED: Final = frozenset(
    {
        "invalid_grant",
        "unauthorized_client",
        "access_denied",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    }
)
_REJECTED: Final = frozenset(
    {
        "invalid_request",
        "invalid_scope",
        "invalid_target",
        "unsupported_grant_type",
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
        "NOT_FOUND",
    }
)
_TRANSIENT: Final = frozenset(
    {"temporarily_unavailable", "server_error", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL"}
)


def _audience(value: str) -> str:
    if not WORKLOAD_AUDIENCE.match(value):
        raise ValueError(
            "must be //iam.googleapis.com/projects/<number>/locations/global/"
            "workloadIdentityPools/<pool>/providers/<provider>"
        )
    return value


def _trusted_url(value: str, info: ValidationInfo) -> str:
    require_backend_url(value, info)
    return value.rstrip("/")


WorkloadAudience = Annotated[str, AfterValidator(_audience)]
TrustedUrl = Annotated[str, AfterValidator(_trusted_url)]


class GcpOidcSettings(CredentialSettings):
    """Settings of a ``gcp_oidc`` credential: the workload identity provider and what to get."""

    audience: WorkloadAudience
    subject_token_type: Literal[
        "urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"
    ] = JWT_TOKEN_TYPE
    scopes: list[str] = Field(default_factory=lambda: [CLOUD_PLATFORM_SCOPE], min_length=1)
    service_account: str | None = None
    lifetime_seconds: int = Field(default=_DEFAULT_LIFETIME, ge=60, le=_LONG_LIFETIME_MAX)
    # Google caps impersonated tokens at 1 h unless the org policy
    # constraints/iam.allowServiceAccountCredentialLifetimeExtension allows up to 12 h.
    allow_long_lifetime: bool = False
    token_url: TrustedUrl = DEFAULT_TOKEN_URL
    iam_endpoint: TrustedUrl = DEFAULT_IAM_ENDPOINT
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    max_retries: int = Field(default=2, ge=0, le=5)

    @field_validator("scopes")
    @classmethod
    def _scope_names(cls, value: list[str]) -> list[str]:
        if not all(_SCOPE.match(scope) for scope in value):
            raise ValueError("each scope is a non-empty string without spaces")
        return value

    @field_validator("service_account")
    @classmethod
    def _service_account_email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("service_account must be a service account email")
        return value

    @model_validator(mode="after")
    def _lifetime_rules(self) -> GcpOidcSettings:
        # By value, not by fields set: the store keeps settings in their JSON form, defaults
        # included, and must be able to parse them again.
        if self.lifetime_seconds != _DEFAULT_LIFETIME and self.service_account is None:
            raise ValueError(
                "lifetime_seconds needs service_account: federated tokens live as Google decides"
            )
        if self.lifetime_seconds > _DEFAULT_LIFETIME and not self.allow_long_lifetime:
            raise ValueError("lifetime_seconds over 3600 needs allow_long_lifetime = true")
        return self


def parse_expire_time(value: str) -> datetime:
    """Parse Google's RFC 3339 ``expireTime``, with or without (up to nanosecond) fractions."""
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError("not an RFC 3339 timestamp")
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    parsed = datetime.fromisoformat(f"{match['base']}.{fraction}{zone}")
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: datetime


_Call = Callable[[], Awaitable[_Token]]


# google-auth refuses an executable source whose timeout is outside 5..120 s.
EXTERNAL_ACCOUNT_TIMEOUT_MILLIS = 30_000


def render_gcp_external_account(
    credential: str,
    gcp: GcpOidcSettings,
    *,
    broker_url: str | None = None,
    timeout_millis: int = EXTERNAL_ACCOUNT_TIMEOUT_MILLIS,
    output_file: str | None = None,
) -> dict[str, object]:
    """google-auth's ``external_account`` configuration whose executable source is our CLI.

    google-auth (and gcloud) run the command whenever they need a subject token, so a long job
    refreshes by itself; the command prints ``format=gcp-executable``.
    """
    if not 5_000 <= timeout_millis <= 120_000:
        raise ValueError("timeout_millis must be between 5000 and 120000")
    command = ["tokenbroker", "exchange"]
    if broker_url is not None:
        command += ["--broker", broker_url]
    command += ["--credential", credential, "--format", "gcp-executable"]
    executable: dict[str, object] = {
        # google-auth splits the command with shlex: quote every word.
        "command": shlex.join(command),
        "timeout_millis": timeout_millis,
    }
    if output_file is not None:
        executable["output_file"] = output_file
    document: dict[str, object] = {
        "type": "external_account",
        "audience": gcp.audience,
        "subject_token_type": gcp.subject_token_type,
        "token_url": gcp.token_url,
    }
    if gcp.service_account is not None:
        document["service_account_impersonation_url"] = (
            f"{gcp.iam_endpoint}/v1/projects/-/serviceAccounts/"
            f"{gcp.service_account}:generateAccessToken"
        )
        document["service_account_impersonation"] = {"token_lifetime_seconds": gcp.lifetime_seconds}
    document["credential_source"] = {"executable": executable}
    return document


def render_gcp_executable(gcp: GcpOidcSettings, outbound: OutboundToken) -> dict[str, object]:
    """google-auth's executable-sourced response (version 1) holding the outbound token."""
    return {
        "version": 1,
        "success": True,
        "token_type": gcp.subject_token_type,
        "id_token": outbound.value,
        "expiration_time": int(outbound.expires_at.timestamp()),
    }


class GcpOidcBackend:
    """Exchange the outbound token with Google STS, optionally impersonating a service account."""

    type_name: ClassVar[str] = "gcp_oidc"
    # What POST /oauth2/token returns as access_token for this type.
    oauth_token_value: ClassVar[str] = "GOOGLE_OAUTH_ACCESS_TOKEN"
    oauth_token_type: ClassVar[str] = "urn:ietf:params:oauth:token-type:access_token"
    settings_model: ClassVar[type[BaseModel]] = GcpOidcSettings
    # google-auth's own client exchanges the token with these: the broker does not call Google.
    # The executable response carries the outbound token; the configuration only settings.
    runner_documents: ClassVar[Mapping[str, bool]] = {
        "gcp-external-account": False,
        "gcp-executable": True,
    }

    def __init__(self, context: BackendContext, *, sleep: Sleep = asyncio.sleep) -> None:
        # google-auth's transport is synchronous and would block the event loop; the calls go
        # through the app's shared aiohttp session.
        self._http = context.http
        self._clock = context.clock
        self._sleep = sleep

    def runner_document(
        self,
        fmt: str,
        *,
        credential: str,
        settings: BaseModel,
        outbound: OutboundToken | None,
        broker_url: str,
    ) -> dict[str, object]:
        """The external-account configuration, or the executable response for google-auth."""
        assert isinstance(settings, GcpOidcSettings)
        if fmt == "gcp-executable" and outbound is not None:
            return render_gcp_executable(settings, outbound)
        if fmt == "gcp-external-account":
            return render_gcp_external_account(credential, settings, broker_url=broker_url)
        raise InvalidRequest("format_not_supported", f"gcp_oidc does not render {fmt}")

    async def exchange(
        self, identity: Identity, outbound_token: str, settings: BaseModel
    ) -> IssuedCredential:
        """STS exchange (+ generateAccessToken); map Google's answer or raise a BrokerError."""
        assert isinstance(settings, GcpOidcSettings)
        secrets = [outbound_token]
        federated = await self._retrying(
            lambda: self._sts_exchange(outbound_token, settings, secrets), settings
        )
        token = federated
        if settings.service_account is not None:
            secrets.append(federated.value)
            token = await self._retrying(
                lambda: self._generate_access_token(federated.value, settings, secrets), settings
            )
        return IssuedCredential(
            values={
                "GOOGLE_OAUTH_ACCESS_TOKEN": token.value,
                "CLOUDSDK_AUTH_ACCESS_TOKEN": token.value,
            },
            expires_at=token.expires_at,
            metadata={
                "service_account": settings.service_account,
                "token_type": "Bearer",
                "scopes": list(settings.scopes),
            },
        )

    async def _retrying(self, call: _Call, settings: GcpOidcSettings) -> _Token:
        return await retry_transient(
            call, policy=RetryPolicy(retries=settings.max_retries), sleep=self._sleep
        )

    async def _sts_exchange(
        self, subject_token: str, settings: GcpOidcSettings, secrets: Sequence[str]
    ) -> _Token:
        # Impersonation needs a federated token allowed to call IAM Credentials, as google-auth
        # asks for; the caller's scopes go on the service account's token instead.
        scopes = [CLOUD_PLATFORM_SCOPE] if settings.service_account else settings.scopes
        form = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "audience": settings.audience,
            "scope": " ".join(scopes),
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "subject_token": subject_token,
            "subject_token_type": settings.subject_token_type,
        }
        body = await self._post(
            settings.token_url, "Google STS", settings, secrets, data=form, headers={}
        )
        access_token = body.get("access_token")
        expires_in = body.get("expires_in")
        if not isinstance(access_token, str) or not access_token:
            raise UpstreamError("backend_error", "Google STS answered without an access_token")
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
            raise UpstreamError("backend_error", "Google STS answered without a valid expires_in")
        now = datetime.fromtimestamp(self._clock.now(), UTC)
        return _Token(access_token, now + timedelta(seconds=expires_in))

    async def _generate_access_token(
        self, federated_token: str, settings: GcpOidcSettings, secrets: Sequence[str]
    ) -> _Token:
        assert settings.service_account is not None
        url = (
            f"{settings.iam_endpoint}/v1/projects/-/serviceAccounts/"
            f"{quote(settings.service_account, safe='@')}:generateAccessToken"
        )
        payload = {"scope": list(settings.scopes), "lifetime": f"{settings.lifetime_seconds}s"}
        body = await self._post(
            url,
            "Google IAM Credentials",
            settings,
            secrets,
            json_body=payload,
            headers={"Authorization": f"Bearer {federated_token}"},
        )
        access_token = body.get("accessToken")
        expire_time = body.get("expireTime")
        if not isinstance(access_token, str) or not access_token:
            raise UpstreamError("backend_error", "IAM Credentials answered without an accessToken")
        if not isinstance(expire_time, str):
            raise UpstreamError("backend_error", "IAM Credentials answered without an expireTime")
        try:
            expires_at = parse_expire_time(expire_time)
        except ValueError:
            raise UpstreamError(
                "backend_error", "IAM Credentials answered with an unreadable expireTime"
            ) from None
        return _Token(access_token, expires_at)

    async def _post(
        self,
        url: str,
        service: str,
        settings: GcpOidcSettings,
        secrets: Sequence[str],
        *,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None = None,
        json_body: Mapping[str, object] | None = None,
    ) -> Mapping[str, object]:
        timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        try:
            async with self._http.post(
                url,
                data=data,
                json=json_body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                body = await read_json_object(response, service)
        except TimeoutError:
            raise UpstreamTimeout("backend_timeout", f"{service} did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise TransientFailure(
                UpstreamError(
                    "backend_unreachable", f"{service} could not be reached ({type(exc).__name__})"
                )
            ) from None
        if 200 <= status < 300:
            if body is None:
                raise UpstreamError("backend_error", f"{service} answered with no JSON object")
            return body
        raise _map_google_error(service, status, body, secrets)


def _error_fields(body: Mapping[str, object] | None) -> tuple[str, str]:
    """The (code, message) of an OAuth error body or a google.rpc error body."""
    if body is None:
        return "", ""
    error = body.get("error")
    if isinstance(error, str):
        description = body.get("error_description")
        return error, description if isinstance(description, str) else ""
    if isinstance(error, Mapping):
        status = error.get("status")
        message = error.get("message")
        return (
            status if isinstance(status, str) else "",
            message if isinstance(message, str) else "",
        )
    return "", ""


def _redact(message: str, secrets: Sequence[str]) -> str:
    # Google does not echo tokens, but a description must never carry one even if it did.
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[redacted]")
    return message[:_MESSAGE_MAX]


def _map_google_error(
    service: str, status: int, body: Mapping[str, object] | None, secrets: Sequence[str]
) -> Exception:
    code, message = _error_fields(body)
    message = _redact(message, secrets)
    label = code or f"HTTP {status}"
    detail = f"{message} ({label})" if message else label
    if code in _TRANSIENT or status >= 500 or status == 429:
        return TransientFailure(UpstreamError("backend_error", f"{service} failed: {detail}"))
    if code in _REFUSED or (not code and status in (401, 403)):
        return AccessDenied("backend_refused", f"{service} refused the token: {detail}")
    if code in _REJECTED or 400 <= status < 500:
        return InvalidRequest(
            "backend_rejected_request", f"{service} rejected the request: {detail}"
        )
    return UpstreamError("backend_error", f"{service} answered HTTP {status}: {detail}")
