"""The env0-style domain: organizations, typed credentials, project assignments, audit events.

Plain data: the store reads and writes these, the policy decides over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

TokenMode = Literal["passthrough", "mint"]
Outcome = Literal["success", "denied", "error"]
BoundClaims = Mapping[str, str | list[str]]


@dataclass(frozen=True, slots=True)
class Organization:
    """A platform organization: the issuer it signs in with and its id on that platform."""

    id: int
    name: str
    issuer: str
    platform_org_id: str


@dataclass(frozen=True, slots=True)
class Credential:
    """A typed credential of an organization; ``settings`` already validated by its type."""

    id: int
    organization: str
    name: str
    type: str
    token: TokenMode
    audience: str | None
    settings: Mapping[str, object]
    bound_claims: BoundClaims = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CredentialAssignment:
    """A credential made available to one project of its organization."""

    organization: str
    project: str
    credential: str


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One decision of the broker. Holds a token's fingerprint, never the token or a secret."""

    time: datetime
    request_id: str
    outcome: Outcome
    reason: str
    latency_ms: float
    issuer: str | None = None
    organization: str | None = None
    project: str | None = None
    subject: str | None = None
    credential: str | None = None
    credential_type: str | None = None
    token_fingerprint: str | None = None
    client_address: str | None = None
    # exchange | revocation | admin | flood
    kind: str = "exchange"
    lease_id: str | None = None
    # The admin token's name for an admin change; never a token.
    actor: str | None = None
    # What an admin change changed, or a flood's counts; never a secret.
    detail: Mapping[str, object] | None = None
    id: int | None = None
