"""ExchangeService: validate -> identify -> resolve -> outbound token -> backend -> audit.

No aiohttp here: the web layer hands in a token and gets back a result or a BrokerError.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from pydantic import BaseModel, ValidationError

from tokenbroker.backends.base import (
    Backend,
    BackendFactory,
    IssuedCredential,
    OAuthTokenProvider,
    OutboundClaimsProvider,
)
from tokenbroker.backends.registry import (
    Backends,
    BackendUnavailable,
    UnknownCredentialType,
    backend_class,
)
from tokenbroker.clock import Clock
from tokenbroker.config.models import RateLimitSettings, SigningSettings
from tokenbroker.errors import (
    AccessDenied,
    BrokerError,
    InvalidRequest,
    InvalidTarget,
    RateLimited,
    UpstreamError,
)
from tokenbroker.identity.fingerprint import token_fingerprint
from tokenbroker.identity.models import Identity
from tokenbroker.identity.profiles import identify
from tokenbroker.identity.validator import TokenValidator, ValidatedToken
from tokenbroker.issuer.keyring import KeyRing
from tokenbroker.issuer.minting import mint_for_identity
from tokenbroker.metrics import Metrics
from tokenbroker.policy.bound_claims import bound_claims_satisfied, match_bound_claims
from tokenbroker.policy.decision import check_bound_claims, choose_credential
from tokenbroker.policy.models import AuditEvent, Credential, Organization, Outcome
from tokenbroker.ratelimit import RateLimiter, bucket_key, retry_after_seconds
from tokenbroker.reuse import IssuedCredentialCache, ReuseKey
from tokenbroker.store import Store

log = logging.getLogger(__name__)

# Credential types whose value *is* the outbound token: a passthrough would hand the platform
# token back, so they only make sense with a broker-minted token.
_MINT_ONLY_TYPES = frozenset({"oidc_token"})


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    """One runner's request: its platform token and, optionally, the credential it names."""

    token: str = field(repr=False)
    credential: str | None
    request_id: str
    client_address: str | None = None
    # RFC 8693 callers want one token back: credentials of other shapes are refused up front.
    single_token: bool = False


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    """A credential issued (or reused) for a request."""

    credential: Credential
    issued: IssuedCredential
    reused: bool


