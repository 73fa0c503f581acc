"""ExchangeService: one run per request, the same checks for an exchange and its dry run.

A run validates the platform token, identifies its bearer, decides which credential it may
have, checks that the credential can be issued the way the request wants it, and only then
calls the backend. ``exchange``, ``explain`` (the dry run) and ``resolve`` (formats the
runner's own client turns into credentials) are thin entry points over that one run, which
times, audits and counts every decision the same way. No aiohttp here: the web layer hands in
a request and gets back a result or a BrokerError.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TypeVar, cast

from pydantic import BaseModel, ValidationError

from tokenbroker.backends.base import (
    Backend,
    CredentialTraits,
    IssuedCredential,
    OutboundClaimsProvider,
    OutboundToken,
    RevocableBackend,
    RunnerDocumentProvider,
    traits_of,
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
    InvalidToken,
    NotFound,
    RateLimited,
    TemporarilyUnavailable,
    UpstreamError,
)
from tokenbroker.exchange.reuse import Issue, LeaseFacts, ReuseKey, ReuseWindow
from tokenbroker.identity.fingerprint import token_fingerprint
from tokenbroker.identity.models import Identity
from tokenbroker.identity.profiles import identify, job_id
from tokenbroker.identity.validator import TokenValidator, ValidatedToken
from tokenbroker.issuer.keyring import KeyRing
from tokenbroker.issuer.minting import mint_for_identity
from tokenbroker.metrics import Metrics
from tokenbroker.policy.bound_claims import bound_claims_satisfied, match_bound_claims
from tokenbroker.policy.decision import check_bound_claims, choose_credential
from tokenbroker.policy.models import AuditEvent, Credential, Organization, Outcome
from tokenbroker.policy.rules import mint_audience, token_mode_problems
from tokenbroker.ratelimit import RateLimiter, bucket_key, retry_after_seconds
from tokenbroker.store import Store
from tokenbroker.store.leases import Lease

log = logging.getLogger(__name__)

# A refusal the route makes of a credential it could not give (RFC 8693's token type): it
# returns the trace detail when the credential fits, and raises a BrokerError otherwise.
OutputCheck = Callable[[Credential, CredentialTraits], str]
_T = TypeVar("_T")
# How long a runner is asked to wait when the audit store cannot take the decision.
_AUDIT_RETRY_AFTER_SECONDS = 2


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    """One runner's request: its platform token, the credential it names, what it wants."""

    token: str = field(repr=False)
    credential: str | None
    request_id: str
    client_address: str | None = None
    # The output format the route will render; the credential's type must render it. A
    # format the type renders as a runner document is answered without calling the backend.
    format: str | None = None
    # A route's own check of the credential, run with every other check, before any backend.
    output: OutputCheck | None = None


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    """A credential issued (or reused) for a request."""

    issue: Issue
    traits: CredentialTraits
    reused: bool

    @property
    def credential(self) -> Credential:
        """The credential it was issued from."""
        return self.issue.credential

    @property
    def issued(self) -> IssuedCredential:
        """What the backend issued."""
        return self.issue.issued

    @property
    def lease_id(self) -> str:
        """The lease the credential was issued under."""
        return self.issue.lease_id


@dataclass(frozen=True, slots=True)
class RunnerDocument:
    """A document the runner's own client turns into a credential; no backend was called."""

    credential: Credential
    # A JSON object, or plain text (a bare token).
    body: dict[str, object] | str = field(repr=False)
    # The expiry of the token the document carries; None when it carries none (settings only).
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RevokedCredentials:
    """What a revocation did: leases revoked at the backend, and leases whose credential can
    only expire (ended all the same: never handed out again). Each as ``{id, credential, type}``.
    """

    revoked: list[dict[str, str]]
    not_revocable: list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One check of a run: what was checked, whether it passed, and why."""

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
class _Run:
    """One request's run: what the checks found so far (for audit and metrics) and its trace."""

    request: ExchangeRequest
    fingerprint: str
    dry_run: bool = False
    started: float = field(default_factory=time.perf_counter)
    steps: list[TraceStep] = field(default_factory=list)
    validated: ValidatedToken | None = None
    identity: Identity | None = None
    organization: Organization | None = None
    credential: Credential | None = None
    # The issue this run made or reused, for its audit event (and a fresh one's lease).
    issue: Issue | None = None
    token_expires_at: float = 0.0

    def check(self, name: str, details: Mapping[str, object] | None = None) -> _Check:
        """Record the check as failed, with the refusal's reason, when its block raises."""
        return _Check(self.steps, name, details)

    def passed(self, name: str, detail: str, data: Mapping[str, object] | None = None) -> None:
        """Record a check that passed."""
        self.steps.append(TraceStep(name, True, detail, data or {}))


