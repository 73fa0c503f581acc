"""CircleCI (``CIRCLE_OIDC_TOKEN``/``_V2``): org from the issuer, project and user from ``sub``."""

from __future__ import annotations

import re
from collections.abc import Mapping

from tokenbroker.errors import AccessDenied, InvalidToken
from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles._claims import (
    optional_bool,
    optional_str,
    required_str,
)
from tokenbroker.identity.profiles.base import PlatformProfile

PROJECT_ID = "oidc.circleci.com/project-id"
VCS_ORIGIN = "oidc.circleci.com/vcs-origin"
VCS_REF = "oidc.circleci.com/vcs-ref"
CONTEXT_IDS = "oidc.circleci.com/context-ids"
SSH_RERUN = "oidc.circleci.com/ssh-rerun"


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
    origin = optional_str(claims, VCS_ORIGIN)
    if match["origin"] is not None and origin is not None and match["origin"] != origin:
        raise InvalidToken("claim_invalid", f"the 'sub' and {VCS_ORIGIN!r} claims disagree")
    return Identity(
        issuer=issuer_name,
        org=org,
        project=project,
        subject=subject,
        actor=match["user"],
        claims=claims,
    )


# CircleCI tokens expire 1 h after they are issued.
PROFILE = PlatformProfile(
    name="circleci", identify=identity_from_claims, token_lifetime_seconds=3600
)
