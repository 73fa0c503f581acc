"""Rules about credentials that config load, the admin API and the exchange all apply.

Each rule is one pure function, so the three places can never disagree about it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class TypeTraits(Protocol):
    """What these rules read of a credential type (``backends.base.CredentialTraits`` is one):
    config load and the store apply them too, and import no backends."""

    @property
    def type_name(self) -> str: ...

    @property
    def mint_only(self) -> bool: ...

    @property
    def default_mint_audience(self) -> str | None: ...


def mint_audience(audience: object, traits: TypeTraits | None) -> str | None:
    """The audience a minted outbound token gets: the credential's own, else its type's default."""
    if isinstance(audience, str) and audience:
        return audience
    return traits.default_mint_audience if traits is not None else None


def token_mode_problems(
    token: object, audience: object, traits: TypeTraits | None
) -> list[tuple[str, str]]:
    """(field, problem) pairs for a credential's ``token`` mode and ``audience``.

    A minted token needs an audience to be minted for (the credential's, or its type's
    default); a type whose credential *is* the outbound token (``mint_only``) would hand the
    platform token back in passthrough. ``traits`` is None where the type is not known yet
    (config load, before the registry): what depends on the type is then left to the store's
    check, which applies every config entry with the type's traits before serving.
    """
    problems: list[tuple[str, str]] = []
    if token == "mint" and traits is not None and not mint_audience(audience, traits):
        problems.append(("audience", "is required when token is 'mint'"))
    if traits is not None and traits.mint_only and token == "passthrough":
        problems.append(("token", f"{traits.type_name} credentials need token = 'mint'"))
    return problems


@dataclass(frozen=True, slots=True)
class MintedAudience:
    """A mint credential's audience, and whether its minted token is handed to the runner."""

    organization: str
    name: str
    audience: str
    handed_out: bool


def audience_conflicts(candidate: MintedAudience, others: Iterable[MintedAudience]) -> list[str]:
    """Why ``candidate`` may not mint for its audience, naming each credential it clashes with.

    A minted token handed to a runner (``oidc_token``) is accepted by every backend that trusts
    its audience: if another mint credential minted for the same audience, the runner could
    take the handed-out token there and skip that credential's own checks.
    """
    clashes = []
    for other in others:
        if (other.organization, other.name) == (candidate.organization, candidate.name):
            continue
        if other.audience == candidate.audience and (candidate.handed_out or other.handed_out):
            clashes.append(
                f"{candidate.audience!r} of credential {candidate.name!r} is also the audience "
                f"of mint credential {other.name!r} of organization {other.organization!r}; a "
                "token handed to runners needs an audience of its own"
            )
    return clashes
