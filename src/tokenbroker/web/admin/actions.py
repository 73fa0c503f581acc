"""What an admin may do, for the admin API and the console alike: scoped, audited, logged.

``AdminActions`` stands between a request's admin (an :class:`AdminPrincipal`) and the store.
An organization outside the admin's scope is reported exactly as one that does not exist
(404, the same words), so an org-scoped admin learns no other organization's names. Every
change is written to the audit trail (``kind = "admin"``, the admin's name as ``actor``, what
changed as ``detail``: the object, its name and the names of the fields given, never a value)
and logged at INFO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar, cast

from aiohttp import web

from tokenbroker.clock import Clock
from tokenbroker.config.models import Settings
from tokenbroker.errors import NotFound
from tokenbroker.exchange.service import ExchangeService, RevokedCredentials
from tokenbroker.issuer.keyring import KeyRing
from tokenbroker.issuer.keys import SigningKey
from tokenbroker.logs import request_id_var
from tokenbroker.policy.models import (
    AuditEvent,
    BoundClaims,
    Credential,
    CredentialAssignment,
    Organization,
    Outcome,
)
from tokenbroker.store import UNSET, Store, Unset
from tokenbroker.store.leases import Lease
from tokenbroker.store.validation import warn_on_settings
from tokenbroker.web import keys
from tokenbroker.web.admin.auth import ADMIN_PRINCIPAL, AdminPrincipal
from tokenbroker.web.admin.schemas import AuditQuery, LeaseQuery, merge_patch, unprocessable

log = logging.getLogger(__name__)

_Row = TypeVar("_Row")


def organization_not_found(name: str) -> NotFound:
    """The 404 of an unknown organization, also given for one outside the admin's scope."""
    return NotFound("organization_not_found", f"no organization named {name!r}")


def _not_found(what: str) -> NotFound:
    return NotFound("not_found", f"no {what} here")


@dataclass(frozen=True, slots=True)
class AuditPage:
    """A page of audit events, newest first, and the ``before`` of the next page (if any)."""

    events: list[AuditEvent]
    next: int | None


@dataclass(frozen=True, slots=True)
class LeasePage:
    """A page of leases, newest first, and the ``before`` of the next page (if any)."""

    leases: list[Lease]
    next: str | None


@dataclass(frozen=True, slots=True)
class CredentialChange:
    """A credential's new values; ``UNSET`` keeps what is there (settings are merged)."""

    token: str | Unset = UNSET
    audience: str | Unset | None = UNSET
    settings: Mapping[str, object] | None = None
    bound_claims: Mapping[str, object] | None = None


