"""What a platform is to the broker: one object per platform, defined in that platform's file.

This package imports nothing but the standard library, ``tokenbroker.errors`` and
``tokenbroker.identity.models``, so the runner's client reads the same objects the server does
(where a runner finds its token) without pulling in any server code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tokenbroker.identity.models import Claims, Identity

ProfileOptions = Mapping[str, str | bool | int]
IdentityReader = Callable[[str, Claims, ProfileOptions], Identity]
JobIdReader = Callable[[Claims, ProfileOptions], "str | None"]


def no_option_problems(options: ProfileOptions) -> list[str]:
    """The option check of a profile that reads no options."""
    return []


def no_job_id(claims: Claims, options: ProfileOptions) -> str | None:
    """The job id of a platform whose tokens name no job: callers use the token's fingerprint."""
    return None


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A runner endpoint that hands out the token: ``GET $url_variable`` plus the audience.

    Sent with ``Authorization: Bearer $bearer_variable``; the answer is JSON with the token in
    ``value_field``. ``fix`` says how to make the endpoint answer when it refuses.
    """

    url_variable: str
    bearer_variable: str
    fix: str
    audience_parameter: str = "audience"
    value_field: str = "value"


@dataclass(frozen=True, slots=True)
class RunnerToken:
    """Where a runner of the platform finds its token, and how a user gets one there.

    ``variables`` are read in order; ``request`` is an endpoint to ask when none is set;
    ``hint`` is the line of the "no token found" message that tells how to get one;
    ``env_file`` is the variable naming the file the platform reads between steps, with the
    format it expects (``env`` or ``shell``); ``refusal_hints`` tell the runner what to do
    about the refusals (by reason) that only this platform's tokens meet.
    """

    hint: str
    variables: tuple[str, ...] = ()
    request: TokenRequest | None = None
    env_file: tuple[str, str] | None = None
    refusal_hints: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DevTokenRequest:
    """What a dev-issuer token is asked to say: who it is for, and claims set by the caller."""

    org: str
    project: str
    audience: str
    issued_at: int
    environment: str | None = None
    overrides: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DevIssuerShape:
    """How the dev platform issuer imitates the platform's issuer and its tokens.

    ``claims`` builds the platform-specific claims (``iss``, ``iat`` and ``exp`` are the dev
    issuer's). ``path`` is the issuer's path under the dev issuer's base URL, where ``{org}``
    stands for the organization when the platform has one issuer per organization; ``audience``
    is the default ``aud`` (``{org}`` allowed too); ``required_claims`` are what an issuer
    trusting it should require, as the platform's own guides advise; ``issuer_options`` are the
    ``[issuers.options]`` such an issuer needs (``{org}`` allowed in the values).
    """

    claims: Callable[[DevTokenRequest], dict[str, object]]
    path: str
    audience: str = "tokenbroker"
    jwks_file: str = "jwks.json"
    lifetime_seconds: int | None = None
    required_claims: Mapping[str, str] = field(default_factory=dict)
    issuer_options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlatformProfile:
    """A platform's facets, all in the platform's own file.

    ``identify`` is pure (claims in, Identity or a BrokerError out); ``token_lifetime_seconds``
    is the longest ``exp - iat`` the platform publishes for its tokens, the default cap of an
    issuer using this profile; ``option_problems`` checks ``[issuers.options]``; ``job_id``
    names the job a token was issued to (None: the platform's tokens name none); ``runner``
    says where its runners hold the token; ``dev`` how the dev issuer imitates it (None: the
    dev issuer does not).
    """

    name: str
    title: str
    identify: IdentityReader
    token_lifetime_seconds: int
    runner: RunnerToken
    option_problems: Callable[[ProfileOptions], list[str]] = no_option_problems
    job_id: JobIdReader = no_job_id
    dev: DevIssuerShape | None = None
