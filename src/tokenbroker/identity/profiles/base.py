"""What a platform is to the broker: one object per platform, defined in that platform's file."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tokenbroker.identity.models import Claims, Identity

ProfileOptions = Mapping[str, str | bool | int]
IdentityReader = Callable[[str, Claims, ProfileOptions], Identity]


def no_option_problems(options: ProfileOptions) -> list[str]:
    """The option check of a profile that reads no options."""
    return []


@dataclass(frozen=True, slots=True)
class PlatformProfile:
    """A platform's facets: how its claims become an Identity, and the rules of its tokens.

    ``identify`` is pure (claims in, Identity or a BrokerError out); ``token_lifetime_seconds``
    is the longest ``exp - iat`` the platform publishes for its tokens, the default cap of an
    issuer using this profile; ``option_problems`` checks ``[issuers.options]``.
    """

    name: str
    identify: IdentityReader
    token_lifetime_seconds: int
    option_problems: Callable[[ProfileOptions], list[str]] = no_option_problems
