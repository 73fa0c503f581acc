"""Kubernetes projected service-account tokens: the cluster from the issuer, the namespace.

Each cluster is its own issuer (its ``--service-account-issuer``), and its tokens do not name
it, so the organization is the issuer's ``cluster`` option (required). The project is the
namespace from the ``kubernetes.io`` claim; a namespace has no id in the token, and its name is
unique in the cluster (only its administrators can delete and re-create it). The service account
and the pod are in the details with their uids, which are immutable: bind
``/kubernetes.io/serviceaccount/uid`` to keep trust from passing to a service account deleted
and re-created under the same name.

The token is a file of the pod's projected volume, rotated by the kubelet: the runner reads it
with ``--token-file`` on every exchange, never a copy.
"""

from __future__ import annotations

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

CLAIM = "kubernetes.io"
CLUSTER_OPTION = "cluster"
# (details key: a JSON pointer, as bound claims name it; object and field in the claim).
_DETAILS = (
    ("/kubernetes.io/serviceaccount/name", "serviceaccount", "name"),
    ("/kubernetes.io/serviceaccount/uid", "serviceaccount", "uid"),
    ("/kubernetes.io/pod/name", "pod", "name"),
    ("/kubernetes.io/pod/uid", "pod", "uid"),
)


def option_problems(options: Mapping[str, str | bool | int]) -> list[str]:
    """The ``cluster`` option is required: the tokens do not name their cluster."""
    cluster = options.get(CLUSTER_OPTION)
    if not isinstance(cluster, str) or not cluster:
        return [f"{CLUSTER_OPTION}: required, the cluster's name (the organization's id)"]
    return []


def _object(claims: Mapping[str, object], name: str, what: str) -> Mapping[str, object] | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidToken("claim_invalid", f"the {what} claim is not an object")
    return value


def identity_from_claims(
    issuer_name: str, claims: Claims, options: Mapping[str, str | bool | int]
) -> Identity:
    """Map a service-account token to an Identity (org = cluster, project = namespace)."""
    kubernetes = _object(claims, CLAIM, repr(CLAIM))
    if kubernetes is None:
        raise InvalidToken("claim_missing", f"the token has no {CLAIM!r} claim")
    namespace = required_str(kubernetes, "namespace")
    details: dict[str, str] = {}
    for key, name, field in _DETAILS:
        part = _object(kubernetes, name, key.rsplit("/", 1)[0])
        value = optional_str(part, field) if part is not None else None
        if value is not None:
            details[key] = value
    account = details.get("/kubernetes.io/serviceaccount/name")
    if account is None:
        raise InvalidToken("claim_missing", "the token names no service account")
    subject = required_str(claims, "sub")
    if subject != f"system:serviceaccount:{namespace}:{account}":
        raise InvalidToken("claim_invalid", f"the 'sub' and {CLAIM!r} claims disagree")
    return Identity(
        issuer=issuer_name,
        org=str(options[CLUSTER_OPTION]),
        project=namespace,
        subject=subject,
        actor=account,
        details=details,
        claims=claims,
    )


def job_id(claims: Claims, options: Mapping[str, str | bool | int]) -> str | None:
    """The pod's uid; a token bound to no pod (``kubectl create token``) names no job."""
    kubernetes = claims.get(CLAIM)
    pod = kubernetes.get("pod") if isinstance(kubernetes, Mapping) else None
    uid = pod.get("uid") if isinstance(pod, Mapping) else None
    return uid if isinstance(uid, str) and uid else None


def dev_claims(request: DevTokenRequest) -> dict[str, object]:
    """Claims of a pod's projected token: service account ``deployer`` of the namespace."""
    account = str(request.overrides.get("serviceaccount", "deployer"))
    return {
        "sub": f"system:serviceaccount:{request.project}:{account}",
        "aud": [request.audience],
        "nbf": request.issued_at,
        "jti": str(uuid.uuid4()),
        CLAIM: {
            "namespace": request.project,
            "node": {"name": "dev-node-1", "uid": str(uuid.uuid4())},
            "pod": {"name": f"{account}-{uuid.uuid4().hex[:10]}", "uid": str(uuid.uuid4())},
            "serviceaccount": {"name": account, "uid": str(uuid.uuid4())},
        },
    }


PROFILE = PlatformProfile(
    name="kubernetes",
    title="Kubernetes",
    identify=identity_from_claims,
    # A projected token lives its volume's expirationSeconds, 1 h by default; pods asking for
    # longer need the issuer's max_token_lifetime_seconds.
    token_lifetime_seconds=3600,
    runner=RunnerToken(
        hint="on Kubernetes project a serviceAccountToken volume with the broker's audience "
        "and pass --token-file <mountPath>/<path>"
    ),
    option_problems=option_problems,
    job_id=job_id,
    # One issuer per cluster; the cluster's name is the issuer's option and its path here.
    dev=DevIssuerShape(
        claims=dev_claims,
        path="kubernetes/{org}",
        issuer_options={CLUSTER_OPTION: "{org}"},
    ),
)