class AdminActions:
    """The admin operations of one request, done as ``principal`` (see the module doc)."""

    def __init__(
        self,
        *,
        principal: AdminPrincipal,
        store: Store,
        settings: Settings,
        clock: Clock,
        keyring: KeyRing | None = None,
        service: ExchangeService | None = None,
        client_address: str | None = None,
    ) -> None:
        self.principal = principal
        self._store = store
        self._settings = settings
        self._clock = clock
        self._keyring = keyring
        self._service = service
        self._client_address = client_address
        self._started = time.perf_counter()

    # -- scope ------------------------------------------------------------------------------

    def require_global(self, what: str) -> None:
        """404 for an org-scoped admin: broker-wide things (signing keys) are not theirs."""
        if not self.principal.is_global:
            raise _not_found(what)

    def _listed(self, organization: str | None) -> list[str] | None:
        """The organizations a listing may show (None: all); a named one must be in scope."""
        if organization is not None:
            self._require_scope(organization)
        scope = self.principal.organizations
        return None if scope is None else sorted(scope)

    def _require_scope(self, organization: str) -> None:
        if not self.principal.may_see(organization):
            raise organization_not_found(organization)

    # -- organizations ----------------------------------------------------------------------

    async def organizations(self) -> list[Organization]:
        """The organizations this admin may see, by name."""
        orgs = await self._store.policy.list_organizations()
        return [o for o in orgs if self.principal.may_see(o.name)]

    async def organization(self, name: str) -> Organization:
        """One organization (404 when unknown or outside the scope)."""
        self._require_scope(name)
        return await self._store.policy.get_organization(name)

    def issuer_names(self) -> list[str]:
        """The configured issuers an organization can sign in with."""
        return [i.name for i in self._settings.issuers]

    def _check_issuer(self, issuer: str) -> None:
        # The store cannot know which issuers are configured; an organization of an issuer the
        # broker does not trust could never sign in, so it is refused here.
        names = self.issuer_names()
        if issuer not in names:
            configured = ", ".join(names) or "none"
            raise unprocessable([("issuer", f"no issuer of that name; configured: {configured}")])

    async def create_organization(
        self, name: str, issuer: str, platform_org_id: str
    ) -> Organization:
        """Create an organization (an org-scoped admin only one named in its scope)."""
        self._require_scope(name)
        self._check_issuer(issuer)
        org = await self._store.policy.create_organization(name, issuer, platform_org_id)
        await self._audit(
            "organization_created",
            {"object": "organization", "name": name, "fields": ["issuer", "platform_org_id"]},
            organization=name,
        )
        return org

    async def update_organization(
        self, name: str, *, issuer: str | None, platform_org_id: str | None
    ) -> Organization:
        """Change an organization's issuer or platform org id."""
        self._require_scope(name)
        if issuer is not None:
            self._check_issuer(issuer)
        org = await self._store.policy.update_organization(
            name, issuer=issuer, platform_org_id=platform_org_id
        )
        fields = [f for f, v in (("issuer", issuer), ("platform_org_id", platform_org_id)) if v]
        await self._audit(
            "organization_updated",
            {"object": "organization", "name": name, "fields": fields},
            organization=name,
        )
        return org

    async def delete_organization(self, name: str) -> None:
        """Delete an organization with its credentials and assignments."""
        self._require_scope(name)
        await self._store.policy.delete_organization(name)
        await self._audit(
            "organization_deleted", {"object": "organization", "name": name}, organization=name
        )

    # -- credentials ------------------------------------------------------------------------

    async def credentials(self, organization: str) -> list[Credential]:
        """The credentials of an organization."""
        self._require_scope(organization)
        return await self._store.policy.list_credentials(organization)

    async def credential(self, organization: str, name: str) -> Credential:
        """One credential."""
        self._require_scope(organization)
        return await self._store.policy.get_credential(organization, name)

    async def create_credential(
        self,
        organization: str,
        name: str,
        type_name: str,
        *,
        token: str,
        audience: str | None,
        settings: Mapping[str, object],
        bound_claims: Mapping[str, object],
    ) -> Credential:
        """Create a typed credential; its settings must validate against the type's schema."""
        self._require_scope(organization)
        cred = await self._store.policy.create_credential(
            organization,
            name,
            type_name,
            token=token,
            audience=audience,
            settings=settings,
            # The store checks every value's shape and names the key of a bad one.
            bound_claims=cast(BoundClaims, bound_claims),
        )
        warn_on_settings(
            self._store.credential_types, organization, cred.name, cred.type, cred.settings
        )
        fields = ["token"] + (["audience"] if audience is not None else [])
        await self._audit(
            "credential_created",
            {
                "object": "credential",
                "name": name,
                "type": type_name,
                "fields": fields
                + [f"settings.{k}" for k in sorted(settings)]
                + [f"bound_claims.{k}" for k in sorted(bound_claims)],
            },
            organization=organization,
            credential=cred,
        )
        return cred

    async def update_credential(
        self, organization: str, name: str, change: CredentialChange
    ) -> Credential:
        """Change a credential: ``settings`` and ``bound_claims`` merge-patched (RFC 7396)."""
        self._require_scope(organization)
        policy = self._store.policy
        current = await policy.get_credential(organization, name)
        settings: Mapping[str, object] | Unset = UNSET
        if change.settings is not None:
            settings = merge_patch(current.settings, change.settings)
        bound_claims: BoundClaims | Unset = UNSET
        if change.bound_claims is not None:
            # The store checks every value's shape and names the key of a bad one.
            bound_claims = cast(BoundClaims, merge_patch(current.bound_claims, change.bound_claims))
        cred = await policy.update_credential(
            organization,
            name,
            token=change.token,
            audience=change.audience,
            settings=settings,
            bound_claims=bound_claims,
        )
        warn_on_settings(
            self._store.credential_types, organization, cred.name, cred.type, cred.settings
        )
        fields = [f for f in ("token", "audience") if getattr(change, f) is not UNSET]
        fields += [f"settings.{k}" for k in sorted(change.settings or {})]
        fields += [f"bound_claims.{k}" for k in sorted(change.bound_claims or {})]
        await self._audit(
            "credential_updated",
            {"object": "credential", "name": name, "type": cred.type, "fields": fields},
            organization=organization,
            credential=cred,
        )
        return cred

    async def delete_credential(self, organization: str, name: str) -> None:
        """Delete a credential and its assignments."""
        self._require_scope(organization)
        cred = await self._store.policy.get_credential(organization, name)
        await self._store.policy.delete_credential(organization, name)
        await self._audit(
            "credential_deleted",
            {"object": "credential", "name": name, "type": cred.type},
            organization=organization,
            credential=cred,
        )

    # -- assignments ------------------------------------------------------------------------

    async def project_credentials(
        self, organization: str, project: str
    ) -> tuple[Organization, list[Credential]]:
        """The organization and the credentials assigned to one of its projects."""
        org = await self.organization(organization)
        return org, await self._store.policy.assigned_credentials(org.id, project)

    async def assignments(
        self, organization: str, project: str | None = None
    ) -> list[CredentialAssignment]:
        """Every assignment of an organization, or of one of its projects."""
        self._require_scope(organization)
        return await self._store.policy.list_assignments(organization, project)

    async def assign(
        self, organization: str, project: str, credential: str
    ) -> CredentialAssignment:
        """Assign a credential to a project (idempotent; audited each time it is asked)."""
        self._require_scope(organization)
        assignment = await self._store.policy.assign(organization, project, credential)
        await self._audit_assignment("credential_assigned", organization, project, credential)
        return assignment

    async def _audit_assignment(
        self, action: str, organization: str, project: str, credential: str
    ) -> None:
        await self._audit(
            action,
            {"object": "assignment", "name": credential, "project": project},
            organization=organization,
            project=project,
            credential_name=credential,
        )

    async def unassign(self, organization: str, project: str, credential: str) -> None:
        """Take a credential away from a project."""
        self._require_scope(organization)
        await self._store.policy.unassign(organization, project, credential)
        await self._audit_assignment("credential_unassigned", organization, project, credential)

    # -- audit ------------------------------------------------------------------------------

    async def audit_events(self, query: AuditQuery) -> AuditPage:
        """A page of the audit trail this admin may see, newest first."""
        # One more than asked tells whether another page exists without a second query.
        events = await self._store.audit.events(
            organization=query.organization,
            organizations=self._listed(query.organization),
            project=query.project,
            credential=query.credential,
            outcome=query.outcome,
            since=query.since,
            until=query.until,
            limit=query.limit + 1,
            before_id=query.before,
        )
        page, last = _first_page(events, query.limit)
        return AuditPage(page, last.id if last is not None else None)

    async def audit_event(self, event_id: int) -> AuditEvent:
        """One audit event this admin may see, by id (404 otherwise)."""
        found = await self._store.audit.events(
            organizations=self._listed(None),
            before_id=event_id + 1,
            limit=1,
        )
        if not found or found[0].id != event_id:
            raise NotFound("audit_event_not_found", f"no audit event {event_id}")
        return found[0]

    # -- leases -----------------------------------------------------------------------------

    async def leases(self, query: LeaseQuery) -> LeasePage:
        """A page of the leases this admin may see, newest first."""
        found = await self._store.leases.listing(
            filters={
                "organization": query.organization,
                "project": query.project,
                "credential": query.credential,
                "state": query.state,
                "job": query.job,
            },
            organizations=self._listed(query.organization),
            limit=query.limit + 1,
            before=query.before,
        )
        page, last = _first_page(found, query.limit)
        return LeasePage(page, last.id if last is not None else None)

    async def revoke_lease(self, lease_id: str) -> RevokedCredentials:
        """Revoke an active lease at its backend where its type allows it."""
        lease = await self._store.leases.get(lease_id)
        if (
            lease is None
            or lease.state not in ("active", "pending")
            or not self.principal.may_see(lease.organization)
        ):
            raise NotFound("lease_not_found", "no active lease of that id")
        if self._service is None:
            raise NotFound("lease_not_found", "no active lease of that id")
        result = await self._service.revoke_lease(
            lease, by=self.principal.name, request_id=request_id_var.get()
        )
        await self._audit(
            "lease_revoked",
            {
                "object": "lease",
                "name": lease.id,
                "at_backend": any(r["id"] == lease.id for r in result.revoked),
            },
            organization=lease.organization,
            project=lease.project,
            credential_name=lease.credential,
        )
        return result

    # -- signing keys -----------------------------------------------------------------------

    def signing_keys(self) -> Sequence[SigningKey]:
        """The broker's signing keys, newest first (global admins only)."""
        self.require_global("signing keys")
        return sorted(self._ring().keys, key=lambda k: k.created_at, reverse=True)

    async def rotate_signing_key(self) -> tuple[SigningKey, SigningKey]:
        """Make a new active key; the old one stays published (global admins only)."""
        self.require_global("signing keys")
        ring = self._ring()
        previous = ring.active
        active = await ring.rotate()
        await self._audit(
            "signing_key_rotated",
            {"object": "signing_key", "name": active.kid, "retiring": previous.kid},
        )
        return previous, active

    def _ring(self) -> KeyRing:
        if self._keyring is None:
            raise _not_found("signing keys")
        return self._keyring

    # -- the audit of a change --------------------------------------------------------------

    async def _audit(
        self,
        reason: str,
        detail: Mapping[str, object],
        *,
        organization: str | None = None,
        project: str | None = None,
        credential: Credential | None = None,
        credential_name: str | None = None,
    ) -> None:
        await record_admin_event(
            self._store,
            self._clock,
            actor=self.principal.name,
            reason=reason,
            detail=detail,
            client_address=self._client_address,
            latency_ms=(time.perf_counter() - self._started) * 1000.0,
            organization=organization,
            project=project,
            credential=credential.name if credential is not None else credential_name,
            credential_type=credential.type if credential is not None else None,
        )


