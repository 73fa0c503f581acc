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
class SettingsAdvisories(Protocol):
    """Settings that are valid but likely a mistake say so: one sentence per concern."""

    def advisories(self) -> list[str]:
        """Warnings to log, naming the setting; empty when there is nothing to say."""
        ...


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
