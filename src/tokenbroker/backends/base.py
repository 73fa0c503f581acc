"""The backend interface every credential type implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from tokenbroker.identity.models import Identity

if TYPE_CHECKING:
    import aiohttp

    from tokenbroker.clock import Clock


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """What a backend hands back. ``values`` are secrets: never logged, never in a repr."""

    values: Mapping[str, str] = field(repr=False)
    expires_at: datetime
    metadata: Mapping[str, object] = field(default_factory=dict)
    # What `revoke` needs to undo this credential (e.g. Vault's token), kept out of reprs too.
    revocation_handle: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class BackendContext:
    """Shared resources a backend is built with: one HTTP session, the clock."""

    http: aiohttp.ClientSession
    clock: Clock


@runtime_checkable
class Backend(Protocol):
    """A credential type: its settings schema and the exchange against its service."""

    type_name: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]

    async def exchange(
        self, identity: Identity, outbound_token: str, settings: BaseModel
    ) -> IssuedCredential:
        """Exchange the outbound token for credentials; raise a BrokerError on refusal."""
        ...


@runtime_checkable
class RevocableBackend(Backend, Protocol):
    """A backend whose credentials can be revoked early."""

    async def revoke(self, credential: IssuedCredential, settings: BaseModel) -> None:
        """Revoke a credential this backend issued."""
        ...


class BackendFactory(Protocol):
    """What the entry point names: a class built from a BackendContext."""

    type_name: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]

    def __call__(self, context: BackendContext) -> Backend: ...


@runtime_checkable
class OutboundClaimsProvider(Protocol):
    """A backend that adds claims to the tokens the broker mints for it (e.g. AWS session tags)."""

    def outbound_claims(self, identity: Identity) -> Mapping[str, object]:
        """Extra claims for a minted outbound token."""
        ...


@runtime_checkable
class OAuthTokenProvider(Protocol):
    """A backend whose credential is one token, so ``/oauth2/token`` can return it."""

    oauth_token_value: ClassVar[str]
    oauth_token_type: ClassVar[str]


# What every credential renders: its values as JSON, env lines or shell exports.
COMMON_FORMATS = frozenset({"json", "env", "shell"})


@dataclass(frozen=True, slots=True)
class SingleToken:
    """The one value of a credential that is a single token, and its RFC 8693 token type."""

    value_name: str
    token_type: str


@dataclass(frozen=True, slots=True)
class CredentialTraits:
    """What a credential type is, as its backend class declares it; everyone else asks this.

    - ``mint_only``: the credential is the outbound token itself, so passthrough would hand
      the platform token back (declared as ``mint_only = True``).
    - ``formats``: the output formats it renders (``output_formats``, beyond the common ones).
    - ``single_token``: set when the credential is one token (``oauth_token_value`` and
      ``oauth_token_type``), so RFC 8693 can return it.
    - ``revocable``: the backend can revoke what it issued before it expires.
    """

    type_name: str
    mint_only: bool
    formats: frozenset[str]
    single_token: SingleToken | None
    revocable: bool


_TRAITS: dict[BackendFactory, CredentialTraits] = {}


def traits_of(backend: BackendFactory) -> CredentialTraits:
    """The traits a backend class declares (class attributes, read once per class)."""
    known = _TRAITS.get(backend)
    if known is None:
        known = _TRAITS[backend] = _read_traits(backend)
    return known


def _read_traits(backend: BackendFactory) -> CredentialTraits:
    value_name = getattr(backend, "oauth_token_value", None)
    token_type = getattr(backend, "oauth_token_type", None)
    single = (
        SingleToken(value_name, token_type)
        if isinstance(value_name, str) and isinstance(token_type, str)
        else None
    )
    return CredentialTraits(
        type_name=backend.type_name,
        mint_only=getattr(backend, "mint_only", False) is True,
        formats=COMMON_FORMATS | frozenset(getattr(backend, "output_formats", ())),
        single_token=single,
        revocable=callable(getattr(backend, "revoke", None)),
    )
