"""The typed configuration. ``config.example.toml`` documents every key here."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from tokenbroker.config.urls import require_trusted_url


def _url_shape(url: str) -> str:
    # The address policy needs [security], so Settings applies it to the issuers' URLs.
    return require_trusted_url(url, allow_private=True)


TrustedUrl = Annotated[str, AfterValidator(_url_shape)]
ClaimValue = str | bool | int | list[str]

# Algorithms a platform token may be signed with. `none` and the HS* family are never accepted:
# a shared secret would let anyone holding the issuer's public key forge tokens.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_ADMIN_TOKEN_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
# Names of issuers, organizations and credentials: safe in URLs, headers, logs and env files.
# NAME_REGEX is the JSON Schema (ECMA-262) form the OpenAPI document publishes; Python's "$"
# also matches before a final newline, so the compiled form ends in "\Z" instead: "acme\n" is
# not a name (it would break the Location header of the answer that created it).
NAME_REGEX = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
NAME_PATTERN = re.compile(NAME_REGEX.removesuffix("$") + r"\Z")


# A profile is named here and checked against the registered profiles where issuers are
# compiled (the token validator): config sits below identity and imports none of it.
_PROFILE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _check_profile_name(value: str) -> str:
    if not _PROFILE_NAME.match(value):
        raise ValueError("must be a profile name: 1-32 lowercase letters, digits, '_' or '-'")
    return value


ProfileName = Annotated[str, AfterValidator(_check_profile_name)]


def _check_name(value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError("must be 1-128 letters, digits, '_', '.' or '-', starting alphanumeric")
    return value


Name = Annotated[str, AfterValidator(_check_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    """``[server]``: where the broker listens and what it calls itself."""

    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=0, le=65535)
    public_url: TrustedUrl | None = None
    data_dir: Path = Path(".tokenbroker")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    client_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # "auto" serves on uvloop where it is installed (a default dependency off Windows).
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    # Processes serving the port (SO_REUSEPORT) under one supervisor; "auto" is one per CPU.
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = 1
    # On SIGTERM, how long in-flight requests have to finish before they are cut off.
    shutdown_grace_seconds: float = Field(default=20.0, ge=0, le=3600)

    def worker_count(self) -> int:
        """How many worker processes ``workers`` asks for on this machine."""
        if self.workers != "auto":
            return self.workers
        if hasattr(os, "sched_getaffinity"):  # the CPUs this process may run on (Linux)
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1

    @property
    def issuer_url(self) -> str:
        """The broker's own issuer URL (``public_url`` without a trailing slash)."""
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"


class LoggingSettings(_Section):
    """``[logging]``: level and format of log lines."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class StoreSettings(_Section):
    """``[store]``: the database holding organizations, credentials, assignments, audit, keys."""

    url: str | None = None
    migrate_on_start: bool = True
    prune_declarative: bool = False
    encryption_key: SecretStr | None = None

    @model_validator(mode="after")
    def _shared_store_needs_a_key(self) -> StoreSettings:
        # Checked here, before anything connects: instances sharing PostgreSQL must seal the
        # signing keys with one configured key (SQLite generates its own in the data dir).
        key = self.encryption_key.get_secret_value() if self.encryption_key else ""
        if self.url and self.url.startswith("postgresql") and not key:
            raise ValueError(
                "encryption_key is required when the store is PostgreSQL, "
                "so that instances can share signing keys"
            )
        return self

    def resolved_url(self, data_dir: Path) -> str:
        """The database URL, defaulting to SQLite in the data directory."""
        if self.url:
            return self.url
        return f"sqlite+aiosqlite:///{data_dir / 'tokenbroker.db'}"


def _check_admin_token_hash(value: str) -> str:
    if not _ADMIN_TOKEN_HASH.match(value):
        raise ValueError("admin tokens must be given as 'sha256:<64 hex digits>'")
    return value


AdminTokenHash = Annotated[str, AfterValidator(_check_admin_token_hash)]
# The name every token of ``[admin] tokens`` goes by in the audit trail and the console.
GLOBAL_ADMIN_NAME = "admin"


class NamedAdminToken(_Section):
    """``[[admin.named_tokens]]``: a global admin token with the name the audit trail shows."""

    name: Name
    hash: AdminTokenHash


class OrgAdminToken(NamedAdminToken):
    """``[[admin.org_tokens]]``: an admin of only the listed organizations."""

    organizations: list[Name] = Field(min_length=1)


class AdminSettings(_Section):
    """``[admin]``: hashed bearer tokens for ``/v1/admin`` and the console, and its sessions."""

    tokens: list[AdminTokenHash] = Field(default_factory=list)
    named_tokens: list[NamedAdminToken] = Field(default_factory=list)
    org_tokens: list[OrgAdminToken] = Field(default_factory=list)
    # A console session unused this long is ended; the next request signs in again.
    session_idle_seconds: int = Field(default=900, ge=60, le=24 * 3600)
    # Failed console sign-ins allowed at once per client address, and then per minute.
    sign_in_burst: int = Field(default=5, ge=1, le=1000)
    sign_in_failures_per_minute: int = Field(default=5, ge=1, le=1000)

    @model_validator(mode="after")
    def _unique(self) -> AdminSettings:
        # A digest listed twice would make the token's name (and so its scope) ambiguous.
        named = (*self.named_tokens, *self.org_tokens)
        hashes = [*self.tokens, *(t.hash for t in named)]
        problems = [f"admin token {h[:15]}... is listed more than once" for h in _repeated(hashes)]
        names = [t.name for t in named]
        problems += [f"admin token name {n!r} is used more than once" for n in _repeated(names)]
        if GLOBAL_ADMIN_NAME in names:
            problems.append(f"admin token name {GLOBAL_ADMIN_NAME!r} is the name of [admin] tokens")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _repeated(values: list[str]) -> list[str]:
    return sorted({v for v in values if values.count(v) > 1})


class SigningSettings(_Section):
    """``[signing]``: the broker's own issuer keys and the tokens it mints."""

    algorithm: Literal["ES256", "RS256"] = "ES256"
    token_lifetime_seconds: int = Field(default=900, ge=60, le=3600)
    # A retired key stays published this long after rotation, so tokens it signed still verify.
    retire_after_seconds: int = Field(default=3600 + 300, ge=60)


