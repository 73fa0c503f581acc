"""The ``vault_oidc`` backend: env0's "Vault OIDC" credential, a JWT login against Vault/OpenBao.

The runner's (or the broker's minted) token is sent to ``auth/<auth_path>/login`` with a role
name; Vault checks the token against the role's bound claims and answers with a client token.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, ClassVar

import aiohttp
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
)

from tokenbroker.backends.base import BackendContext, CredentialSettings, IssuedCredential
from tokenbroker.backends.tls import PemBundle, SslContexts
from tokenbroker.config.urls import require_backend_url
from tokenbroker.errors import AccessDenied, BrokerError, UpstreamError, UpstreamTimeout
from tokenbroker.identity.models import Identity
from tokenbroker.retry import RetryPolicy, Sleep, with_retries

# One or more path segments of letters, digits, '_', '.', '-' (no empty or '..' segments):
# Vault mount paths and namespaces are both made of these, and they go into a URL path or header.
_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_ROLE = re.compile(r"^[A-Za-z0-9_.@-]{1,256}$")


def _vault_address(value: str, info: ValidationInfo) -> str:
    require_backend_url(value, info)
    if "?" in value or "#" in value:
        raise ValueError("a Vault address must not carry a query or fragment")
    return value.rstrip("/")


def _vault_path(value: str) -> str:
    stripped = value.strip("/")
    if not _PATH.match(stripped) or ".." in stripped.split("/"):
        raise ValueError(
            "must be path segments of letters, digits, '_', '.' or '-' separated by '/'"
        )
    return stripped


VaultAddress = Annotated[str, AfterValidator(_vault_address)]
VaultPath = Annotated[str, AfterValidator(_vault_path)]


class VaultOidcSettings(CredentialSettings):
    """A ``vault_oidc`` credential's settings: env0's Address, Version, Role, Path, Namespace."""

    address: VaultAddress
    # Informational, as in env0's form: the login API is the same across Vault/OpenBao versions.
    version: str | None = Field(default=None, max_length=64)
    role: str
    auth_path: VaultPath = "jwt"
    namespace: VaultPath | None = None
    # "multiline": forms (the console) show a PEM bundle in a text area.
    ca_cert: PemBundle | None = Field(default=None, json_schema_extra={"multiline": True})
    tls_verify: bool = True
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    max_retries: int = Field(default=2, ge=0, le=5)

    @field_validator("role")
    @classmethod
    def _role_name(cls, value: str) -> str:
        if not _ROLE.match(value):
            raise ValueError("a Vault role name is 1-256 letters, digits, '_', '.', '@' or '-'")
        return value

    @field_validator("tls_verify")
    @classmethod
    def _verification_stays_on(cls, value: bool) -> bool:
        # Our standard: TLS verification is never turned off. A private CA is trusted explicitly.
        if not value:
            raise ValueError(
                "TLS verification cannot be turned off; "
                "give the Vault server's CA as ca_cert instead"
            )
        return value


# ---------------------------------------------------------------------------------------------
# The backend. hvac is not used here: it is synchronous (requests) and would block the event
# loop every exchange is served on, so the login goes through the app's shared aiohttp session.
# ---------------------------------------------------------------------------------------------

logger = logging.getLogger(__name__)

# A login answer is a few hundred bytes; anything far larger is not Vault talking.
_MAX_RESPONSE_BYTES = 1024 * 1024
# Vault's "eventual consistency" answer: a performance standby has not yet caught up.
_PRECONDITION_FAILED = 412
# How much longer than its timeout a login may take to answer, so a token made late is revoked.
LATE_LOGIN_SECONDS = 60.0
# A shutdown waits this long for such revocations already under way.
_CLOSE_WAIT_SECONDS = 5.0
_REFUSED_STATUSES = frozenset({400, 403})
_MAX_MESSAGE_CHARS = 300
_MAX_DESCRIPTION_CHARS = 600

# Anything that looks like a JWT or one of its segments: base64url of '{"' starts with "eyJ".
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,2}")
# Vault / OpenBao token formats: hvs./hvb./hvr. (Vault), s./b./r. (OpenBao and older Vault).
_VAULT_TOKEN_LIKE = re.compile(r"\b(?:hv[sbr]|[sbr])\.[A-Za-z0-9_-]{16,}")
# Any other long opaque blob (keys, signatures, encoded tokens) is never worth showing a user.
_LONG_OPAQUE = re.compile(r"[A-Za-z0-9_\-+/=.]{64,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove the given secrets, and anything shaped like a JWT, Vault token or key, from text."""
    for secret in secrets:
        # A JWT's segments are secrets of their own: the payload alone is a bearer's identity.
        for part in (secret, *secret.split(".")):
            if len(part) >= 8:
                text = text.replace(part, _REDACTED)
    for pattern in (_JWT_LIKE, _VAULT_TOKEN_LIKE, _LONG_OPAQUE):
        text = pattern.sub(_REDACTED, text)
    return _CONTROL.sub(" ", text)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def vault_error_messages(body: bytes, secrets: Iterable[str] = ()) -> list[str]:
    """Vault's own ``errors`` messages from a response body, redacted and truncated."""
    try:
        document = json.loads(body)
    except ValueError:
        return []
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return []
    secrets = tuple(secrets)
    return [
        _truncate(redact(message, secrets).strip(), _MAX_MESSAGE_CHARS)
        for message in errors
        if isinstance(message, str) and message.strip()
    ]


