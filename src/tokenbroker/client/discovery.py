"""Finding the platform token on a runner: env0, CircleCI, GitHub Actions, or a generic variable.

``choose_token_source`` is pure (which source, in the documented order); ``read_platform_token``
does the I/O (a file read, or GitHub's ID-token request). The token itself never appears in a
repr, a message or an exception.
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

GITHUB_REQUEST_URL = "ACTIONS_ID_TOKEN_REQUEST_URL"
GITHUB_REQUEST_TOKEN = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
GENERIC_VARIABLE = "TOKENBROKER_PLATFORM_TOKEN"

# The order of automatic discovery (issue 6): platform-specific variables first, generic last.
PLATFORM_VARIABLES: tuple[tuple[str, str], ...] = (
    ("ENV0_OIDC_TOKEN", "env0"),
    ("CIRCLE_OIDC_TOKEN_V2", "CircleCI"),
    ("CIRCLE_OIDC_TOKEN", "CircleCI"),
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
class GitHubActionsSource:
    """GitHub Actions: the token is requested from the runner's ID-token endpoint."""

    request_url: str
    request_token: str = field(repr=False)

    def describe(self) -> str:
        """How the source is named to the user."""
        return f"GitHub Actions (${GITHUB_REQUEST_URL})"


TokenSource = EnvVariableSource | FileSource | GitHubActionsSource


@dataclass(frozen=True, slots=True)
class PlatformToken:
    """A platform token and where it came from."""

    value: str = field(repr=False)
    source: str


def searched_sources() -> list[str]:
    """What automatic discovery looks at, in order (for the "none found" message)."""
    return [
        *(EnvVariableSource(name, platform).describe() for name, platform in PLATFORM_VARIABLES),
        f"${GITHUB_REQUEST_URL} + ${GITHUB_REQUEST_TOKEN} (GitHub Actions)",
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
    if _set(env, GITHUB_REQUEST_URL) and _set(env, GITHUB_REQUEST_TOKEN):
        return GitHubActionsSource(env[GITHUB_REQUEST_URL], env[GITHUB_REQUEST_TOKEN])
    if _set(env, GENERIC_VARIABLE):
        return EnvVariableSource(GENERIC_VARIABLE)
    raise NoPlatformToken(no_token_message(env))


def no_token_message(env: Mapping[str, str]) -> str:
    """What was looked for, and how each platform provides a token."""
    lines = ["no platform token found; looked for, in order:"]
    lines += [f"  {source}" for source in searched_sources()]
    if _set(env, GITHUB_REQUEST_URL) != _set(env, GITHUB_REQUEST_TOKEN):
        lines.append(
            f"only one of ${GITHUB_REQUEST_URL} and ${GITHUB_REQUEST_TOKEN} is set; "
            "GitHub sets both when the job has 'permissions: id-token: write'"
        )
    lines.append(
        "fix: on env0 enable OIDC for the environment; on CircleCI use a job with a context or "
        "project OIDC token; on GitHub Actions add 'permissions: id-token: write'; on Gitpod run "
        "'gitpod idp token --audience <aud> > FILE' and pass --token-file FILE; "
        "anywhere else pass --token-env NAME or --token-file PATH"
    )
    return "\n".join(lines)


def github_token_request_url(request_url: str, audience: str | None) -> str:
    """GitHub's request URL with ``audience`` appended (it already carries ``?api-version``)."""
    if not audience:
        return request_url
    separator = "&" if urlsplit(request_url).query else "?"
    if request_url.endswith(("?", "&")):
        separator = ""
    return f"{request_url}{separator}audience={quote(audience, safe='')}"


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


def parse_github_token_response(body: bytes) -> str:
    """The ``value`` of GitHub's ID-token answer ``{"count": .., "value": "<jwt>"}``."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    value = document.get("value") if isinstance(document, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise NoPlatformToken(
            "GitHub Actions' ID-token endpoint answered without a token (no 'value')"
        )
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


def github_attempt(
    http: aiohttp.ClientSession, source: GitHubActionsSource, audience: str | None
) -> Attempt:
    """One GET of GitHub's ID-token endpoint, as an attempt for ``send_with_retries``."""
    url = github_token_request_url(source.request_url, audience)
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


def github_failure(reply: HttpReply) -> NoPlatformToken:
    """Why GitHub's endpoint gave no token, and the usual fix."""
    return NoPlatformToken(
        f"GitHub Actions' ID-token endpoint answered HTTP {reply.status}; "
        "fix: give the job 'permissions: id-token: write' and run on a GitHub-hosted or "
        "registered runner"
    )