# Query parameters of a Redis URL that would turn off TLS certificate or host name checks.
_REDIS_TLS_OVERRIDES = frozenset({"ssl_cert_reqs", "ssl_check_hostname"})


def _check_redis_url(url: str) -> str:
    parts = urlsplit(url)
    try:
        port_is_valid = parts.port is None or parts.port > 0
    except ValueError:
        port_is_valid = False
    if parts.scheme not in ("redis", "rediss") or not parts.hostname or not port_is_valid:
        raise ValueError("not a redis:// or rediss:// URL")
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        raise ValueError("the path must be a database number, e.g. /0")
    if _REDIS_TLS_OVERRIDES & set(parse_qs(parts.query)):
        raise ValueError("TLS verification of Redis cannot be turned off")
    return url


RedisUrl = Annotated[str, AfterValidator(_check_redis_url)]


class RateLimitSettings(_Section):
    """``[rate_limit]``: a token bucket of exchanges per organization, project or subject, and
    one of requests per client address, checked before validation."""

    enabled: bool = True
    requests_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    burst: int = Field(default=60, ge=1, le=100_000)
    # Set: instances share their buckets through Redis. Unset: each instance counts alone.
    redis_url: RedisUrl | None = None
    key: Literal["organization", "project", "subject"] = "organization"
    # Each Redis call is abandoned after this: a hanging Redis must not slow every exchange.
    redis_timeout_ms: int = Field(default=50, ge=1, le=5000)
    # After this many failures in a row Redis is skipped for the cooldown, then probed once.
    redis_breaker_failures: int = Field(default=3, ge=1, le=1000)
    redis_breaker_cooldown_seconds: float = Field(default=5.0, gt=0, le=3600)
    # While Redis fails or is skipped: "allow" exchanges unlimited, "deny" them with a 503.
    on_redis_error: Literal["allow", "deny"] = "allow"
    # Before any token is read, each client address has a bucket of its own, so a flood of junk
    # tokens gets no signature check and no audit row per request. It is kept in this
    # instance's memory even when redis_url is set: it protects this instance, which another
    # instance's count says nothing about, and it must not wait on another server.
    per_client_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    per_client_burst: int = Field(default=120, ge=1, le=100_000)


class SecuritySettings(_Section):
    """``[security]``: what outbound URLs may point at."""

    # Off: backend and issuer URLs may not name loopback, private, link-local or metadata
    # addresses, neither as written nor as resolved at connect time. The dev stack turns it on.
    allow_private_backends: bool = False


class ExchangeSettings(_Section):
    """``[exchange]``: how long a retry of the same request gets the same credential."""

    # A repeated (platform token, credential, credential version) inside this window is a
    # retry and gets what was issued; after it, a new credential.
    reuse_seconds: int = Field(default=60, ge=0, le=3600)


