"""Finding the platform token on a runner, where each platform's profile says it is.

``choose_token_source`` is pure (which source, in the documented order: every platform's token
variables, then the platforms' token endpoints, then ``$TOKENBROKER_PLATFORM_TOKEN``);
``read_platform_token`` does the I/O (a file read, or a token endpoint's request). The token
itself never appears in a repr, a message or an exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp

from tokenbroker.client.failures import NoPlatformToken
from tokenbroker.client.retry import Attempt, HttpReply
from tokenbroker.identity.profiles import PROFILES
from tokenbroker.identity.profiles.base import TokenRequest

GENERIC_VARIABLE = "TOKENBROKER_PLATFORM_TOKEN"

# (variable, platform title), in the order of automatic discovery.
PLATFORM_VARIABLES: tuple[tuple[str, str], ...] = tuple(
    (variable, profile.title)
    for profile in PROFILES.values()
    for variable in profile.runner.variables
)
# (endpoint, platform title): asked when no platform variable is set.
TOKEN_REQUESTS: tuple[tuple[TokenRequest, str], ...] = tuple(
    (profile.runner.request, profile.title)
    for profile in PROFILES.values()
    if profile.runner.request is not None
)
# A JWT is a few KB; a file much larger than this is not a token.
MAX_TOKEN_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class EnvVariableSource:
    """The token is the value of an environment variable."""

    variable: str
    platform: str | None = None

    def describe(self) -> str:
        """How the source is named to the user."""
        suffix = f" ({self.platform})" if self.platform else ""
        return f"${self.variable}{suffix}"


@dataclass(frozen=True, slots=True)
class FileSource:
    """The token is the content of a file (e.g. ``gitpod idp token > file``)."""

    path: Path

    def describe(self) -> str:
        """How the source is named to the user."""
        return f"file {self.path}"


@dataclass(frozen=True, slots=True)
class RequestedTokenSource:
    """The token is requested from the runner's ID-token endpoint (its profile's TokenRequest)."""

    request: TokenRequest
    platform: str
    request_url: str
    request_token: str = field(repr=False)

    def describe(self) -> str:
        """How the source is named to the user."""
        return f"{self.platform} (${self.request.url_variable})"

    def endpoint(self) -> str:
        """How the endpoint is named in messages."""
        return f"{self.platform}'s ID-token endpoint"


TokenSource = EnvVariableSource | FileSource | RequestedTokenSource


@dataclass(frozen=True, slots=True)
class PlatformToken:
    """A platform token and where it came from."""

    value: str = field(repr=False)
    source: str


def searched_sources() -> list[str]:
    """What automatic discovery looks at, in order (for the "none found" message)."""
    return [
        *(EnvVariableSource(name, platform).describe() for name, platform in PLATFORM_VARIABLES),
        *(
            f"${request.url_variable} + ${request.bearer_variable} ({platform})"
            for request, platform in TOKEN_REQUESTS
        ),
        f"${GENERIC_VARIABLE}",
    ]


def _set(env: Mapping[str, str], name: str) -> bool:
    # An empty variable is how CI systems often "unset" one: treat it as absent.
    return bool(env.get(name, "").strip())


def choose_token_source(
    env: Mapping[str, str], *, token_env: str | None = None, token_file: Path | None = None
) -> TokenSource:
    """The source to read the token from: the one named, or the first found in the usual order.

    Raises ``NoPlatformToken`` naming what was looked for and how to provide a token.
    """
    if token_file is not None:
        return FileSource(token_file)
    if token_env is not None:
        if not _set(env, token_env):
            raise NoPlatformToken(f"no platform token: ${token_env} (from --token-env) is not set")
        return EnvVariableSource(token_env)
    for name, platform in PLATFORM_VARIABLES:
        if _set(env, name):
            return EnvVariableSource(name, platform)
    for request, platform in TOKEN_REQUESTS:
        if _set(env, request.url_variable) and _set(env, request.bearer_variable):
            return RequestedTokenSource(
                request, platform, env[request.url_variable], env[request.bearer_variable]
            )
    if _set(env, GENERIC_VARIABLE):
        return EnvVariableSource(GENERIC_VARIABLE)
    raise NoPlatformToken(no_token_message(env))


def no_token_message(env: Mapping[str, str]) -> str:
    """What was looked for, and how each platform provides a token."""
    lines = ["no platform token found; looked for, in order:"]
    lines += [f"  {source}" for source in searched_sources()]
    for request, platform in TOKEN_REQUESTS:
        if _set(env, request.url_variable) != _set(env, request.bearer_variable):
            lines.append(
                f"only one of ${request.url_variable} and ${request.bearer_variable} is set; "
                f"{platform} sets both when: {request.fix}"
            )
    hints = "; ".join(profile.runner.hint for profile in PROFILES.values())
    lines.append(f"fix: {hints}")
    return "\n".join(lines)


def token_request_url(request_url: str, audience: str | None, parameter: str = "audience") -> str:
    """The endpoint's URL with the audience appended (it may already carry a query)."""
    if not audience:
        return request_url
    separator = "&" if urlsplit(request_url).query else "?"
    if request_url.endswith(("?", "&")):
        separator = ""
    return f"{request_url}{separator}{parameter}={quote(audience, safe='')}"


