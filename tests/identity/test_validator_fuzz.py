"""Whatever string arrives as a token, the validator answers InvalidToken, never anything else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.identity.conftest import NOW, b64url
from tokenbroker.clock import FrozenClock
from tokenbroker.devstack.platform_issuer import DevPlatformIssuer, create_issuer_app
from tokenbroker.errors import InvalidToken, PayloadTooLarge
from tokenbroker.identity.jwks import JwksCache
from tokenbroker.identity.validator import TokenValidator


class Harness:
    """A dev issuer served on its own event loop, and a validator trusting its env0 issuer."""

    def __init__(self, keys_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.issuer = DevPlatformIssuer(keys_dir, clock=FrozenClock(NOW))
        self.server = TestServer(create_issuer_app(self.issuer))
        self.loop.run_until_complete(self.server.start_server())
        self.issuer.base_url = str(self.server.make_url("")).rstrip("/")
        self.settings = self.issuer.issuer_settings("env0")
        self.http = self.loop.run_until_complete(self._session())
        clock = FrozenClock(NOW)
        self.validator = TokenValidator(
            [self.settings], JwksCache(self.http, clock, allow_private_backends=True), clock
        )

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def validate(self, token: str) -> None:
        """Validate on the harness loop."""
        self.loop.run_until_complete(self.validator.validate_platform_token(token))

    def close(self) -> None:
        """Stop the server and the loop."""
        self.loop.run_until_complete(self.http.close())
        self.loop.run_until_complete(self.server.close())
        self.loop.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A Harness for the test."""
    running = Harness(tmp_path)
    yield running
    running.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=10,
)


def structured_tokens(iss: str) -> st.SearchStrategy[str]:
    """Three base64url JSON segments, often naming the trusted issuer, RS256 and random kids."""
    header = st.fixed_dictionaries(
        {},
        optional={
            "alg": st.sampled_from(["RS256", "ES256", "none", "HS256"]) | st.text(max_size=5),
            "kid": st.text(max_size=8) | st.integers(),
            "crit": json_values,
            "jku": st.text(max_size=20),
        },
    )
    claims = st.fixed_dictionaries(
        {},
        optional={
            "iss": st.just(iss) | st.text(max_size=10) | json_values,
            "aud": json_values,
            "exp": json_values,
            "iat": json_values,
            "nbf": json_values,
        },
    )
    segment = st.builds(lambda value: b64url(json.dumps(value).encode()), header | json_values)
    payload = st.builds(lambda value: b64url(json.dumps(value).encode()), claims | json_values)
    signature = st.binary(max_size=300).map(b64url) | st.text(max_size=10)
    return st.builds(lambda h, p, s: f"{h}.{p}.{s}", segment, payload, signature)


def check(harness: Harness, token: str) -> None:
    """The token is refused with one of the two token errors and nothing else escapes."""
    try:
        harness.validate(token)
    except (InvalidToken, PayloadTooLarge):
        return
    pytest.fail("a garbage token validated")


def test_arbitrary_strings_only_ever_raise_invalid_token(harness: Harness) -> None:
    @settings(max_examples=300, deadline=None)
    @given(token=st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_.=-]{0,300}", fullmatch=True))
    def run(token: str) -> None:
        check(harness, token)

    run()


def test_structured_garbage_only_ever_raises_invalid_token(harness: Harness) -> None:
    @settings(max_examples=400, deadline=None)
    @given(token=structured_tokens(harness.settings.issuer))
    def run(token: str) -> None:
        check(harness, token)

    run()