class IssuerSettings(_Section):
    """``[[issuers]]``: one trusted platform issuer."""

    name: Name
    issuer: TrustedUrl
    jwks_uri: TrustedUrl | None = None
    audiences: list[str] = Field(min_length=1)
    profile: ProfileName
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    leeway_seconds: int = Field(default=60, ge=0, le=600)
    max_token_age_seconds: int = Field(default=24 * 3600 + 300, ge=60)
    # exp - iat, and exp - now, may not exceed this; unset: the profile's platform lifetime
    # plus the leeway, so a correctly signed token with an absurd `exp` is still refused.
    max_token_lifetime_seconds: int | None = Field(default=None, ge=60, le=7 * 24 * 3600)
    max_token_bytes: int = Field(default=16 * 1024, ge=512, le=1024 * 1024)
    required_claims: dict[str, ClaimValue] = Field(default_factory=dict)
    jwks_cache_seconds: int = Field(default=3600, ge=30, le=86400)
    jwks_refetch_interval_seconds: int = Field(default=60, ge=1, le=3600)
    # "once": a token serves one (token, credential) request; its retries inside the reuse
    # window get the same credential, anything else is refused (token_replayed).
    replay: Literal["allow", "once"] = "allow"
    # How long past its cache lifetime a key still serves while the JWKS cannot be refreshed.
    jwks_max_stale_seconds: int = Field(default=86400, ge=0, le=30 * 86400)
    # Profile-specific knobs, read and checked by the profile.
    options: dict[str, str | bool | int] = Field(default_factory=dict)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, algorithms: list[str]) -> list[str]:
        for alg in algorithms:
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"algorithm {alg!r} is not allowed (asymmetric algorithms only)")
        return algorithms


class OrganizationConfig(_Section):
    """``[[organizations]]``: a platform organization known to the broker."""

    name: Name
    issuer: Name
    platform_org_id: str = Field(min_length=1, max_length=256)


class CredentialConfig(_Section):
    """``[[credentials]]``: a typed credential of an organization.

    ``settings``, the token mode and the audience are checked against the type (its schema,
    whether it only mints, its default mint audience) when the entry is applied to the store.
    """

    organization: Name
    name: Name
    type: Name
    token: Literal["passthrough", "mint"] = "passthrough"
    audience: str | None = None
    settings: dict[str, object] = Field(default_factory=dict)
    bound_claims: dict[str, str | list[str]] = Field(default_factory=dict)


class AssignmentConfig(_Section):
    """``[[assignments]]``: credentials a project of an organization may use."""

    organization: Name
    project: str = Field(min_length=1, max_length=256)
    credentials: list[Name] = Field(min_length=1)


class Settings(_Section):
    """The whole configuration file."""

    server: ServerSettings = ServerSettings()
    logging: LoggingSettings = LoggingSettings()
    store: StoreSettings = StoreSettings()
    admin: AdminSettings = AdminSettings()
    signing: SigningSettings = SigningSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    exchange: ExchangeSettings = ExchangeSettings()
    security: SecuritySettings = SecuritySettings()
    issuers: list[IssuerSettings] = Field(default_factory=list)
    organizations: list[OrganizationConfig] = Field(default_factory=list)
    credentials: list[CredentialConfig] = Field(default_factory=list)
    assignments: list[AssignmentConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references_resolve(self) -> Settings:
        problems: list[str] = []
        if not self.security.allow_private_backends:
            for index, issuer in enumerate(self.issuers):
                for key, url in (("issuer", issuer.issuer), ("jwks_uri", issuer.jwks_uri)):
                    try:
                        if url is not None:
                            require_trusted_url(url)
                    except ValueError as exc:
                        problems.append(f"issuers[{index}].{key}: {exc}")
        issuer_names = [i.name for i in self.issuers]
        issuer_urls = [i.issuer.rstrip("/") for i in self.issuers]
        for index, name in enumerate(issuer_names):
            if issuer_names.index(name) != index:
                problems.append(f"issuers[{index}].name: duplicate issuer name {name!r}")
        for index, url in enumerate(issuer_urls):
            if issuer_urls.index(url) != index:
                problems.append(f"issuers[{index}].issuer: duplicate issuer URL")
        org_names = {o.name for o in self.organizations}
        for index, org in enumerate(self.organizations):
            if org.issuer not in issuer_names:
                problems.append(f"organizations[{index}].issuer: no issuer named {org.issuer!r}")
        credentials = {(c.organization, c.name) for c in self.credentials}
        for index, cred in enumerate(self.credentials):
            if cred.organization not in org_names:
                problems.append(
                    f"credentials[{index}].organization: "
                    f"no organization named {cred.organization!r}"
                )
        for index, assignment in enumerate(self.assignments):
            if assignment.organization not in org_names:
                problems.append(
                    f"assignments[{index}].organization: "
                    f"no organization named {assignment.organization!r}"
                )
            for name in assignment.credentials:
                if (assignment.organization, name) not in credentials:
                    problems.append(
                        f"assignments[{index}].credentials: no credential named {name!r} "
                        f"in organization {assignment.organization!r}"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self
