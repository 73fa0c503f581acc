"""What a validated platform token tells us about its bearer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Claims as they come out of a verified JWT payload: JSON values, checked where they are read.
Claims = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Identity:
    """The bearer of a validated platform token, as its issuer's profile reads the claims.

    ``issuer`` is the configured issuer's name; ``org`` the platform's organization id;
    ``project`` the platform's project id when the token names one; ``details`` what else the
    profile reads as the bearer's identity (its names are the platform's claim names).
    """

    issuer: str
    org: str
    project: str | None
    subject: str
    environment: str | None = None
    deployment: str | None = None
    actor: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)
    claims: Claims = field(default_factory=dict, repr=False)
