"""How domain objects appear in admin API responses: JSON, never anything sensitive."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import BaseModel

from tokenbroker.backends import registry
from tokenbroker.policy.models import AuditEvent, Credential, CredentialAssignment, Organization


def sensitive_fields(model: type[BaseModel]) -> frozenset[str]:
    """Names of settings fields the schema marks ``json_schema_extra={"sensitive": True}``."""
    names = set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, Mapping) and extra.get("sensitive") is True:
            names.add(name)
    return frozenset(names)


def public_settings(type_name: str, settings: Mapping[str, object]) -> dict[str, object]:
    """A credential's settings without the fields its type marks sensitive.

    When the type's schema cannot be loaded nothing can be judged safe, so nothing is shown.
    """
    try:
        model = registry.settings_model_for(type_name)
    except (registry.UnknownCredentialType, registry.BackendUnavailable):
        return {}
    hidden = sensitive_fields(model)
    return {key: value for key, value in settings.items() if key not in hidden}


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, the form every timestamp of the API takes."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def organization_view(org: Organization) -> dict[str, object]:
    """An organization as the admin API shows it."""
    return {"name": org.name, "issuer": org.issuer, "platform_org_id": org.platform_org_id}


def credential_view(credential: Credential) -> dict[str, object]:
    """A credential as the admin API shows it: settings without their sensitive fields."""
    return {
        "organization": credential.organization,
        "name": credential.name,
        "type": credential.type,
        "token": credential.token,
        "audience": credential.audience,
        "settings": public_settings(credential.type, credential.settings),
        "bound_claims": {
            key: value if isinstance(value, str) else list(value)
            for key, value in credential.bound_claims.items()
        },
    }


def assignment_view(assignment: CredentialAssignment) -> dict[str, object]:
    """An assignment as the admin API shows it."""
    return {
        "organization": assignment.organization,
        "project": assignment.project,
        "credential": assignment.credential,
    }


def audit_event_view(event: AuditEvent) -> dict[str, object]:
    """An audit event as the admin API shows it (it never held a secret)."""
    return {
        "id": event.id,
        "time": timestamp(event.time),
        "request_id": event.request_id,
        "outcome": event.outcome,
        "reason": event.reason,
        "latency_ms": event.latency_ms,
        "issuer": event.issuer,
        "organization": event.organization,
        "project": event.project,
        "subject": event.subject,
        "credential": event.credential,
        "credential_type": event.credential_type,
        "token_fingerprint": event.token_fingerprint,
        "client_address": event.client_address,
        "kind": event.kind,
        "lease_id": event.lease_id,
        "actor": event.actor,
        "detail": dict(event.detail) if event.detail is not None else None,
    }