def _with_reasons(prefix: str, reply: _Reply, secrets: Iterable[str]) -> str:
    messages = vault_error_messages(reply.body, secrets)
    text = f"{prefix}: {'; '.join(messages)}" if messages else prefix
    return _truncate(text, _MAX_DESCRIPTION_CHARS)


@dataclass(frozen=True, slots=True)
class VaultLogin:
    """The useful part of a successful login answer (``auth`` of the response)."""

    client_token: str = field(repr=False)
    lease_duration: int
    renewable: bool
    policies: tuple[str, ...]
    accessor: str
    entity_id: str | None


def parse_login(body: bytes) -> VaultLogin:
    """Read a login answer; raise UpstreamError ``backend_bad_response`` when it is not one."""
    try:
        document = json.loads(body)
    except ValueError:
        # `from None`: a decode error carries the body, which may hold a token.
        raise UpstreamError("backend_bad_response", "Vault answered with invalid JSON") from None
    auth = document.get("auth") if isinstance(document, dict) else None
    if not isinstance(auth, dict):
        raise UpstreamError("backend_bad_response", "Vault's login answer has no auth section")
    token = auth.get("client_token")
    if not isinstance(token, str) or not token:
        raise UpstreamError("backend_bad_response", "Vault's login answer has no client token")
    lease = auth.get("lease_duration", 0)
    if not isinstance(lease, int) or isinstance(lease, bool) or lease < 0:
        raise UpstreamError("backend_bad_response", "Vault's login answer has a bad lease_duration")
    policies = auth.get("policies") or auth.get("token_policies") or []
    entity_id = auth.get("entity_id")
    accessor = auth.get("accessor")
    return VaultLogin(
        client_token=token,
        lease_duration=lease,
        renewable=auth.get("renewable") is True,
        policies=tuple(p for p in policies if isinstance(p, str))
        if isinstance(policies, list)
        else (),
        accessor=accessor if isinstance(accessor, str) else "",
        entity_id=entity_id if isinstance(entity_id, str) and entity_id else None,
    )


def issued_credential(
    login: VaultLogin, settings: VaultOidcSettings, now: float
) -> IssuedCredential:
    """What a runner gets from a login: VAULT_ADDR, VAULT_TOKEN and VAULT_NAMESPACE when set."""
    values = {"VAULT_ADDR": settings.address, "VAULT_TOKEN": login.client_token}
    if settings.namespace:
        values["VAULT_NAMESPACE"] = settings.namespace
    metadata: dict[str, object] = {
        "lease_duration": login.lease_duration,
        "renewable": login.renewable,
        "policies": list(login.policies),
        "accessor": login.accessor,
    }
    if login.entity_id:
        metadata["entity_id"] = login.entity_id
    return IssuedCredential(
        values=values,
        # A lease of 0 is a token without TTL; it is reported as already due for renewal.
        expires_at=datetime.fromtimestamp(now + login.lease_duration, tz=UTC),
        metadata=metadata,
        revocation_handle=login.client_token,
    )


def _is_retryable_status(status: int) -> bool:
    return status == _PRECONDITION_FAILED or 500 <= status <= 599


