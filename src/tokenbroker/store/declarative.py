"""GitOps: ``[[organizations]]``, ``[[credentials]]`` and ``[[assignments]]`` applied to the store.

Applying creates what is missing and updates what differs, in one transaction, so applying the
same config twice changes nothing. Entries absent from the TOML are removed only when
``store.prune_declarative`` says the TOML owns the whole store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TypeVar

from tokenbroker.config.models import CredentialConfig, Settings
from tokenbroker.errors import BrokerError, ConfigError, Conflict, NotFound
from tokenbroker.policy.models import Credential
from tokenbroker.store import validation as check
from tokenbroker.store.lifecycle import Store
from tokenbroker.store.policy import Policy

_T = TypeVar("_T")

# Instances starting together may race to create the same rows; the loser retries and then
# finds them in place.
_ATTEMPTS = 3


async def apply_declarative(store: Store, settings: Settings) -> None:
    """Make the store hold what the config declares; ConfigError lines name each bad entry."""
    clean_settings = _checked_credential_settings(
        store.credential_types, settings.credentials, settings.security.allow_private_backends
    )
    for attempt in range(_ATTEMPTS):
        try:
            async with store.transaction() as unit:
                await _apply(unit.policy, settings, clean_settings)
            return
        except _EntryError as exc:
            if isinstance(exc.error, Conflict) and attempt + 1 < _ATTEMPTS:
                continue
            raise ConfigError(exc.lines()) from None


class _EntryError(Exception):
    """A store error while applying one config entry, with where that entry is."""

    def __init__(self, where: str, error: BrokerError) -> None:
        super().__init__(where)
        self.where = where
        self.error = error

    def lines(self) -> list[str]:
        fields = self.error.details.get("fields")
        if isinstance(fields, list) and fields:
            return [f"{self.where}.{f['field']}: {f['message']}" for f in fields]
        return [f"{self.where}: {self.error.description}"]


def _checked_credential_settings(
    types: check.CredentialTypes, entries: list[CredentialConfig], allow_private_backends: bool
) -> list[dict[str, object]]:
    # Every problem of every credential at once, before the store is touched.
    lines: list[str] = []
    cleaned: list[dict[str, object]] = []
    for index, entry in enumerate(entries):
        problems = check.Problems()
        check.check_token_mode(problems, types, entry.type, entry.token, entry.audience)
        check.check_bound_claims(problems, entry.bound_claims)
        cleaned.append(
            check.check_settings(
                problems,
                types,
                entry.type,
                entry.settings,
                allow_private_backends=allow_private_backends,
            )
        )
        lines.extend(
            f"credentials[{index}].{item['field']}: {item['message']}" for item in problems.items
        )
    if lines:
        raise ConfigError(lines)
    for entry, clean in zip(entries, cleaned, strict=True):
        check.warn_on_settings(types, entry.organization, entry.name, entry.type, clean)
    return cleaned


async def _apply(
    policy: Policy, settings: Settings, clean_settings: list[dict[str, object]]
) -> None:
    for index, org in enumerate(settings.organizations):
        where = f"organizations[{index}]"
        try:
            current = await policy.get_organization(org.name)
        except NotFound:
            await _step(
                where, policy.create_organization(org.name, org.issuer, org.platform_org_id)
            )
            continue
        if (current.issuer, current.platform_org_id) != (org.issuer, org.platform_org_id):
            await _step(
                where,
                policy.update_organization(
                    org.name, issuer=org.issuer, platform_org_id=org.platform_org_id
                ),
            )

    existing: dict[str, dict[str, Credential]] = {}
    for org in settings.organizations:
        existing[org.name] = {c.name: c for c in await policy.list_credentials(org.name)}
    for index, (entry, clean) in enumerate(zip(settings.credentials, clean_settings, strict=True)):
        where = f"credentials[{index}]"
        current_credential = existing[entry.organization].get(entry.name)
        if current_credential is None:
            await _step(
                where,
                policy.create_credential(
                    entry.organization,
                    entry.name,
                    entry.type,
                    token=entry.token,
                    audience=entry.audience,
                    settings=entry.settings,
                    bound_claims=entry.bound_claims,
                ),
            )
        elif _differs(current_credential, entry, clean):
            await _step(
                where,
                policy.update_credential(
                    entry.organization,
                    entry.name,
                    type=entry.type,
                    token=entry.token,
                    audience=entry.audience,
                    settings=entry.settings,
                    bound_claims=entry.bound_claims,
                ),
            )

    for index, assignment in enumerate(settings.assignments):
        pairs = [(assignment.project, name) for name in assignment.credentials]
        await _step(f"assignments[{index}]", policy.assign_many(assignment.organization, pairs))

    if settings.store.prune_declarative:
        await _prune(policy, settings)


async def _prune(policy: Policy, settings: Settings) -> None:
    organizations = {org.name for org in settings.organizations}
    declared_credentials = {(c.organization, c.name) for c in settings.credentials}
    declared_assignments = {
        (a.organization, a.project, name) for a in settings.assignments for name in a.credentials
    }
    for org in await policy.list_organizations():
        if org.name not in organizations:
            await policy.delete_organization(org.name)
            continue
        for assignment in await policy.list_assignments(org.name):
            key = (org.name, assignment.project, assignment.credential)
            if key not in declared_assignments:
                await policy.unassign(org.name, assignment.project, assignment.credential)
        for credential in await policy.list_credentials(org.name):
            if (org.name, credential.name) not in declared_credentials:
                await policy.delete_credential(org.name, credential.name)


def _differs(current: Credential, entry: CredentialConfig, clean: Mapping[str, object]) -> bool:
    return (
        current.type != entry.type
        or current.token != entry.token
        or current.audience != entry.audience
        or dict(current.settings) != dict(clean)
        or dict(current.bound_claims) != dict(entry.bound_claims)
    )


async def _step(where: str, operation: Awaitable[_T]) -> _T:
    try:
        return await operation
    except BrokerError as exc:
        raise _EntryError(where, exc) from None
