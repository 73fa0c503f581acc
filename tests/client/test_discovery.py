"""Finding the platform token: each platform's variables, the order, and GitHub's endpoint."""

from __future__ import annotations

import io
from pathlib import Path

import aiohttp
import pytest

from tests.client.fakes import PLATFORM_TOKEN, GitHubStandIn, Scripted
from tokenbroker.client.discovery import (
    EnvVariableSource,
    FileSource,
    PlatformToken,
    RequestedTokenSource,
    choose_token_source,
    parse_token_response,
    read_token_file,
    searched_sources,
    token_from_text,
    token_request_url,
)
from tokenbroker.client.exchange import ClientRuntime, read_platform_token
from tokenbroker.client.failures import NoPlatformToken, Unavailable
from tokenbroker.client.retry import Deadline
from tokenbroker.clock import FrozenClock
from tokenbroker.identity.profiles import PROFILES

GITHUB = {
    "ACTIONS_ID_TOKEN_REQUEST_URL": "https://pipelines.example/token?api-version=2.0",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-token",
}
GITHUB_REQUEST = PROFILES["github"].runner.request
assert GITHUB_REQUEST is not None
GITHUB_SOURCE = RequestedTokenSource(
    GITHUB_REQUEST, "GitHub Actions", GITHUB["ACTIONS_ID_TOKEN_REQUEST_URL"], "request-token"
)
EVERY_SOURCE = {
    "ENV0_OIDC_TOKEN": "env0",
    "CIRCLE_OIDC_TOKEN_V2": "circle-v2",
    "CIRCLE_OIDC_TOKEN": "circle-v1",
    **GITHUB,
    "TOKENBROKER_PLATFORM_TOKEN": "generic",
}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ENV0_OIDC_TOKEN": "t"}, EnvVariableSource("ENV0_OIDC_TOKEN", "env0")),
        ({"CIRCLE_OIDC_TOKEN_V2": "t"}, EnvVariableSource("CIRCLE_OIDC_TOKEN_V2", "CircleCI")),
        ({"CIRCLE_OIDC_TOKEN": "t"}, EnvVariableSource("CIRCLE_OIDC_TOKEN", "CircleCI")),
        (GITHUB, GITHUB_SOURCE),
        ({"TOKENBROKER_PLATFORM_TOKEN": "t"}, EnvVariableSource("TOKENBROKER_PLATFORM_TOKEN")),
    ],
)
def test_each_platforms_variables_are_found(
    env: dict[str, str], expected: EnvVariableSource | RequestedTokenSource
) -> None:
    assert choose_token_source(env) == expected


@pytest.mark.parametrize(
    ("removed", "expected"),
    [
        ((), "ENV0_OIDC_TOKEN"),
        (("ENV0_OIDC_TOKEN",), "CIRCLE_OIDC_TOKEN_V2"),
        (("ENV0_OIDC_TOKEN", "CIRCLE_OIDC_TOKEN_V2"), "CIRCLE_OIDC_TOKEN"),
        (("ENV0_OIDC_TOKEN", "CIRCLE_OIDC_TOKEN_V2", "CIRCLE_OIDC_TOKEN"), "GitHub Actions"),
        (
            (
                "ENV0_OIDC_TOKEN",
                "CIRCLE_OIDC_TOKEN_V2",
                "CIRCLE_OIDC_TOKEN",
                "ACTIONS_ID_TOKEN_REQUEST_URL",
            ),
            "TOKENBROKER_PLATFORM_TOKEN",
        ),
    ],
)
def test_sources_are_tried_in_the_documented_order(removed: tuple[str, ...], expected: str) -> None:
    env = {k: v for k, v in EVERY_SOURCE.items() if k not in removed}
    assert expected in choose_token_source(env).describe()


def test_an_empty_variable_counts_as_unset() -> None:
    source = choose_token_source({"CIRCLE_OIDC_TOKEN_V2": " ", "CIRCLE_OIDC_TOKEN": "t"})
    assert source == EnvVariableSource("CIRCLE_OIDC_TOKEN", "CircleCI")


def test_token_env_replaces_the_search() -> None:
    env = {**EVERY_SOURCE, "MY_TOKEN": "t"}
    assert choose_token_source(env, token_env="MY_TOKEN") == EnvVariableSource("MY_TOKEN")


def test_token_env_naming_an_unset_variable_finds_no_token() -> None:
    with pytest.raises(NoPlatformToken, match=r"\$MY_TOKEN \(from --token-env\) is not set"):
        choose_token_source(EVERY_SOURCE, token_env="MY_TOKEN")


def test_token_file_replaces_the_search(tmp_path: Path) -> None:
    path = tmp_path / "token"
    assert choose_token_source(EVERY_SOURCE, token_file=path) == FileSource(path)


def test_no_token_names_every_source_looked_at_and_how_to_get_one() -> None:
    with pytest.raises(NoPlatformToken) as caught:
        choose_token_source({})
    message = caught.value.message
    for source in searched_sources():
        assert source in message
    assert "id-token: write" in message
    assert "--token-file" in message


