"""Gitpod (``gitpod idp token``): org claim, project/environment/actor from the ``sub`` forms.

Trust is keyed on ids only: the ``org`` claim and every part of ``sub`` are Gitpod's UUIDs
(organization, project, environment, user, runner); Gitpod's tokens carry no names.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles._claims import required_str
from tokenbroker.identity.profiles.base import (
    DevIssuerShape,
    DevTokenRequest,
    PlatformProfile,
    RunnerToken,
)

# The four published forms: org:<o>/user:<u>, org:<o>/rnr:<r>, org:<o>/env:<e> and
# org:<o>/prj:<p>/env:<e>.
_SUB = re.compile(
    r"org:(?P<org>[^/]+)/(?:"
    r"user:(?P<user>[^/]+)"
    r"|rnr:(?P<runner>[^/]+)"
    r"|(?:prj:(?P<project>[^/]+)/)?env:(?P<environment>[^/]+)"
    r")"
)


def identity_from_claims(
    issuer_name: str, claims: Claims, options: Mapping[str, str | bool | int]
) -> Identity:
    """Map a Gitpod token's claims to an Identity."""
    org = required_str(claims, "org")
    subject = required_str(claims, "sub")
    match = _SUB.fullmatch(subject)
    if match is None:
        raise InvalidToken("claim_invalid", "the 'sub' claim is not a Gitpod subject")
    if match["org"] != org:
        raise InvalidToken("claim_invalid", "the 'sub' and 'org' claims disagree")
    return Identity(
        issuer=issuer_name,
        org=org,
        project=match["project"],
        subject=subject,
        environment=match["environment"],
        actor=match["user"] or match["runner"],
        claims=claims,
    )


def job_id(claims: Claims, options: Mapping[str, str | bool | int]) -> str | None:
    """The environment the token was issued in (from ``sub``); users and runners name none."""
    match = _SUB.fullmatch(required_str(claims, "sub"))
    return match["environment"] if match is not None else None


def dev_claims(request: DevTokenRequest) -> dict[str, object]:
    """Claims of a token from an environment of a project."""
    env = request.environment or str(uuid.uuid4())
    return {
        "sub": f"org:{request.org}/prj:{request.project}/env:{env}",
        "aud": request.audience,
        "org": request.org,
    }


PROFILE = PlatformProfile(
    name="gitpod",
    title="Gitpod",
    identify=identity_from_claims,
    # Gitpod's identity-provider tokens are short-lived (1 h).
    token_lifetime_seconds=3600,
    runner=RunnerToken(
        hint="on Gitpod run 'gitpod idp token --audience <aud> > FILE' and pass --token-file FILE"
    ),
    job_id=job_id,
    dev=DevIssuerShape(claims=dev_claims, path="gitpod"),
)
