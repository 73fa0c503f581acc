"""GitLab CI (``id_tokens``): namespace and project ids, the job's ref, pipeline and user.

The token is in the job variable its ``id_tokens`` entry names (the job's choice, so the runner
is told with ``--token-env``). The issuer is the instance's URL (``https://gitlab.com`` or a
self-managed one). Ids are numeric strings and immutable; paths can be renamed and taken over,
so trust is keyed on ``namespace_id`` and ``project_id``.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles._claims import optional_str, required_str
from tokenbroker.identity.profiles.base import (
    DevIssuerShape,
    DevTokenRequest,
    PlatformProfile,
    RunnerToken,
)

# Read into Identity.details, under GitLab's claim names.
DETAIL_CLAIMS = (
    "project_path",
    "ref",
    "ref_type",
    "ref_protected",
    "environment",
    "pipeline_id",
    "job_id",
    "user_login",
)


def identity_from_claims(
    issuer_name: str, claims: Claims, options: Mapping[str, str | bool | int]
) -> Identity:
    """Map a GitLab ID token's claims to an Identity (org = namespace, project = project id)."""
    subject = required_str(claims, "sub")
    project_path = required_str(claims, "project_path")
    # A project may change the components of its `sub`, but `project_path` stays first.
    if subject != f"project_path:{project_path}" and not subject.startswith(
        f"project_path:{project_path}:"
    ):
        raise InvalidToken("claim_invalid", "the 'sub' and 'project_path' claims disagree")
    details = {name: optional_str(claims, name) for name in DETAIL_CLAIMS}
    return Identity(
        issuer=issuer_name,
        org=required_str(claims, "namespace_id"),
        project=required_str(claims, "project_id"),
        subject=subject,
        environment=details["environment"],
        deployment=details["pipeline_id"],
        actor=details["user_login"],
        details={name: value for name, value in details.items() if value is not None},
        claims=claims,
    )


def job_id(claims: Claims, options: Mapping[str, str | bool | int]) -> str | None:
    """The CI job's id."""
    return optional_str(claims, "job_id")


def dev_claims(request: DevTokenRequest) -> dict[str, object]:
    """Claims of an ID token of a job on a branch; ``sub`` follows overrides of its parts."""
    overrides = request.overrides
    namespace_path = overrides.get("namespace_path", "dev-group")
    project_path = overrides.get("project_path", f"{namespace_path}/deploy")
    ref = overrides.get("ref", "main")
    ref_type = overrides.get("ref_type", "branch")
    ref_kind = "tags" if ref_type == "tag" else "heads"
    environment: dict[str, object] = (
        {
            "environment": request.environment,
            "environment_protected": "false",
            "deployment_tier": "production",
        }
        if request.environment
        else {}
    )
    return {
        "jti": str(uuid.uuid4()),
        "sub": f"project_path:{project_path}:ref_type:{ref_type}:ref:{ref}",
        "aud": request.audience,
        "nbf": request.issued_at - 5,
        "namespace_id": request.org,
        "namespace_path": namespace_path,
        "project_id": request.project,
        "project_path": project_path,
        "user_id": str(secrets.randbelow(10**7)),
        "user_login": "dev-user",
        "user_email": "dev-user@example.com",
        "pipeline_id": str(secrets.randbelow(10**10)),
        "pipeline_source": "push",
        "job_id": str(secrets.randbelow(10**10)),
        "ref": ref,
        "ref_type": ref_type,
        "ref_path": f"refs/{ref_kind}/{ref}",
        "ref_protected": "true",
        **environment,
        "runner_id": secrets.randbelow(10**8),
        "runner_environment": "gitlab-hosted",
        "sha": secrets.token_hex(20),
        "project_visibility": "private",
        "ci_config_ref_uri": f"gitlab.example/{project_path}//.gitlab-ci.yml@refs/{ref_kind}/{ref}",
    }


PROFILE = PlatformProfile(
    name="gitlab",
    title="GitLab CI",
    identify=identity_from_claims,
    # An ID token lives as long as its job's timeout (GitLab's default: 1 h; 5 min for a job
    # without one). Jobs with longer timeouts need the issuer's max_token_lifetime_seconds.
    token_lifetime_seconds=3600,
    runner=RunnerToken(
        hint="on GitLab CI declare 'id_tokens: {NAME: {aud: <aud>}}' in the job and pass "
        "--token-env NAME"
    ),
    job_id=job_id,
    dev=DevIssuerShape(claims=dev_claims, path="gitlab"),
)
