"""HCP Terraform and Terraform Enterprise (``TFC_WORKLOAD_IDENTITY_TOKEN``): one token a run phase.

``https://app.terraform.io`` signs the tokens of every HCP Terraform organization (a Terraform
Enterprise install is its own issuer), so ``terraform_organization_id`` is required. Trust is
keyed on ``terraform_organization_id`` and ``terraform_workspace_id`` (``org-``/``ws-`` ids,
immutable); the names can be renamed and reused, and stay in the details with the run and its
phase. ``terraform_run_phase`` (``plan`` or ``apply``) is in the identity, so a credential bound
to ``terraform_run_phase = "apply"`` is never handed to a plan.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles._claims import details_of, optional_str, required_str
from tokenbroker.identity.profiles.base import (
    DevIssuerShape,
    DevTokenRequest,
    PlatformProfile,
    RunnerToken,
)

RUN_PHASE = "terraform_run_phase"
# Read into Identity.details, under HCP Terraform's claim names.
DETAIL_CLAIMS = (
    RUN_PHASE,
    "terraform_run_id",
    "terraform_organization_name",
    "terraform_project_id",
    "terraform_project_name",
    "terraform_workspace_name",
    "terraform_full_workspace",
)


def identity_from_claims(
    issuer_name: str, claims: Claims, options: Mapping[str, str | bool | int]
) -> Identity:
    """Map a run phase's workload identity token to an Identity (org and workspace ids)."""
    phase = required_str(claims, RUN_PHASE)
    subject = required_str(claims, "sub")
    # `sub` ends with the phase: a policy matching `sub` sees the same phase as one binding it.
    if not subject.endswith(f":run_phase:{phase}"):
        raise InvalidToken("claim_invalid", f"the 'sub' and {RUN_PHASE!r} claims disagree")
    details = details_of(claims, DETAIL_CLAIMS)
    return Identity(
        issuer=issuer_name,
        org=required_str(claims, "terraform_organization_id"),
        project=required_str(claims, "terraform_workspace_id"),
        subject=subject,
        deployment=details.get("terraform_run_id"),
        details=details,
        claims=claims,
    )


def job_id(claims: Claims, options: Mapping[str, str | bool | int]) -> str | None:
    """``<run id>/<phase>``: the plan and the apply of one run are two jobs."""
    run_id = optional_str(claims, "terraform_run_id")
    phase = optional_str(claims, RUN_PHASE)
    return f"{run_id}/{phase}" if run_id and phase else None


def dev_claims(request: DevTokenRequest) -> dict[str, object]:
    """Claims of a workspace run's token, as HCP Terraform's example; ``sub`` follows overrides
    of the organization and workspace names and of the phase (default ``apply``)."""
    overrides = request.overrides
    org_name = overrides.get("terraform_organization_name", "dev-org")
    project_name = overrides.get("terraform_project_name", "Default Project")
    workspace_name = overrides.get("terraform_workspace_name", "deploy")
    phase = overrides.get(RUN_PHASE, "apply")
    full_workspace = f"organization:{org_name}:project:{project_name}:workspace:{workspace_name}"
    return {
        "jti": str(uuid.uuid4()),
        "aud": request.audience,
        "nbf": request.issued_at - 5,
        "sub": f"{full_workspace}:run_phase:{phase}",
        "terraform_organization_id": request.org,
        "terraform_organization_name": org_name,
        "terraform_project_id": f"prj-{secrets.token_hex(8)}",
        "terraform_project_name": project_name,
        "terraform_workspace_id": request.project,
        "terraform_workspace_name": workspace_name,
        "terraform_full_workspace": full_workspace,
        "terraform_run_id": f"run-{secrets.token_hex(8)}",
        RUN_PHASE: phase,
    }


PROFILE = PlatformProfile(
    name="terraform",
    title="HCP Terraform",
    identify=identity_from_claims,
    # A token expires at the end of its phase's timeout; an apply may run 24 h.
    token_lifetime_seconds=24 * 3600,
    runner=RunnerToken(
        hint="on HCP Terraform set TFC_WORKLOAD_IDENTITY_AUDIENCE on the workspace (a tagged "
        "TFC_WORKLOAD_IDENTITY_AUDIENCE_TAG gives TFC_WORKLOAD_IDENTITY_TOKEN_TAG: pass "
        "--token-env)",
        variables=("TFC_WORKLOAD_IDENTITY_TOKEN",),
    ),
    job_id=job_id,
    dev=DevIssuerShape(claims=dev_claims, path="terraform"),
)
