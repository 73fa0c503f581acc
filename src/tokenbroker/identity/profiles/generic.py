"""Any other platform: identity fields from JSON pointers into the claims or a regex on ``sub``.

Options (``[issuers.options]``): ``org_pointer``, ``project_pointer``, ``environment_pointer``,
``deployment_pointer``, ``actor_pointer`` (RFC 6901 pointers) and ``sub_pattern`` (a regex
matched against the whole ``sub``, with named groups ``org``, ``project``, ``environment``,
``deployment``, ``actor``). A pointer wins over a group for the same field; ``org`` is required.
``job_pointer`` names the claim holding the job id of the token's leases.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles._claims import required_str, resolve_pointer
from tokenbroker.identity.profiles.base import PlatformProfile, RunnerToken

FIELDS = ("org", "project", "environment", "deployment", "actor")


def option_problems(options: Mapping[str, str | bool | int]) -> list[str]:
    """Problems with a generic issuer's options, one line each (empty when usable)."""
    problems: list[str] = []
    groups: set[str] = set()
    pattern = options.get("sub_pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            problems.append("sub_pattern: must be a string")
        else:
            try:
                groups = set(re.compile(pattern).groupindex)
            except re.error as exc:
                problems.append(f"sub_pattern: not a valid regex ({exc})")
    for field in (*FIELDS, "job"):
        pointer = options.get(f"{field}_pointer")
        if pointer is not None and (not isinstance(pointer, str) or not pointer.startswith("/")):
            problems.append(f"{field}_pointer: must be a JSON pointer starting with '/'")
    if "org_pointer" not in options and "org" not in groups:
        problems.append("org_pointer: required unless sub_pattern has a named group 'org'")
    return problems


def _pointer_value(claims: Claims, pointer: str) -> str | None:
    value = resolve_pointer(claims, pointer)
    if value is None:
        return None
    # Platform ids are sometimes numbers (GitHub's repository_owner_id); bools never are.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidToken("claim_invalid", f"the claim at {pointer!r} is not a string")
    return str(value) or None


def identity_from_claims(
    issuer_name: str, claims: Claims, options: Mapping[str, str | bool | int]
) -> Identity:
    """Map claims to an Identity as the issuer's options direct."""
    subject = required_str(claims, "sub")
    fields: dict[str, str | None] = dict.fromkeys(FIELDS)
    pattern = options.get("sub_pattern")
    if isinstance(pattern, str):
        match = re.fullmatch(pattern, subject)
        if match is None:
            raise InvalidToken("claim_invalid", "the 'sub' claim does not match sub_pattern")
        for field, value in match.groupdict().items():
            if field in fields and value:
                fields[field] = value
    for field in FIELDS:
        pointer = options.get(f"{field}_pointer")
        if isinstance(pointer, str):
            value = _pointer_value(claims, pointer)
            if value is not None:
                fields[field] = value
            elif field == "org":
                raise InvalidToken("claim_missing", f"the token has no claim at {pointer!r}")
    org = fields["org"]
    if org is None:
        raise InvalidToken("claim_missing", "the token names no organization")
    return Identity(
        issuer=issuer_name,
        org=org,
        project=fields["project"],
        subject=subject,
        environment=fields["environment"],
        deployment=fields["deployment"],
        actor=fields["actor"],
        claims=claims,
    )


def job_id(claims: Claims, options: Mapping[str, str | bool | int]) -> str | None:
    """The claim at ``job_pointer``; None without the option or the claim."""
    pointer = options.get("job_pointer")
    return _pointer_value(claims, pointer) if isinstance(pointer, str) else None


PROFILE = PlatformProfile(
    name="generic",
    title="any other platform",
    identify=identity_from_claims,
    # an unknown platform: the longest of the known ones.
    token_lifetime_seconds=24 * 3600,
    runner=RunnerToken(hint="anywhere else pass --token-env NAME or --token-file PATH"),
    option_problems=option_problems,
    job_id=job_id,
)