def test_half_of_githubs_variables_is_pointed_out() -> None:
    with pytest.raises(NoPlatformToken, match="only one of"):
        choose_token_source({"ACTIONS_ID_TOKEN_REQUEST_URL": "https://x/token?a=1"})


@pytest.mark.parametrize(
    ("url", "audience", "expected"),
    [
        (
            "https://x/token?api-version=2.0",
            "broker",
            "https://x/token?api-version=2.0&audience=broker",
        ),
        ("https://x/token", "broker", "https://x/token?audience=broker"),
        ("https://x/token?", "a b&c", "https://x/token?audience=a%20b%26c"),
        (
            "https://x/token?v=2",
            "https://broker.example/",
            "https://x/token?v=2&audience=https%3A%2F%2Fbroker.example%2F",
        ),
        ("https://x/token?v=2", None, "https://x/token?v=2"),
    ],
)
def test_the_audience_is_appended_to_githubs_url_encoded(
    url: str, audience: str | None, expected: str
) -> None:
    assert token_request_url(url, audience) == expected


def test_tokens_are_kept_out_of_reprs() -> None:
    source = choose_token_source(GITHUB)
    assert "request-token" not in repr(source)
    assert PLATFORM_TOKEN not in repr(PlatformToken(PLATFORM_TOKEN, "$ENV0_OIDC_TOKEN"))


def test_a_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {PLATFORM_TOKEN}\n")
    assert read_token_file(path) == PLATFORM_TOKEN


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "cannot read"), ("", "is empty"), ("two\ntokens", "single token")],
)
def test_a_bad_token_file_finds_no_token(tmp_path: Path, content: str | None, match: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(NoPlatformToken, match=match):
        read_token_file(path)


@pytest.mark.parametrize("value", ["tok\u00e9n", "tok\x00en"])
def test_a_variable_holding_no_printable_ascii_token_finds_none(value: str) -> None:
    with pytest.raises(NoPlatformToken, match="not printable ASCII") as caught:
        token_from_text(value, "$X")
    assert value not in str(caught.value)


def test_a_github_answer_without_a_value_finds_no_token() -> None:
    with pytest.raises(NoPlatformToken, match="no 'value'"):
        parse_token_response(b'{"count": 0}', GITHUB_SOURCE)


# --- GitHub's endpoint, for real ----------------------------------------------------------------


def runtime(clock: FrozenClock) -> ClientRuntime:
    async def no_sleep(_: float) -> None:
        return None

    return ClientRuntime(clock=clock, stdout=io.StringIO(), notify=lambda _: None, sleep=no_sleep)


async def fetch(stand_in: GitHubStandIn, audience: str | None) -> str:
    clock = FrozenClock(1_000_000.0)
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": stand_in.url,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": stand_in.request_token,
    }
    async with aiohttp.ClientSession() as http:
        token = await read_platform_token(
            choose_token_source(env),
            env,
            http=http,
            audience=audience,
            deadline=Deadline(clock, 10),
            runtime=runtime(clock),
        )
    assert token.source == "GitHub Actions ($ACTIONS_ID_TOKEN_REQUEST_URL)"
    return token.value


async def test_github_actions_token_is_requested_with_the_audience_and_request_token(
    github_stand_in: GitHubStandIn,
) -> None:
    assert await fetch(github_stand_in, "https://broker.example") == PLATFORM_TOKEN
    request = github_stand_in.requests[0]
    assert request.authorization == f"Bearer {github_stand_in.request_token}"
    assert request.query == {"api-version": "2.0", "audience": "https://broker.example"}


async def test_github_actions_token_without_audience_uses_githubs_default(
    github_stand_in: GitHubStandIn,
) -> None:
    await fetch(github_stand_in, None)
    assert github_stand_in.requests[0].query == {"api-version": "2.0"}


async def test_github_refusing_the_request_finds_no_token_and_names_the_permission(
    github_stand_in: GitHubStandIn,
) -> None:
    github_stand_in.then(Scripted(403, {"message": "forbidden"}))
    with pytest.raises(NoPlatformToken, match="id-token: write"):
        await fetch(github_stand_in, "aud")
    assert len(github_stand_in.requests) == 1


async def test_github_failing_is_retried_then_the_token_is_used(
    github_stand_in: GitHubStandIn,
) -> None:
    github_stand_in.then(Scripted(503, {}), Scripted(drop=True))
    assert await fetch(github_stand_in, "aud") == PLATFORM_TOKEN
    assert len(github_stand_in.requests) == 3


async def test_github_down_until_the_end_is_unavailable(github_stand_in: GitHubStandIn) -> None:
    github_stand_in.then(*[Scripted(502, {})] * 20)
    with pytest.raises(Unavailable, match="HTTP 502"):
        await fetch(github_stand_in, "aud")