async def record_admin_event(
    store: Store,
    clock: Clock,
    *,
    actor: str | None,
    reason: str,
    detail: Mapping[str, object],
    client_address: str | None,
    outcome: Outcome = "success",
    latency_ms: float = 0.0,
    organization: str | None = None,
    project: str | None = None,
    credential: str | None = None,
    credential_type: str | None = None,
) -> None:
    """Audit one admin event (``kind = "admin"``) and log it at INFO; never a value changed."""
    event = AuditEvent(
        time=datetime.fromtimestamp(clock.now(), UTC),
        request_id=request_id_var.get(),
        outcome=outcome,
        reason=reason,
        latency_ms=latency_ms,
        organization=organization,
        project=project,
        credential=credential,
        credential_type=credential_type,
        client_address=client_address,
        kind="admin",
        actor=actor,
        detail=dict(detail),
    )
    log.info(
        "admin %s by %s",
        reason,
        actor or "an unknown admin",
        extra={"actor": actor, "organization": organization, "detail": dict(detail)},
    )
    await store.audit.record(event)


def admin_actions(request: web.Request, principal: AdminPrincipal | None = None) -> AdminActions:
    """The admin actions of a request, done as its authenticated admin (or ``principal``)."""
    app = request.config_dict
    return AdminActions(
        principal=principal if principal is not None else request[ADMIN_PRINCIPAL],
        store=app[keys.STORE],
        settings=app[keys.SETTINGS],
        clock=app[keys.CLOCK],
        keyring=app.get(keys.KEYRING),
        service=app.get(keys.SERVICE),
        client_address=request.remote,
    )


def _first_page(rows: list[_Row], limit: int) -> tuple[list[_Row], _Row | None]:
    """The first ``limit`` of ``limit + 1`` rows fetched, and its last row when more follow."""
    page = rows[:limit]
    return page, page[-1] if len(rows) > limit and page else None