class _Check:
    """The block of one check: a BrokerError it raises is recorded as the check's failed step."""

    __slots__ = ("_details", "_name", "_steps")

    def __init__(
        self, steps: list[TraceStep], name: str, details: Mapping[str, object] | None
    ) -> None:
        self._steps = steps
        self._name = name
        self._details = details

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, BrokerError):
            data = {"reason": exc.reason, **(self._details or {})}
            self._steps.append(TraceStep(self._name, False, exc.description, data))


@dataclass(frozen=True, slots=True)
class _Decided:
    """Everything a run established before the backend: what may be issued, and how."""

    validated: ValidatedToken
    identity: Identity
    credential: Credential
    traits: CredentialTraits
    settings: BaseModel
    version: str
    # The platform's job id, or the token's fingerprint: what the lease and the trace name.
    job: str


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
        reuse: ReuseWindow,
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

    async def exchange(self, request: ExchangeRequest) -> ExchangeResult | RunnerDocument:
        """Issue the requested credential, or raise the BrokerError that explains why not.

        A format the credential's type renders as a runner document (google-auth's
        external-account files) is answered with that document instead, and no backend is
        called. Exactly one audit event is committed for the decision before this returns or
        raises; when it cannot be, nothing is issued (503 ``audit_unavailable``).
        """
        run = _Run(request, token_fingerprint(request.token))

        async def issue(decided: _Decided) -> tuple[ExchangeResult | RunnerDocument, str]:
            if request.format is not None and request.format in decided.traits.documents:
                return self._runner_document(run, decided, request.format)
            result = await self._issue(run, decided)
            return result, "reused" if result.reused else "issued"

        async def undo(result: ExchangeResult | RunnerDocument) -> None:
            if isinstance(result, ExchangeResult):
                await self._undo_issue(result)

        return await self._run(run, issue, undo)

    async def explain(self, request: ExchangeRequest) -> DecisionTrace:
        """Run every check of an exchange and report each; stop before the backend call."""
        run = _Run(request, token_fingerprint(request.token), dry_run=True)

        async def stop(decided: _Decided) -> tuple[None, str]:
            return None, "dry_run"

        try:
            await self._run(run, stop)
        except BrokerError as exc:
            if exc.reason == "audit_unavailable":
                raise
            return DecisionTrace(False, run.steps, error=exc, credential=run.credential)
        return DecisionTrace(True, run.steps, credential=run.credential)

    async def revoke_for_job(
        self,
        token: str,
        request_id: str,
        client_address: str | None,
        *,
        lease_id: str | None = None,
    ) -> RevokedCredentials:
        """Revoke the leases of the job the platform token belongs to (or one of them).

        Revocable credentials are revoked at their backend; every lease is marked revoked, so
        none is handed out again. A lease of another job, or none, is a 404.
        """
        request = ExchangeRequest(token, None, request_id, client_address)
        run = _Run(request, token_fingerprint(token))
        try:
            run.validated = validated = await self._validator.validate_platform_token(token)
            run.identity = identity = identify(validated.issuer, validated.claims)
            run.organization, _ = await self._store.policy.find_organization_assignments(
                validated.issuer.name, identity.org, identity.project
            )
            if run.organization is None:
                raise NotFound("lease_not_found", "no lease of this job was found")
            job = self._job(validated, run.fingerprint)
            leases = await self._store.leases.of_job(run.organization.name, job)
            if lease_id is not None:
                leases = [lease for lease in leases if lease.id == lease_id]
                if not leases:
                    raise NotFound("lease_not_found", f"no active lease {lease_id!r} of this job")
        except BrokerError as exc:
            await self._audit(run, "error" if exc.status >= 500 else "denied", exc.reason)
            raise
        return await self._end_leases(leases, by="runner", reason="revoked by the job", run=run)

    async def orphaned(self, result: ExchangeResult, *, request_id: str) -> None:
        """A credential issued for a runner that went away before the answer: end its lease."""
        await self._end_orphan(result.lease_id, result.credential, result.issued, request_id)

    async def _end_orphan(
        self, lease_id: str, credential: Credential, issued: IssuedCredential, request_id: str
    ) -> None:
        # Revoked with what the backend answered (the lease may hold nothing sealed yet).
        try:
            at_backend = await self._revoke_at_backend(credential.type, issued, credential.settings)
        except BrokerError as exc:
            log.error(
                "could not revoke an orphaned credential",
                extra={"type": credential.type, "reason": exc.reason},
            )
            at_backend = False
        lease = await self._store.leases.get(lease_id)
        ended = await self._store.leases.end(
            lease_id,
            state="revoked",
            now=self._now(),
            by="broker",
            reason="the answer never reached the runner",
        )
        if lease is not None and ended:
            run = _Run(ExchangeRequest("", None, request_id), "")
            reason = "orphan_revoked" if at_backend else "orphan_not_revocable"
            await self._audit(run, "success", reason, kind="revocation", lease=lease)

    async def revoke_lease(self, lease: Lease, *, by: str, request_id: str) -> RevokedCredentials:
        """An administrator's revocation of one lease."""
        run = _Run(ExchangeRequest("", None, request_id), "")
        return await self._end_leases([lease], by=by, reason="revoked by an administrator", run=run)

    async def _end_leases(
        self, leases: Sequence[Lease], *, by: str, reason: str, run: _Run
    ) -> RevokedCredentials:
        revoked: list[dict[str, str]] = []
        not_revocable: list[dict[str, str]] = []
        for lease in leases:
            sealed = self._reuse.unsealed(lease)
            at_backend = sealed is not None and await self._revoke_at_backend(
                lease.credential_type, sealed.issued, sealed.settings
            )
            ended = await self._store.leases.end(
                lease.id, state="revoked", now=self._now(), by=by, reason=reason
            )
            if not ended:
                continue
            named = {"id": lease.id, "credential": lease.credential, "type": lease.credential_type}
            (revoked if at_backend else not_revocable).append(named)
            await self._audit(
                run,
                "success",
                "revoked" if at_backend else "revoked_not_revocable",
                kind="revocation",
                lease=lease,
            )
        return RevokedCredentials(revoked, not_revocable)

    async def _run(
        self,
        run: _Run,
        finish: Callable[[_Decided], Awaitable[tuple[_T, str]]],
        undo: Callable[[_T], Awaitable[None]] | None = None,
    ) -> _T:
        """Decide, finish (issue, or stop short of it), then audit and count the decision."""
        try:
            decided = await self._decide(run)
            result, reason = await finish(decided)
        except BrokerError as exc:
            outcome: Outcome = "error" if exc.status >= 500 else "denied"
            await self._audit(run, outcome, f"dry_run:{exc.reason}" if run.dry_run else exc.reason)
            exc.logged = True  # by the decision's own line
            self._count(run, outcome)
            raise
        try:
            await self._audit(run, "success", reason)
        except TemporarilyUnavailable:
            if undo is not None:
                await undo(result)
            self._count(run, "error")
            raise
        self._count(run, "success")
        return result

    async def _decide(self, run: _Run) -> _Decided:
        """Every check before the backend, in order; each adds a step to the run's trace."""
        request = run.request
        with run.check("token"):
            run.validated = validated = await self._validator.validate_platform_token(request.token)
        issuer = validated.issuer
        run.passed(
            "token",
            f"signature, issuer, audience, lifetime and required claims valid "
            f"for issuer {issuer.name!r}",
            {"issuer": issuer.name, "kid": validated.header.get("kid")},
        )
        with run.check("identity"):
            run.identity = identity = identify(issuer, validated.claims)
        job = self._job(validated, run.fingerprint)
        run.passed(
            "identity",
            f"{issuer.profile} profile read the claims",
            {
                "org": identity.org,
                "project": identity.project,
                "environment": identity.environment,
                "subject": identity.subject,
                "job": job,
                **({"details": dict(identity.details)} if identity.details else {}),
            },
        )
        with run.check("rate_limit"):
            await self._check_rate(identity)
        with run.check("organization"):
            try:
                organization, assigned = await self._store.policy.find_organization_assignments(
                    issuer.name, identity.org, identity.project
                )
            except Exception as exc:
                # A connection the database dropped (restart, failover) is weather: retry.
                log.warning("policy lookup failed", extra={"exception": type(exc).__name__})
                raise TemporarilyUnavailable(
                    "store_unavailable",
                    "the broker cannot reach its store right now; nothing was issued, retry later",
                    retry_after=1,
                ) from None
            if organization is None:
                raise AccessDenied(
                    "organization_unknown",
                    f"no organization is registered for issuer {issuer.name!r} "
                    f"and platform organization {identity.org!r}",
                )
        run.organization = organization
        run.passed("organization", f"organization {organization.name!r}")
        with run.check("assignment", {"assigned": [c.name for c in assigned]}):
            run.credential = credential = choose_credential(
                assigned,
                request.credential,
                organization=organization.name,
                project=identity.project,
            )
        run.passed(
            "assignment",
            f"credential {credential.name!r} ({credential.type}) is assigned to "
            f"project {identity.project!r}",
        )
        bound = _bound_claims_step(credential, identity)
        with run.check("bound_claims", bound.data):
            check_bound_claims(credential, identity.claims)
        run.passed("bound_claims", bound.detail, bound.data)
        with run.check("credential"):
            traits = self._traits(credential)
            _check_token_mode(credential, traits)
            settings = self._settings(credential)
        run.passed(
            "credential",
            f"credential {credential.name!r} can be issued with token = {credential.token!r}",
        )
        if request.format is not None:
            with run.check("output"):
                _check_format(credential, traits, request.format)
            run.passed(
                "output",
                f"credential {credential.name!r} ({credential.type}) renders {request.format}",
            )
        if request.output is not None:
            with run.check("output"):
                detail = request.output(credential, traits)
            run.passed("output", detail)
        version = self._version(credential)
        if issuer.replay == "once":
            with run.check("replay"):
                await self._check_replay(run, ReuseKey(run.fingerprint, credential.id, version))
            run.passed("replay", "the token's first use, or a retry of it inside the reuse window")
        return _Decided(validated, identity, credential, traits, settings, version, job)

    async def _check_replay(self, run: _Run, key: ReuseKey) -> None:
        """A replay-once token serves one (token, credential) request and its retries."""
        assert run.validated is not None
        issuer = run.validated.issuer
        claims = run.validated.claims
        jti = claims.get("jti")
        token_key = f"{issuer.name}|{jti if isinstance(jti, str) and jti else run.fingerprint}"
        exp = claims.get("exp")
        until = (float(exp) if isinstance(exp, int | float) else 0.0) + issuer.leeway_seconds
        try:
            first = await self._store.leases.first_use(
                token_key[:512], key.slot, _at(until), record=not run.dry_run
            )
            holder = None if first != key.slot else await self._store.leases.by_slot(key.slot)
        except Exception as exc:
            log.error("replay store unavailable", extra={"exception": type(exc).__name__})
            raise TemporarilyUnavailable(
                "replay_unavailable",
                "the broker cannot check this token's earlier uses right now; retry later",
                retry_after=_AUDIT_RETRY_AFTER_SECONDS,
            ) from None
        if first is None:
            return
        if first != key.slot:
            raise InvalidToken("token_replayed", "this token was already used for another request")
        # The same request again: a retry while its issue runs or inside its reuse window.
        if holder is None or holder.state == "pending":
            return
        if holder.reuse_until is not None and holder.reuse_until.timestamp() > self._clock.now():
            return
        raise InvalidToken(
            "token_replayed", "this token was already used; only retries within seconds are served"
        )

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

    async def _issue(self, run: _Run, decided: _Decided) -> ExchangeResult:
        credential = decided.credential
        key = ReuseKey(run.fingerprint, credential.id, decided.version)
        token_exp = decided.validated.claims.get("exp")
        run.token_expires_at = float(token_exp) if isinstance(token_exp, int | float) else 0.0
        assert run.organization is not None
        facts = LeaseFacts(
            organization=run.organization.name,
            project=decided.identity.project,
            issuer=decided.validated.issuer.name,
            subject=decided.identity.subject,
            job=decided.job,
            request_id=run.request.request_id,
            revocable=decided.traits.revocable,
        )

        async def call_backend(lease_id: str) -> IssuedCredential:
            backend = self._backend(credential)
            outbound = self._outbound(run, decided, lease_id).value
            backend_started = time.perf_counter()
            try:
                issued = await backend.exchange(decided.identity, outbound, decided.settings)
            except BrokerError:
                raise
            except Exception as exc:
                # A backend's own bug or an answer its client library could not parse: the
                # type's name, never the exception's text (it may quote the reply).
                log.error(
                    "backend failed unexpectedly",
                    extra={"type": credential.type, "exception": type(exc).__name__},
                )
                raise UpstreamError(
                    "backend_failed",
                    f"the {credential.type} backend could not complete the exchange; "
                    "see the broker log",
                ) from None
            finally:
                self._metrics.child(self._metrics.backend_seconds, credential.type).observe(
                    time.perf_counter() - backend_started
                )
            return issued

        async def orphaned(lease_id: str, issued: IssuedCredential) -> None:
            await self._end_orphan(lease_id, credential, issued, run.request.request_id)

        issue, reused = await self._reuse.get_or_issue(
            key, credential, facts, call_backend, orphaned
        )
        run.issue = issue
        if reused:
            self._metrics.issued_cache_hits.inc()
        else:
            self._metrics.issued_cache_misses.inc()
        return ExchangeResult(issue, decided.traits, reused)

    def _runner_document(
        self, run: _Run, decided: _Decided, fmt: str
    ) -> tuple[RunnerDocument, str]:
        backend = self._backend(decided.credential)
        assert isinstance(backend, RunnerDocumentProvider)
        outbound = self._outbound(run, decided) if decided.traits.documents[fmt] else None
        body = backend.runner_document(
            fmt,
            credential=decided.credential.name,
            settings=decided.settings,
            outbound=outbound,
            broker_url=self._issuer_url,
        )
        # Says what left the broker: the settings alone, or also a token for the backend.
        reason = "outbound_token" if outbound is not None else "resolved"
        expires_at = outbound.expires_at if outbound is not None else None
        return RunnerDocument(decided.credential, body, expires_at), reason

    async def _undo_issue(self, result: ExchangeResult) -> None:
        """The decision could not be audited: what it issued is revoked and never handed out."""
        if result.reused:
            # Handed out, and audited, by the request it was issued for.
            return
        await asyncio.shield(self._reuse.let_go(result.lease_id))
        try:
            await self._revoke_at_backend(
                result.credential.type, result.issued, result.credential.settings
            )
        except BrokerError as exc:
            log.error(
                "could not revoke a credential whose issue was not audited",
                extra={"type": result.credential.type, "reason": exc.reason},
            )

    async def _revoke_at_backend(
        self, type_name: str, issued: IssuedCredential, settings: Mapping[str, object]
    ) -> bool:
        """Revoke at the backend where its type allows it; False when it can only expire."""
        try:
            backend = self._backends.get(type_name)
            model = backend_class(type_name).settings_model
        except (UnknownCredentialType, BackendUnavailable):
            return False
        if not isinstance(backend, RevocableBackend):
            return False
        try:
            parsed = model.model_validate(dict(settings))
        except ValidationError:
            return False
        await backend.revoke(issued, parsed)
        return True

    def _job(self, validated: ValidatedToken, fingerprint: str) -> str:
        # The platform's own job id where its tokens carry one; otherwise the token's.
        return job_id(validated.issuer, validated.claims) or fingerprint

    def _backend(self, credential: Credential) -> Backend:
        try:
            return self._backends.get(credential.type)
        except (UnknownCredentialType, BackendUnavailable) as exc:
            raise _unservable(credential, exc) from None

    def _traits(self, credential: Credential) -> CredentialTraits:
        try:
            return traits_of(backend_class(credential.type))
        except (UnknownCredentialType, BackendUnavailable) as exc:
            raise _unservable(credential, exc) from None

    def _settings(self, credential: Credential) -> BaseModel:
        # Settings were validated when stored; parse once per credential version, not per call.
        cache_key = (credential.id, self._version(credential))
        parsed = self._settings_cache.get(cache_key)
        if parsed is None:
            model = backend_class(credential.type).settings_model
            try:
                parsed = model.model_validate(dict(credential.settings))
            except ValidationError:
                raise AccessDenied(
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

    def _outbound(self, run: _Run, decided: _Decided, lease_id: str | None = None) -> OutboundToken:
        """The token the backend is sent: the platform's own, or one the broker mints (naming
        the credential, the job and the lease it is minted under)."""
        credential = decided.credential
        if credential.token == "passthrough":
            exp = decided.validated.claims.get("exp")
            seconds = float(exp) if isinstance(exp, int | float) else self._clock.now()
            return OutboundToken(run.request.token, datetime.fromtimestamp(seconds, UTC))
        # The token-mode check ran in _decide: a minted credential has its audience (its own,
        # or its type's default).
        audience = cast(str, mint_audience(credential.audience, decided.traits))
        backend = self._backend(credential)
        # mint_token sets exp the same way: whole seconds from the clock plus the lifetime.
        expires = int(self._clock.now()) + self._signing.token_lifetime_seconds
        job = decided.job
        context = {"credential": credential.name, "job": job}
        if lease_id is not None:
            context["lease"] = lease_id
        value = mint_for_identity(
            self._keyring,
            decided.identity,
            issuer_url=self._issuer_url,
            audience=audience,
            lifetime_seconds=self._signing.token_lifetime_seconds,
            clock=self._clock,
            extra_claims=dict(backend.outbound_claims(decided.identity, job))
            if isinstance(backend, OutboundClaimsProvider)
            else None,
            context=context,
        )
        return OutboundToken(value, datetime.fromtimestamp(expires, UTC))

    async def _audit(
        self,
        run: _Run,
        outcome: Outcome,
        reason: str,
        *,
        kind: str = "exchange",
        lease: Lease | None = None,
    ) -> None:
        """Commit the run's one audit event; when that fails, the decision is a 503.

        A fresh issue's event commits with its lease, in one transaction: no lease is active
        without the event of its issue, and no success is recorded without its lease.
        """
        identity = run.identity
        request = run.request
        issue = run.issue if outcome == "success" else None
        event = AuditEvent(
            time=datetime.fromtimestamp(self._clock.now(), UTC),
            request_id=request.request_id,
            outcome=outcome,
            reason=reason,
            latency_ms=round((time.perf_counter() - run.started) * 1000, 3),
            issuer=run.validated.issuer.name if run.validated else None,
            organization=(
                lease.organization if lease else run.organization.name if run.organization else None
            ),
            project=lease.project if lease else identity.project if identity else None,
            subject=identity.subject if identity else None,
            credential=(
                lease.credential
                if lease
                else run.credential.name
                if run.credential
                else request.credential
            ),
            credential_type=(
                lease.credential_type if lease else run.credential.type if run.credential else None
            ),
            token_fingerprint=run.fingerprint or None,
            client_address=request.client_address,
            kind=kind,
            lease_id=lease.id if lease else issue.lease_id if issue else None,
        )
        try:
            if issue is not None and issue.fresh:
                await self._reuse.activate(issue, run.token_expires_at, event)
            else:
                await self._store.audit.record(event)
        except Exception as exc:
            log.error(
                "audit event could not be written; the decision issues nothing",
                extra={"exception": type(exc).__name__, "reason": reason},
            )
            raise TemporarilyUnavailable(
                "audit_unavailable",
                "the broker cannot record its decision right now; nothing was issued, retry later",
                retry_after=_AUDIT_RETRY_AFTER_SECONDS,
            ) from None
        # The exchange's one INFO line (backends log their successes at DEBUG). The text format
        # shows only the message, so the message names the decision; JSON has the extra too.
        # A retry answered from the reuse window issued nothing, and a retry storm would flood
        # the log when the broker is busiest: DEBUG. Its audit event records it either way.
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
                "token_fingerprint": run.fingerprint,
                "lease_id": event.lease_id,
            },
        )

    def _now(self) -> datetime:
        return _at(self._clock.now())

    def _count(self, run: _Run, outcome: str) -> None:
        credential_type = run.credential.type if run.credential else "unknown"
        metrics = self._metrics
        metrics.child(metrics.exchanges, credential_type, outcome).inc()
        metrics.child(metrics.exchange_seconds, credential_type).observe(
            time.perf_counter() - run.started
        )


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _check_token_mode(credential: Credential, traits: CredentialTraits) -> None:
    problems = token_mode_problems(credential.token, credential.audience, traits)
    if problems:
        raise AccessDenied(
            "credential_misconfigured",
            f"credential {credential.name!r} cannot be issued as configured: "
            + "; ".join(f"{name} {message}" for name, message in problems),
        )


def _check_format(credential: Credential, traits: CredentialTraits, fmt: str) -> None:
    if fmt not in traits.formats:
        raise InvalidRequest(
            "format_not_supported",
            f"credential {credential.name!r} ({credential.type}) cannot be rendered as {fmt}; "
            f"it renders: {', '.join(sorted(traits.formats))}",
        )


def _unservable(credential: Credential, exc: Exception) -> UpstreamError:
    log.error("credential type cannot be served", extra={"type": credential.type})
    return UpstreamError("backend_unavailable", f"credential type {credential.type!r}: {exc}")


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
