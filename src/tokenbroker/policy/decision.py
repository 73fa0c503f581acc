"""The decision: which assigned credential a caller gets, and whether its claims fit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenbroker.errors import AccessDenied, InvalidRequest
from tokenbroker.identity.models import Claims
from tokenbroker.policy.bound_claims import (
    BoundClaimCheck,
    bound_claims_satisfied,
    match_bound_claims,
)
from tokenbroker.policy.models import Credential

# Keep refusal descriptions readable when a bound claim lists many alternatives.
_MAX_LISTED_VALUES = 5


def _names(credentials: Iterable[Credential]) -> str:
    return ", ".join(sorted(c.name for c in credentials))


def choose_credential(
    assigned: Sequence[Credential],
    requested: str | None,
    *,
    organization: str,
    project: str | None,
) -> Credential:
    """Pick the requested credential among those assigned to the project, or the only one."""
    if project is None:
        raise AccessDenied(
            "no_project",
            "the token names no project, and credentials are assigned to projects",
        )
    if not assigned:
        raise AccessDenied(
            "project_not_assigned",
            f"no credentials are assigned to project {project!r} of organization {organization!r}",
        )
    if requested is None:
        if len(assigned) == 1:
            return assigned[0]
        raise InvalidRequest(
            "credential_required",
            f"project {project!r} has several credentials; name one of: {_names(assigned)}",
        )
    for credential in assigned:
        if credential.name == requested:
            return credential
    raise AccessDenied(
        "credential_not_assigned",
        f"credential {requested!r} is not assigned to project {project!r}; "
        f"this project may use: {_names(assigned)}",
    )


def evaluate_bound_claims(credential: Credential, claims: Claims) -> list[BoundClaimCheck]:
    """The credential's bound-claim checks against the claims, without raising (for dry runs)."""
    return match_bound_claims(credential.bound_claims, claims)


def _describe_expected(expected: list[str]) -> str:
    shown = [repr(value) for value in expected[:_MAX_LISTED_VALUES]]
    if len(expected) > _MAX_LISTED_VALUES:
        shown.append(f"... ({len(expected) - _MAX_LISTED_VALUES} more)")
    return shown[0] if len(shown) == 1 else "one of " + ", ".join(shown)


def describe_failed_checks(checks: Iterable[BoundClaimCheck]) -> str:
    """One line naming each failed key and what it must match; never the token's other claims."""
    return "; ".join(
        f"claim {check.key!r} must match {_describe_expected(check.expected)}"
        for check in checks
        if not check.matched
    )


def check_bound_claims(credential: Credential, claims: Claims) -> list[BoundClaimCheck]:
    """The credential's bound-claim checks; raise AccessDenied when any key does not match."""
    checks = evaluate_bound_claims(credential, claims)
    if not bound_claims_satisfied(checks):
        raise AccessDenied(
            "bound_claims_mismatch",
            f"the token does not satisfy the bound claims of credential "
            f"{credential.name!r}: {describe_failed_checks(checks)}",
        )
    return checks
