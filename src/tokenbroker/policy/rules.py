"""Rules about credentials that config load, the admin API and the exchange all apply.

Each rule is one pure function, so the three places can never disagree about it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only the type: config load applies these rules too, and imports no backends.
    from tokenbroker.backends.base import CredentialTraits


def token_mode_problems(
    token: object, audience: object, traits: CredentialTraits | None
) -> list[tuple[str, str]]:
    """(field, problem) pairs for a credential's ``token`` mode and ``audience``.

    A minted token needs an audience to be minted for; a type whose credential *is* the
    outbound token (``mint_only``) would hand the platform token back in passthrough.
    ``traits`` is None where the type is not known yet (config load, before the registry).
    """
    problems: list[tuple[str, str]] = []
    if token == "mint" and not audience:
        problems.append(("audience", "is required when token is 'mint'"))
    if traits is not None and traits.mint_only and token == "passthrough":
        problems.append(("token", f"{traits.type_name} credentials need token = 'mint'"))
    return problems
