"""The backend interface every credential type implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

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
class OutboundToken:
    """The token a credential's backend is sent (the platform's, or one the broker minted)."""

    value: str = field(repr=False)
    expires_at: datetime


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


class CredentialSettings(BaseModel):
    """Base of a type's settings model: an unknown key is an error, and validated settings
    never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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

    def outbound_claims(self, identity: Identity, job: str) -> Mapping[str, object]:
        """Extra claims for a minted outbound token (``job``: the platform's job id)."""
        ...


@runtime_checkable
class FormatRenderer(Protocol):
    """A backend with output formats of its own (``output_formats``), rendered from its issue.

    ``render_format`` is a static method: the class renders, no instance is needed.
    """

    @staticmethod
    def render_format(fmt: str, issued: IssuedCredential) -> tuple[str, str]:
        """(content type, body) of ``issued`` in ``fmt``."""
        ...


@runtime_checkable
class RunnerDocumentProvider(Protocol):
    """A backend whose credential the runner's own client can get itself, from a document.

    ``runner_documents`` maps each such format to whether the document carries the outbound
    token; the backend is not called for them. A document is a JSON object, or plain text
    (a bare token, for tools that read one from a file or an argument).
    """

    runner_documents: ClassVar[Mapping[str, bool]]

    def runner_document(
        self,
        fmt: str,
        *,
        credential: str,
        settings: BaseModel,
        outbound: OutboundToken | None,
        broker_url: str,
    ) -> dict[str, object] | str:
        """The document of ``fmt`` for the credential named ``credential``."""
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
    - ``formats``: the output formats it renders (``output_formats``, beyond the common ones,
      and its ``runner_documents``).
    - ``documents``: the formats rendered without calling the backend, each mapped to
      whether the document carries the outbound token.
    - ``single_token``: set when the credential is one token (``oauth_token_value`` and
      ``oauth_token_type``), so RFC 8693 can return it.
    - ``revocable``: the backend can revoke what it issued before it expires.
    - ``default_mint_audience``: the audience a minted outbound token gets when the credential
      names none (declared as ``default_mint_audience``; e.g. a cloud's fixed token-exchange
      audience), or None when a minted credential must name its own.
    """

    type_name: str
    mint_only: bool
    formats: frozenset[str]
    documents: Mapping[str, bool]
    single_token: SingleToken | None
    revocable: bool
    default_mint_audience: str | None = None


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
    documents: Mapping[str, bool] = dict(getattr(backend, "runner_documents", {}))
    default_audience = getattr(backend, "default_mint_audience", None)
    return CredentialTraits(
        type_name=backend.type_name,
        mint_only=getattr(backend, "mint_only", False) is True,
        formats=COMMON_FORMATS | frozenset(getattr(backend, "output_formats", ())) | set(documents),
        documents=documents,
        single_token=single,
        revocable=callable(getattr(backend, "revoke", None)),
        default_mint_audience=default_audience
        if isinstance(default_audience, str) and default_audience
        else None,
    )
