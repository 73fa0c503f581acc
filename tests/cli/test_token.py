"""``tokenbroker token``: mint, decode (unverified and verified) and serve-issuer."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from bench.procs import free_port
from tests.support.platform import ServedDevIssuer

from tokenbroker.cli.main import main
from tokenbroker.cli.token import parse_claim


def claims_of(token: str) -> dict[str, object]:
    """The payload of a JWT."""
    part = token.split(".")[1]
    data: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


def mint(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``token mint`` and return the printed token."""
    assert main(["token", "mint", *args]) == 0
    return capsys.readouterr().out.strip()


def test_mint_prints_a_signed_token_of_the_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = mint(
        capsys,
        "--profile", "gitpod", "--org", "o-1", "--project", "p-1",
        "--audience", "my-broker", "--keys-dir", str(tmp_path),
        "--issuer-base", "http://127.0.0.1:9999",
    )  # fmt: skip
    claims = claims_of(token)
    assert claims["iss"] == "http://127.0.0.1:9999/gitpod"
    assert claims["aud"] == "my-broker"
    assert str(claims["sub"]).startswith("org:o-1/prj:p-1/env:")
    assert (tmp_path / "gitpod.jwks.json").exists()


def test_mint_prints_a_gitlab_shaped_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = mint(
        capsys,
        "--profile", "gitlab", "--org", "4211", "--project", "4212",
        "--keys-dir", str(tmp_path), "--issuer-base", "http://127.0.0.1:9999",
    )  # fmt: skip
    claims = claims_of(token)
    assert claims["iss"] == "http://127.0.0.1:9999/gitlab"
    assert (claims["namespace_id"], claims["project_id"]) == ("4211", "4212")
    assert str(claims["sub"]).startswith("project_path:")
    assert (tmp_path / "gitlab.jwks.json").exists()


def test_mint_claims_are_parsed_as_json_when_they_are_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = mint(
        capsys,
        "--profile", "circleci", "--org", "o", "--project", "p", "--keys-dir", str(tmp_path),
        "--claim", "oidc.circleci.com/ssh-rerun=true",
        "--claim", "note=hello world",
        "--claim", "count=3",
        "--claim", 'tags=["a","b"]',
        "--lifetime", "120",
    )  # fmt: skip
    claims = claims_of(token)
    assert claims["oidc.circleci.com/ssh-rerun"] is True
    assert claims["note"] == "hello world"
    assert claims["count"] == 3
    assert claims["tags"] == ["a", "b"]
    assert claims["exp"] == claims["iat"] + 120  # type: ignore[operator]


def test_a_claim_without_equals_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["token", "mint", "--profile", "env0", "--org", "o", "--project", "p",
                 "--claim", "novalue"])  # fmt: skip
    assert code != 0
    assert "NAME=VALUE" in capsys.readouterr().err


def test_parse_claim_keeps_non_json_values_as_strings() -> None:
    assert parse_claim("a=b=c") == ("a", "b=c")
    assert parse_claim("a=null") == ("a", None)


def test_decode_prints_header_and_claims_and_says_it_did_not_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = mint(capsys, "--profile", "env0", "--org", "o", "--project", "p",
                 "--keys-dir", str(tmp_path))  # fmt: skip
    assert main(["token", "decode", token]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["verified"] is False
    assert document["header"]["alg"] == "RS256"
    assert document["claims"]["organizationId"] == "o"
    assert "NOT verified" in captured.err


def test_decode_of_a_non_jwt_fails_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "decode", "not-a-jwt"]) == 1
    assert capsys.readouterr().err.strip() == (
        "tokenbroker: not a JWT: expected three dot-separated segments"
    )


async def test_decode_verify_checks_the_signature_against_the_jwks(
    dev_issuer: ServedDevIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    token = dev_issuer.mint("github", org="65", project="74")
    jwks_uri = dev_issuer.jwks_url("github")
    args = ["token", "decode", token, "--verify", "--jwks-uri", jwks_uri]
    assert await asyncio.to_thread(main, args) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True


async def test_decode_verify_refuses_a_tampered_token(
    dev_issuer: ServedDevIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    header, payload, signature = dev_issuer.mint("github", org="o", project="r").split(".")
    claims = claims_of(f"{header}.{payload}.{signature}")
    claims["repository"] = "o/other"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = f"{header}.{forged_payload}.{signature}"
    args = ["token", "decode", forged, "--verify", "--jwks-uri", dev_issuer.jwks_url("github")]
    assert await asyncio.to_thread(main, args) == 1
    assert "signature_invalid" in capsys.readouterr().err


async def test_serve_issuer_serves_discovery_for_tokens_minted_with_the_same_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    keys_dir = tmp_path / "keys"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokenbroker", "token", "serve-issuer",
        "--port", str(port), "--keys-dir", str(keys_dir),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        token = mint(capsys, "--profile", "env0", "--org", "o", "--project", "p",
                     "--keys-dir", str(keys_dir), "--issuer-base", base)  # fmt: skip
        document = await _get_when_up(f"{base}/env0/.well-known/openid-configuration")
        assert document["issuer"] == f"{base}/env0"
        args = ["token", "decode", token, "--verify", "--jwks-uri", str(document["jwks_uri"])]
        assert await asyncio.to_thread(main, args) == 0
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)


async def _get_when_up(url: str) -> dict[str, object]:
    # The server process needs a moment to bind; poll until it answers or 20 s pass.
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as response:
                    document: dict[str, object] = await response.json()
                    return document
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
