"""CircleCI (``CIRCLE_OIDC_TOKEN``/``_V2``): org from the issuer, project and user from ``sub``.

Trust is keyed on ids: the organization id in the per-organization issuer URL and the project
id (UUIDs CircleCI never reuses); the VCS origin and ref are names, for bound claims only.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping

from tokenbroker.errors import AccessDenied, InvalidToken
from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles._claims import (
    optional_bool,
    optional_str,
    required_str,
)
from tokenbroker.identity.profiles.base import (
    DevIssuerShape,
    DevTokenRequest,
    PlatformProfile,
    RunnerToken,
)

CLAIM_PREFIX = "oidc.circleci.com/"
PROJECT_ID = CLAIM_PREFIX + "project-id"
VCS_ORIGIN = CLAIM_PREFIX + "vcs-origin"
VCS_REF = CLAIM_PREFIX + "vcs-ref"
CONTEXT_IDS = CLAIM_PREFIX + "context-ids"
SSH_RERUN = CLAIM_PREFIX + "ssh-rerun"


# v1: org/<o>/project/<p>/user/<u>; v2 appends /vcs-origin/<origin>/vcs-ref/<ref>, where the
# origin holds slashes (github.com/org/repo) and the ref may too (refs/heads/main).
_SUB = re.compile(
    r"org/(?P<org>[^/]+)/project/(?P<project>[^/]+)/user/(?P<user>[^/]+)"
    r"(?:/vcs-origin/(?P<origin>.+?)/vcs-ref/(?P<ref>.+))?"
)
# One issuer per organization: https://oidc.circleci.com/org/<org_id>.
_ISS_ORG = re.compile(r"/org/(?P<org>[^/]+)/?$")


def identity_from_claims(
    issuer_name: str, claims: Claims, options: Mapping[str, str | bool | int]
) -> Identity:
    """Map a CircleCI token's claims to an Identity; SSH re-run tokens are refused by default."""
    subject = required_str(claims, "sub")
    match = _SUB.fullmatch(subject)
    if match is None:
        raise InvalidToken("claim_invalid", "the 'sub' claim is not a CircleCI subject")
    iss_match = _ISS_ORG.search(required_str(claims, "iss"))
    if iss_match is None:
        raise InvalidToken("claim_invalid", "the 'iss' claim names no CircleCI organization")
    org = iss_match["org"]
    if match["org"] != org:
        raise InvalidToken("claim_invalid", "the 'sub' claim names another organization")
    project = required_str(claims, PROJECT_ID)
    if match["project"] != project:
        raise InvalidToken("claim_invalid", f"the 'sub' and {PROJECT_ID!r} claims disagree")
    # A token from a re-run with SSH may be used by the person on the box, not just the job.
    if optional_bool(claims, SSH_RERUN) and options.get("allow_ssh_rerun") is not True:
        raise AccessDenied("ssh_rerun_refused", "tokens from CircleCI SSH re-runs are refused")
    # A v2 `sub` repeats the origin and the ref: a policy may match either, so both must agree.
    for part, claim in (("origin", VCS_ORIGIN), ("ref", VCS_REF)):
        value = optional_str(claims, claim)
        if match[part] is not None and value is not None and match[part] != value:
            raise InvalidToken("claim_invalid", f"the 'sub' and {claim!r} claims disagree")
    return Identity(
        issuer=issuer_name,
        org=org,
        project=project,
        subject=subject,
        actor=match["user"],
        claims=claims,
    )


def dev_claims(request: DevTokenRequest) -> dict[str, object]:
    """Claims of a v2 CircleCI token; its ``sub`` follows overrides of vcs-origin and vcs-ref."""
    origin = request.overrides.get(VCS_ORIGIN, "github.com/example-org/example-repo")
    ref = request.overrides.get(VCS_REF, "refs/heads/main")
    user = str(uuid.uuid4())
    return {
        "sub": f"org/{request.org}/project/{request.project}/user/{user}"
        f"/vcs-origin/{origin}/vcs-ref/{ref}",
        "aud": request.audience,
        PROJECT_ID: request.project,
        VCS_ORIGIN: origin,
        VCS_REF: ref,
        CONTEXT_IDS: [str(uuid.uuid4())],
        SSH_RERUN: False,
    }


PROFILE = PlatformProfile(
    name="circleci",
    title="CircleCI",
    identify=identity_from_claims,
    # CircleCI tokens expire 1 h after they are issued.
    token_lifetime_seconds=3600,
    runner=RunnerToken(
        hint="on CircleCI use a job with a context or project OIDC token",
        variables=("CIRCLE_OIDC_TOKEN_V2", "CIRCLE_OIDC_TOKEN"),
        # Sourced by the next step's bash: shell lines.
        env_file=("BASH_ENV", "shell"),
        refusal_hints={
            "ssh_rerun_refused": "CircleCI jobs re-run with SSH cannot get credentials; "
            "re-run without SSH"
        },
    ),
    # The claims name no job (the pipeline and job numbers are not in the token).
    dev=DevIssuerShape(
        claims=dev_claims,
        # One issuer per organization, whose aud is the organization id, as CircleCI's.
        path="circleci/org/{org}",
        audience="{org}",
        jwks_file="jwks-pub.json",
    ),
)