def token_from_text(text: str, source: str) -> str:
    """The token in a variable's or file's text: stripped, one line, non-empty."""
    token = text.strip()
    if not token:
        raise NoPlatformToken(f"no platform token: {source} is empty")
    if any(ch.isspace() for ch in token):
        raise NoPlatformToken(
            f"{source} does not hold a single token (it contains whitespace); "
            "write only the token to it"
        )
    if not (token.isascii() and token.isprintable()):
        raise NoPlatformToken(f"{source} does not hold a token (not printable ASCII)")
    return token


def parse_token_response(body: bytes, source: RequestedTokenSource) -> str:
    """The token in an ID-token endpoint's JSON answer (e.g. ``{"count": .., "value": ..}``)."""
    field_name = source.request.value_field
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    value = document.get(field_name) if isinstance(document, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise NoPlatformToken(f"{source.endpoint()} answered without a token (no {field_name!r})")
    return value.strip()


def read_token_file(path: Path) -> str:
    """A token from a file; missing, unreadable or oversized files are ``NoPlatformToken``."""
    source = FileSource(path).describe()
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise NoPlatformToken(
            f"no platform token: cannot read {source} ({exc.strerror or type(exc).__name__})"
        ) from None
    if len(data) > MAX_TOKEN_BYTES:
        raise NoPlatformToken(f"{source} is larger than a token can be ({MAX_TOKEN_BYTES} bytes)")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise NoPlatformToken(f"{source} does not hold a token (not ASCII text)") from None
    return token_from_text(text, source)


def token_request_attempt(
    http: aiohttp.ClientSession, source: RequestedTokenSource, audience: str | None
) -> Attempt:
    """One GET of the ID-token endpoint, as an attempt for ``send_with_retries``."""
    url = token_request_url(source.request_url, audience, source.request.audience_parameter)
    headers = {"Authorization": f"Bearer {source.request_token}", "Accept": "application/json"}

    async def attempt(budget: float) -> HttpReply:
        async with http.get(
            url,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=budget),
            allow_redirects=False,
        ) as response:
            body = await response.content.read(MAX_TOKEN_BYTES + 1)
            return HttpReply(response.status, body, dict(response.headers))

    return attempt


def token_request_failure(reply: HttpReply, source: RequestedTokenSource) -> NoPlatformToken:
    """Why the endpoint gave no token, and the platform's usual fix."""
    return NoPlatformToken(
        f"{source.endpoint()} answered HTTP {reply.status}; fix: {source.request.fix}"
    )