def _is_retryable_error(exc: Exception) -> bool:
    # TLS failures are configuration, not weather: retrying cannot fix a certificate.
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch):
        return False
    # A timed-out login may have succeeded at Vault; it is not repeated.
    if isinstance(exc, TimeoutError):
        return False
    # Could not connect (the request never left), or a pooled keep-alive connection was closed.
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError)


class VaultOidcBackend:
    """env0's "Vault OIDC" credential: a JWT login at Vault/OpenBao for a client token."""

    type_name: ClassVar[str] = "vault_oidc"
    # What POST /oauth2/token returns as access_token for this type.
    oauth_token_value: ClassVar[str] = "VAULT_TOKEN"
    oauth_token_type: ClassVar[str] = "urn:ietf:params:oauth:token-type:access_token"
    settings_model: ClassVar[type[BaseModel]] = VaultOidcSettings

    def __init__(
        self,
        context: BackendContext,
        *,
        base_delay: float = 0.2,
        max_delay: float = 2.0,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._http = context.http
        self._clock = context.clock
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter only
        self._sleep = sleep
        # Logins the broker stopped waiting for, still allowed to answer so they can be revoked.
        self._late: set[asyncio.Future[None]] = set()
        self._ssl = SslContexts()

    async def exchange(
        self, identity: Identity, outbound_token: str, settings: BaseModel
    ) -> IssuedCredential:
        """Log in at ``auth/<auth_path>/login`` with the role and the outbound token."""
        vault = _vault_settings(settings)
        url = f"{vault.address}/v1/auth/{vault.auth_path}/login"
        # A login Vault answers after the broker gave up still makes a token: the request is
        # let run a while longer, and a token it brings is revoked, since no runner holds it.
        answer = asyncio.ensure_future(
            self._post(
                url,
                {"role": vault.role, "jwt": outbound_token},
                _headers(vault),
                vault,
                budget=vault.timeout_seconds + LATE_LOGIN_SECONDS,
            )
        )
        try:
            async with asyncio.timeout(vault.timeout_seconds):
                reply = await asyncio.shield(answer)
        except TimeoutError:
            answer.add_done_callback(functools.partial(self._revoke_late, vault))
            raise _timed_out(vault) from None
        where = f"role {vault.role!r} at auth/{vault.auth_path}"
        if reply.status == 200:
            try:
                login = parse_login(reply.body)
            except UpstreamError:
                raise _no_vault(vault.address) from None
            # DEBUG: the exchange's own INFO line already says a credential was issued.
            logger.debug(
                "vault login ok: %s, org %s, lease %ss, policies %s",
                where,
                identity.org,
                login.lease_duration,
                ",".join(login.policies),
            )
            return issued_credential(login, vault, self._clock.now())
        secrets = (outbound_token,)
        if reply.status in _REFUSED_STATUSES:
            description = _with_reasons(f"Vault refused the login with {where}", reply, secrets)
            logger.info("vault login refused (HTTP %s): %s", reply.status, description)
            raise AccessDenied("backend_refused", description)
        raise _unexpected_status(reply, where, secrets, vault.address)

    def _revoke_late(self, vault: VaultOidcSettings, login: asyncio.Future[_Reply]) -> None:
        """A login answered after the broker stopped waiting: revoke the token it made."""
        if login.cancelled() or login.exception() is not None:
            return
        reply = login.result()
        if reply.status != 200:
            return
        try:
            parsed = parse_login(reply.body)
        except UpstreamError:
            return
        credential = issued_credential(parsed, vault, self._clock.now())
        task = asyncio.ensure_future(self._revoke_quietly(credential, vault))
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def _revoke_quietly(self, credential: IssuedCredential, vault: VaultOidcSettings) -> None:
        try:
            await self.revoke(credential, vault)
            logger.info("revoked a Vault token whose login answered after the broker gave up")
        except BrokerError as exc:
            logger.warning(
                "could not revoke a Vault token whose login answered late",
                extra={"reason": exc.reason},
            )

    async def close(self) -> None:
        """Give revocations of late logins a moment to finish (at shutdown), then drop them."""
        if self._late:
            _, pending = await asyncio.wait(set(self._late), timeout=_CLOSE_WAIT_SECONDS)
            for task in pending:
                task.cancel()

    async def revoke(self, credential: IssuedCredential, settings: BaseModel) -> None:
        """Revoke a token this backend issued (``auth/token/revoke-self``); idempotent."""
        vault = _vault_settings(settings)
        token = credential.revocation_handle
        if not token:
            raise ValueError("the credential carries no Vault token to revoke")
        headers = {**_headers(vault), "X-Vault-Token": token}
        reply = await self._post(f"{vault.address}/v1/auth/token/revoke-self", None, headers, vault)
        if reply.status in (200, 204):
            return
        if reply.status == 403:
            # revoke-self is granted to every valid token, so 403 means it is already gone.
            logger.info("vault token was already revoked or expired")
            return
        raise _unexpected_status(reply, "revoke-self", (token,), vault.address)

    async def _post(
        self,
        url: str,
        body: Mapping[str, str] | None,
        headers: Mapping[str, str],
        settings: VaultOidcSettings,
        *,
        budget: float | None = None,
    ) -> _Reply:
        """POST with retries inside the time budget (the credential's timeout unless given);
        map transport errors."""
        policy = RetryPolicy(
            retries=settings.max_retries, base_delay=self._base_delay, max_delay=self._max_delay
        )
        ssl_context = self._ssl.for_bundle(settings.ca_cert)
        seconds = settings.timeout_seconds if budget is None else budget
        timeout = aiohttp.ClientTimeout(total=seconds)

        async def attempt() -> _Reply:
            # Redirects are not followed: a redirect would carry the token to another host.
            async with self._http.post(
                url,
                json=body,
                headers=headers,
                ssl=ssl_context,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                answer = await _read_capped(response)
                if answer is None:
                    raise _no_vault(settings.address)
                return _Reply(response.status, answer)

        def retry_reply(reply: _Reply) -> bool:
            retry = _is_retryable_status(reply.status)
            if retry:
                logger.warning("vault answered HTTP %s at %s; retrying", reply.status, url)
            return retry

        def retry_error(exc: Exception) -> bool:
            retry = _is_retryable_error(exc)
            if retry:
                logger.warning("vault unreachable at %s (%s); retrying", url, type(exc).__name__)
            return retry

        try:
            async with asyncio.timeout(seconds):
                return await with_retries(
                    attempt,
                    policy=policy,
                    retry_on_error=retry_error,
                    retry_on_result=retry_reply,
                    rng=self._rng,
                    sleep=self._sleep,
                )
        except TimeoutError:
            raise _timed_out(settings) from None
        except aiohttp.ClientSSLError as exc:
            raise UpstreamError(
                "backend_unreachable",
                f"TLS verification of Vault at {settings.address} failed; check ca_cert",
            ) from exc
        except aiohttp.ClientError as exc:
            raise _no_vault(settings.address) from exc


def _timed_out(settings: VaultOidcSettings) -> UpstreamTimeout:
    return UpstreamTimeout(
        "backend_timeout",
        f"Vault at {settings.address} did not answer within {settings.timeout_seconds:g}s",
    )


def _no_vault(address: str) -> UpstreamError:
    # One answer, whether nothing listens or something that is not Vault answers: otherwise
    # an address pointed at a host's ports would map which are open and what serves them.
    return UpstreamError(
        "backend_unreachable", f"no Vault answered at {address}; check the credential's address"
    )


def _is_vault_error(body: bytes) -> bool:
    # Vault answers every error with a JSON object holding an `errors` list.
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and isinstance(document.get("errors"), list)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, or None when it is over the cap (a login answer is a few hundred bytes)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > _MAX_RESPONSE_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _vault_settings(settings: BaseModel) -> VaultOidcSettings:
    if not isinstance(settings, VaultOidcSettings):
        raise TypeError(f"vault_oidc needs VaultOidcSettings, not {type(settings).__name__}")
    return settings


def _headers(settings: VaultOidcSettings) -> dict[str, str]:
    return {"X-Vault-Namespace": settings.namespace} if settings.namespace else {}


def _unexpected_status(
    reply: _Reply, where: str, secrets: Iterable[str], address: str
) -> UpstreamError:
    if not _is_vault_error(reply.body):
        return _no_vault(address)
    if _is_retryable_status(reply.status):
        return UpstreamError(
            "backend_unavailable",
            _with_reasons(
                f"Vault is unavailable (HTTP {reply.status}) for {where}", reply, secrets
            ),
        )
    return UpstreamError(
        "backend_error",
        _with_reasons(f"Vault answered HTTP {reply.status} for {where}", reply, secrets),
    )