@dataclass(frozen=True, slots=True)
class OutboundToken:
    """The token a credential's backend would be sent for a request, and when it expires."""

    value: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ResolvedCredential:
    """A credential a request may use, with its parsed settings; its backend was not called."""

    credential: Credential
    settings: BaseModel
    outbound: OutboundToken | None = None


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One check of a dry run: what was checked, whether it passed, and why."""

    check: str
    ok: bool
    detail: str
    data: Mapping[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        out: dict[str, object] = {"check": self.check, "ok": self.ok, "detail": self.detail}
        if self.data:
            out.update(self.data)
        return out


@dataclass(frozen=True, slots=True)
class DecisionTrace:
    """The whole decision of a dry run, without calling the backend."""

    allowed: bool
    steps: list[TraceStep]
    error: BrokerError | None = None
    credential: Credential | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        out: dict[str, object] = {
            "allowed": self.allowed,
            "checks": [step.as_dict() for step in self.steps],
        }
        if self.credential is not None:
            out["credential"] = self.credential.name
            out["type"] = self.credential.type
        if self.error is not None:
            out["error"] = self.error.error
            out["reason"] = self.error.reason
            out["error_description"] = self.error.description
        return out


@dataclass(slots=True)
class _Decision:
    """What the policy part of an exchange found, filled in as it goes (for audit and traces)."""

    validated: ValidatedToken | None = None
    identity: Identity | None = None
    organization: Organization | None = None
    credential: Credential | None = None


class ExchangeService:
    """The broker's main job, with every dependency passed in."""

    def __init__(
        self,
        *,
        validator: TokenValidator,
        store: Store,
        keyring: KeyRing,
        backends: Backends,
        metrics: Metrics,
        clock: Clock,
        issuer_url: str,
        signing: SigningSettings,
        reuse: IssuedCredentialCache,
        rate_limit: RateLimitSettings | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self._validator = validator
        self._store = store
        self._keyring = keyring
        self._backends = backends
        self._metrics = metrics
        self._clock = clock
        self._issuer_url = issuer_url
        self._signing = signing
        self._reuse = reuse
        self._rate_limit = rate_limit
        self._rate_limiter = rate_limiter
        self._settings_cache: dict[tuple[int, str], BaseModel] = {}
        # The policy cache hands out the same Credential object until the credential changes:
        # its version (a JSON dump and a SHA-256) is computed once per object, not per request.
        self._versions: dict[int, tuple[Credential, str]] = {}

    async def exchange(self, request: ExchangeRequest) -> ExchangeResult:
        """Issue the requested credential, or raise the BrokerError that explains why not.

        Exactly one audit event is committed for the decision before this returns or raises.
        """
        started = time.perf_counter()
        decision = _Decision()
        fingerprint = token_fingerprint(request.token)
        try:
            validated, identity, credential = await self._decide(request, decision)
            result = await self._issue(request, validated, identity, credential, fingerprint)
        except BrokerError as exc:
            outcome: Outcome = "error" if exc.status >= 500 else "denied"
            await self._audit(request, decision, fingerprint, outcome, exc.reason, started)
            self._count(decision, outcome, started)
            raise
        reason = "reused" if result.reused else "issued"
        await self._audit(request, decision, fingerprint, "success", reason, started)
        self._count(decision, "success", started)
        return result

    async def explain(self, request: ExchangeRequest) -> DecisionTrace:
        """Run every check of an exchange and report each, without calling the backend."""
        started = time.perf_counter()
        decision = _Decision()
        steps: list[TraceStep] = []
        fingerprint = token_fingerprint(request.token)
        try:
            await self._decide(request, decision, steps)
        except BrokerError as exc:
            await self._audit(
                request, decision, fingerprint, "denied", f"dry_run:{exc.reason}", started
            )
            return DecisionTrace(False, steps, error=exc, credential=decision.credential)
        await self._audit(request, decision, fingerprint, "success", "dry_run", started)
        return DecisionTrace(True, steps, credential=decision.credential)

    async def resolve(
        self,
        request: ExchangeRequest,
        *,
        credential_types: Collection[str] | None = None,
        outbound: bool = False,
    ) -> ResolvedCredential:
        """Run every check of an exchange and return the credential without calling its backend.

        For outputs the runner turns into credentials itself (google-auth's external account
        files): ``outbound`` adds the token the backend would be sent. One audit event is
        committed; a credential outside ``credential_types`` is a 400 ``format_not_supported``.
        """
        started = time.perf_counter()
        decision = _Decision()
        fingerprint = token_fingerprint(request.token)
        try:
            validated, identity, credential = await self._decide(request, decision)
            if credential_types is not None and credential.type not in credential_types:
                raise InvalidRequest(
                    "format_not_supported",
                    f"credential {credential.name!r} ({credential.type}) cannot be rendered "
                    f"in this format; it is for {', '.join(sorted(credential_types))} credentials",
                )
            settings = self._settings(credential, self._backend_class(credential).settings_model)
            token = self._outbound(request, validated, identity, credential) if outbound else None
        except BrokerError as exc:
            outcome: Outcome = "error" if exc.status >= 500 else "denied"
            await self._audit(request, decision, fingerprint, outcome, exc.reason, started)
            raise
        # Says what left the broker: the settings alone, or also a token for the backend.
        reason = "outbound_token" if outbound else "resolved"
        await self._audit(request, decision, fingerprint, "success", reason, started)
        return ResolvedCredential(credential, settings, token)

    async def _decide(
        self, request: ExchangeRequest, decision: _Decision, trace: list[TraceStep] | None = None
    ) -> tuple[ValidatedToken, Identity, Credential]:
        """Every check before the backend; fills ``decision`` as it goes, for the audit event.

        ``trace`` (a dry run's) gets one step per check. Without one no step is built: on the
        exchange path their strings and dicts were ~1% of the broker's CPU per request.
        """
        try:
            decision.validated = await self._validator.validate_platform_token(request.token)
        except BrokerError as exc:
            _refused(trace, "token", exc)
            raise
        issuer = decision.validated.issuer
        if trace is not None:
            trace.append(
                TraceStep(
                    "token",
                    True,
                    f"signature, issuer, audience, lifetime and required claims valid "
                    f"for issuer {issuer.name!r}",
                    {"issuer": issuer.name, "kid": decision.validated.header.get("kid")},
                )
            )
        try:
            decision.identity = identify(issuer, decision.validated.claims)
        except BrokerError as exc:
            _refused(trace, "identity", exc)
            raise
        identity = decision.identity
        if trace is not None:
            trace.append(
                TraceStep(
                    "identity",
                    True,
                    f"{issuer.profile} profile read the claims",
                    {
                        "org": identity.org,
                        "project": identity.project,
                        "environment": identity.environment,
                        "subject": identity.subject,
                    },
                )
            )
        try:
            await self._check_rate(identity)
        except BrokerError as exc:
            _refused(trace, "rate_limit", exc)
            raise
        decision.organization, assigned = await self._store.find_organization_assignments(
            issuer.name, identity.org, identity.project
        )
        if decision.organization is None:
            unknown = AccessDenied(
                "organization_unknown",
                f"no organization is registered for issuer {issuer.name!r} "
                f"and platform organization {identity.org!r}",
            )
            _refused(trace, "organization", unknown)
            raise unknown
        organization = decision.organization
        if trace is not None:
            trace.append(TraceStep("organization", True, f"organization {organization.name!r}"))
        try:
            decision.credential = choose_credential(
                assigned,
                request.credential,
                organization=organization.name,
                project=identity.project,
            )
        except BrokerError as exc:
            _refused(trace, "assignment", exc, {"assigned": [c.name for c in assigned]})
            raise
        credential = decision.credential
        if request.single_token and not isinstance(
            self._backend_class(credential), OAuthTokenProvider
        ):
            raise InvalidTarget(
                "token_type_unsupported",
                f"credential {credential.name!r} ({credential.type}) is not a single token; "
                "use POST /v1/exchange",
            )
        if trace is not None:
            trace.append(
                TraceStep(
                    "assignment",
                    True,
                    f"credential {credential.name!r} ({credential.type}) is assigned to "
                    f"project {identity.project!r}",
                )
            )
            trace.append(_bound_claims_step(credential, identity))
        check_bound_claims(credential, identity.claims)
        return decision.validated, identity, credential

    async def _check_rate(self, identity: Identity) -> None:
        # After identify, so a bucket is an organization's (or project's, or subject's) and
        # tokens that fail validation never spend anyone's quota.
        if self._rate_limiter is None or self._rate_limit is None:
            return
        wait = await self._rate_limiter.acquire(bucket_key(self._rate_limit, identity))
        if wait is None:
            return
        raise RateLimited(
            "rate_limited",
            f"too many exchanges for this {self._rate_limit.key}; retry later",
            retry_after=retry_after_seconds(wait),
        )

    async def _issue(
        self,
        request: ExchangeRequest,
        validated: ValidatedToken,
        identity: Identity,
        credential: Credential,
        fingerprint: str,
    ) -> ExchangeResult:
        backend = self._backend(credential)
        settings = self._settings(credential, backend.settings_model)
        key = ReuseKey(fingerprint, credential.id, self._version(credential))
        token_exp = validated.claims.get("exp")
        token_expires_at = float(token_exp) if isinstance(token_exp, int | float) else 0.0

        async def call_backend() -> IssuedCredential:
            outbound = self._outbound_token(request, credential, identity, backend)
            backend_started = time.perf_counter()
            try:
                return await backend.exchange(identity, outbound, settings)
            finally:
                self._metrics.child(self._metrics.backend_seconds, credential.type).observe(
                    time.perf_counter() - backend_started
                )

        issued, reused = await self._reuse.get_or_issue(key, token_expires_at, call_backend)
        if reused:
            self._metrics.issued_cache_hits.inc()
        else:
            self._metrics.issued_cache_misses.inc()
        return ExchangeResult(credential, issued, reused)

    def _backend(self, credential: Credential) -> Backend:
        try:
            return self._backends.get(credential.type)
        except (UnknownCredentialType, BackendUnavailable) as exc:
            log.error("credential type cannot be served", extra={"type": credential.type})
            raise UpstreamError(
                "backend_unavailable", f"credential type {credential.type!r}: {exc}"
            ) from None

    def _backend_class(self, credential: Credential) -> BackendFactory:
        try:
            return backend_class(credential.type)
        except (UnknownCredentialType, BackendUnavailable) as exc:
            log.error("credential type cannot be served", extra={"type": credential.type})
            raise UpstreamError(
                "backend_unavailable", f"credential type {credential.type!r}: {exc}"
            ) from None

    def _settings(self, credential: Credential, model: type[BaseModel]) -> BaseModel:
        # Settings were validated when stored; parse once per credential version, not per call.
        cache_key = (credential.id, self._version(credential))
        parsed = self._settings_cache.get(cache_key)
        if parsed is None:
            try:
                parsed = model.model_validate(dict(credential.settings))
            except ValidationError:
                raise UpstreamError(
                    "credential_misconfigured",
                    f"credential {credential.name!r} has settings its type no longer accepts; "
                    "an administrator must update it",
                ) from None
            if len(self._settings_cache) > 10_000:
                self._settings_cache.clear()
            self._settings_cache[cache_key] = parsed
        return parsed

    def _version(self, credential: Credential) -> str:
        known = self._versions.get(credential.id)
        # The very object, not an equal one: a changed credential is always a new object.
        if known is not None and known[0] is credential:
            return known[1]
        version = _credential_version(credential)
        if len(self._versions) > 10_000:
            self._versions.clear()
        self._versions[credential.id] = (credential, version)
        return version

    def _outbound(
        self,
        request: ExchangeRequest,
        validated: ValidatedToken,
        identity: Identity,
        credential: Credential,
    ) -> OutboundToken:
        """The outbound token with its expiry: the platform token's, or the minted one's."""
        if credential.token == "passthrough":
            expires = validated.claims.get("exp")
        else:
            # mint_token sets exp the same way: whole seconds from the clock plus the lifetime.
            expires = int(self._clock.now()) + self._signing.token_lifetime_seconds
        value = self._outbound_token(request, credential, identity, self._backend(credential))
        seconds = float(expires) if isinstance(expires, int | float) else self._clock.now()
        return OutboundToken(value, datetime.fromtimestamp(seconds, UTC))

    def _outbound_token(
        self,
        request: ExchangeRequest,
        credential: Credential,
        identity: Identity,
        backend: Backend,
    ) -> str:
        if credential.token == "passthrough":
            if credential.type in _MINT_ONLY_TYPES:
                raise AccessDenied(
                    "credential_misconfigured",
                    f"credential {credential.name!r} of type {credential.type} "
                    "needs token = 'mint'",
                )
            return request.token
        audience = credential.audience
        if not audience:
            raise AccessDenied(
                "credential_misconfigured",
                f"credential {credential.name!r} mints tokens but has no audience",
            )
        return mint_for_identity(
            self._keyring,
            identity,
            issuer_url=self._issuer_url,
            audience=audience,
            lifetime_seconds=self._signing.token_lifetime_seconds,
            clock=self._clock,
            extra_claims=dict(cast(OutboundClaimsProvider, backend).outbound_claims(identity))
            if _adds_outbound_claims(type(backend))
            else None,
        )

    async def _audit(
        self,
        request: ExchangeRequest,
        decision: _Decision,
        fingerprint: str,
        outcome: Outcome,
        reason: str,
        started: float,
    ) -> None:
        identity = decision.identity
        event = AuditEvent(
            time=datetime.fromtimestamp(self._clock.now(), UTC),
            request_id=request.request_id,
            outcome=outcome,
            reason=reason,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            issuer=decision.validated.issuer.name if decision.validated else None,
            organization=decision.organization.name if decision.organization else None,
            project=identity.project if identity else None,
            subject=identity.subject if identity else None,
            credential=decision.credential.name if decision.credential else request.credential,
            credential_type=decision.credential.type if decision.credential else None,
            token_fingerprint=fingerprint,
            client_address=request.client_address,
        )
        await self._store.record_audit(event)
        # The exchange's one INFO line (backends log their successes at DEBUG). The text format
        # shows only the message, so the message names the decision; JSON has the extra too.
        # A retry answered from the reuse cache is logged at DEBUG: it issued nothing, its line
        # would repeat the one of the exchange that did, and a retry storm would flood the log
        # when the broker is busiest (~10% of the retry path's CPU). Its audit event above
        # records it either way.
        log.log(
            logging.DEBUG if reason == "reused" else logging.INFO,
            "exchange decided: %s (%s), credential %s, organization %s, project %s",
            outcome,
            reason,
            event.credential,
            event.organization,
            event.project,
            extra={
                "outcome": outcome,
                "reason": reason,
                "credential": event.credential,
                "organization": event.organization,
                "project": event.project,
                "token_fingerprint": fingerprint,
            },
        )

    def _count(self, decision: _Decision, outcome: str, started: float) -> None:
        credential_type = decision.credential.type if decision.credential else "unknown"
        metrics = self._metrics
        metrics.child(metrics.exchanges, credential_type, outcome).inc()
        metrics.child(metrics.exchange_seconds, credential_type).observe(
            time.perf_counter() - started
        )


@functools.cache
def _adds_outbound_claims(backend_type: type[Backend]) -> bool:
    # isinstance against a runtime-checkable Protocol walks the protocol's members on every
    # call (~2% of a minted exchange); a backend's class gives the same answer every time.
    return issubclass(backend_type, OutboundClaimsProvider)


def _refused(
    trace: list[TraceStep] | None,
    step: str,
    error: BrokerError,
    details: Mapping[str, object] | None = None,
) -> None:
    """Record the check that refused, in a dry run's trace."""
    if trace is not None:
        trace.append(
            TraceStep(step, False, error.description, {"reason": error.reason, **(details or {})})
        )


def _bound_claims_step(credential: Credential, identity: Identity) -> TraceStep:
    """Each bound claim of ``credential`` with its expected and actual value."""
    checks = match_bound_claims(credential.bound_claims, identity.claims)
    satisfied = bound_claims_satisfied(checks)
    return TraceStep(
        "bound_claims",
        satisfied,
        "every bound claim matches" if satisfied else "a bound claim does not match",
        {
            "claims": [
                {
                    "claim": check.key,
                    "expected": check.expected,
                    "actual": check.actual,
                    "matched": check.matched,
                }
                for check in checks
            ]
        },
    )


def _credential_version(credential: Credential) -> str:
    # A changed credential (settings, audience, mode) must never reuse what the old one issued.
    material = json.dumps(
        [credential.type, credential.token, credential.audience, credential.settings],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]
