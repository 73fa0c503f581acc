"""``tokenbroker exchange`` run as a user runs it (``main([...])``) against a broker stand-in.

The stand-in answers like the broker (its real renderers) or with scripted failures and
records each request. ``main`` runs in a worker thread since it starts its own event loop,
while the stand-in serves on the test's loop. The real broker is in test_exchange_end_to_end.
"""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer
from tests.client.fakes import (
    AWS_VALUES,
    PLATFORM_TOKEN,
    BrokerStandIn,
    GitHubStandIn,
    Scripted,
    clear_client_environment,
    refusal,
    serve_broker_stand_in,
    serve_github_stand_in,
)

from tokenbroker.cli.main import main


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CI variables of the machine running the tests leak into them."""
    clear_client_environment(monkeypatch)


@pytest.fixture
async def broker(aiohttp_server: AiohttpServer) -> AsyncIterator[BrokerStandIn]:
    stand_in = await serve_broker_stand_in(aiohttp_server)
    yield stand_in
    stand_in.release.set()


@pytest.fixture
async def github(aiohttp_server: AiohttpServer) -> GitHubStandIn:
    return await serve_github_stand_in(aiohttp_server)


@pytest.fixture
def env0_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ENV0_OIDC_TOKEN", PLATFORM_TOKEN)
    return PLATFORM_TOKEN


def assert_no_token(text: str) -> None:
    for part in (PLATFORM_TOKEN, *PLATFORM_TOKEN.split(".")):
        assert part not in text


async def tokenbroker(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI; return (exit code, stdout, stderr), checking the token leaked nowhere."""
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    assert_no_token(out + err)
    return code, out, err


async def exchange(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn, *argv: str
) -> tuple[int, str, str]:
    return await tokenbroker(capsys, "exchange", "--broker", broker.url, *argv)


# --- formats and destinations -------------------------------------------------------------------


@pytest.mark.usefixtures("env0_token")
async def test_json_goes_to_stdout_by_default_and_stderr_names_the_source(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn
) -> None:
    code, out, err = await exchange(capsys, broker, "--credential", "prod-aws")
    assert code == 0
    assert json.loads(out)["values"] == AWS_VALUES
    assert "using the platform token from $ENV0_OIDC_TOKEN (env0)" in err
    request = broker.requests[0]
    assert request.authorization == f"Bearer {PLATFORM_TOKEN}"
    assert request.query == {"format": "json"}
    assert broker.credential_requested() == "prod-aws"


@pytest.mark.usefixtures("env0_token")
async def test_env_format_prints_key_value_lines(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn
) -> None:
    code, out, _ = await exchange(capsys, broker, "--format", "env")
    assert code == 0
    assert dict(line.split("=", 1) for line in out.splitlines()) == AWS_VALUES
    assert broker.credential_requested() is None


@pytest.mark.usefixtures("env0_token")
async def test_shell_format_prints_quoted_exports(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn
) -> None:
    code, out, _ = await exchange(capsys, broker, "--format", "shell")
    assert code == 0
    assert f"export AWS_ACCESS_KEY_ID='{AWS_VALUES['AWS_ACCESS_KEY_ID']}'" in out.splitlines()


@pytest.mark.usefixtures("env0_token")
async def test_aws_credential_process_stdout_is_only_the_json_document(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn
) -> None:
    code, out, err = await exchange(capsys, broker, "--format", "aws-credential-process")
    assert code == 0
    document = json.loads(out)
    assert document["Version"] == 1
    assert document["AccessKeyId"] == AWS_VALUES["AWS_ACCESS_KEY_ID"]
    assert "using the platform token" in err


@pytest.mark.usefixtures("env0_token")
@pytest.mark.parametrize("fmt", ["gcp-executable", "gcp-external-account"])
async def test_gcp_formats_are_passed_through_to_the_broker(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn, fmt: str
) -> None:
    code, out, _ = await exchange(capsys, broker, "--format", fmt)
    assert code == 0
    assert broker.requests[0].query == {"format": fmt}
    assert json.loads(out) == {"format": fmt}


@pytest.mark.usefixtures("env0_token")
async def test_output_writes_a_private_file_and_nothing_to_stdout(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn, tmp_path: Path
) -> None:
    path = tmp_path / "aws.env"
    code, out, err = await exchange(capsys, broker, "--format", "env", "--output", str(path))
    assert (code, out) == (0, "")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"AWS_SESSION_TOKEN={AWS_VALUES['AWS_SESSION_TOKEN']}" in path.read_text()
    assert f"wrote the credential to {path}" in err


@pytest.mark.usefixtures("env0_token")
async def test_append_env_adds_env_lines_to_github_env(
    capsys: pytest.CaptureFixture[str],
    broker: BrokerStandIn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    github_env = tmp_path / "github_env"
    github_env.write_text("EARLIER=1\n")
    monkeypatch.setenv("GITHUB_ENV", str(github_env))
    code, out, err = await exchange(capsys, broker, "--append-env")
    assert (code, out) == (0, "")
    assert broker.requests[0].query == {"format": "env"}
    lines = github_env.read_text().splitlines()
    assert lines[0] == "EARLIER=1"
    assert f"AWS_ACCESS_KEY_ID={AWS_VALUES['AWS_ACCESS_KEY_ID']}" in lines
    assert "appended the credential to $GITHUB_ENV" in err


@pytest.mark.usefixtures("env0_token")
async def test_append_env_prefers_env0_env_over_github_env(
    capsys: pytest.CaptureFixture[str],
    broker: BrokerStandIn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENV0_ENV", str(tmp_path / "env0_env"))
    monkeypatch.setenv("GITHUB_ENV", str(tmp_path / "github_env"))
    code, _, _ = await exchange(capsys, broker, "--append-env")
    assert code == 0
    assert (tmp_path / "env0_env").exists()
    assert not (tmp_path / "github_env").exists()
    assert stat.S_IMODE((tmp_path / "env0_env").stat().st_mode) == 0o600


@pytest.mark.usefixtures("env0_token")
async def test_append_env_writes_shell_exports_to_bash_env(
    capsys: pytest.CaptureFixture[str],
    broker: BrokerStandIn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bash_env = tmp_path / "bash_env"
    monkeypatch.setenv("BASH_ENV", str(bash_env))
    code, _, _ = await exchange(capsys, broker, "--append-env")
    assert code == 0
    assert broker.requests[0].query == {"format": "shell"}
    assert bash_env.read_text().startswith("export AWS_ACCESS_KEY_ID=")


async def test_the_broker_url_comes_from_tokenbroker_url(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENBROKER_URL", broker.url + "/")
    monkeypatch.setenv("CIRCLE_OIDC_TOKEN_V2", PLATFORM_TOKEN)
    code, _, err = await tokenbroker(capsys, "exchange")
    assert code == 0
    assert "$CIRCLE_OIDC_TOKEN_V2 (CircleCI)" in err
    assert len(broker.requests) == 1


async def test_a_token_file_is_sent_and_named_as_the_source(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn, tmp_path: Path
) -> None:
    path = tmp_path / "gitpod-token"
    path.write_text(PLATFORM_TOKEN + "\n")
    code, _, err = await exchange(capsys, broker, "--token-file", str(path))
    assert code == 0
    assert f"using the platform token from file {path}" in err
    assert broker.requests[0].authorization == f"Bearer {PLATFORM_TOKEN}"


async def test_on_github_actions_the_id_token_is_fetched_for_the_audience(
    capsys: pytest.CaptureFixture[str],
    broker: BrokerStandIn,
    github: GitHubStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", github.url)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", github.request_token)
    code, _, err = await exchange(capsys, broker, "--audience", "https://broker.example")
    assert code == 0
    assert github.requests[0].query["audience"] == "https://broker.example"
    assert broker.requests[0].authorization == f"Bearer {PLATFORM_TOKEN}"
    assert "GitHub Actions" in err
    assert github.request_token not in err


# --- retries through the CLI --------------------------------------------------------------------


@pytest.mark.usefixtures("env0_token")
async def test_a_429_then_success_is_retried_and_succeeds(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn
) -> None:
    broker.then(refusal(429, "rate_limited", "rate_limited", "slow down", retry_after="0"))
    code, out, err = await exchange(capsys, broker, "--format", "env")
    assert code == 0
    assert "AWS_ACCESS_KEY_ID=" in out
    assert "HTTP 429; retrying" in err
    assert len(broker.requests) == 2


# --- exit codes -------------------------------------------------------------------------------


@pytest.mark.usefixtures("env0_token")
async def test_no_broker_url_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await tokenbroker(capsys, "exchange")
    assert code == 2
    assert "pass --broker URL or set $TOKENBROKER_URL" in err


@pytest.mark.usefixtures("env0_token")
async def test_a_plain_http_broker_off_loopback_is_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = await tokenbroker(capsys, "exchange", "--broker", "http://broker.example")
    assert code == 2
    assert "must be https" in err


@pytest.mark.usefixtures("env0_token")
async def test_append_env_off_a_platform_is_exit_2(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn
) -> None:
    code, _, err = await exchange(capsys, broker, "--append-env")
    assert code == 2
    assert "use --output FILE" in err
    assert broker.requests == []


async def test_output_and_append_env_together_are_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        await tokenbroker(capsys, "exchange", "--output", "f", "--append-env")
    assert caught.value.code == 2


async def test_no_platform_token_is_exit_3_listing_where_it_looked(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn
) -> None:
    code, _, err = await exchange(capsys, broker)
    assert code == 3
    assert "$ENV0_OIDC_TOKEN (env0)" in err
    assert "$TOKENBROKER_PLATFORM_TOKEN" in err
    assert broker.requests == []


async def test_a_missing_token_file_is_exit_3(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn, tmp_path: Path
) -> None:
    code, _, err = await exchange(capsys, broker, "--token-file", str(tmp_path / "none"))
    assert code == 3
    assert "cannot read file" in err


@pytest.mark.usefixtures("env0_token")
@pytest.mark.parametrize(
    ("status", "error", "reason", "fix"),
    [
        (403, "access_denied", "credential_not_assigned", "pick an assigned credential"),
        (401, "invalid_token", "token_expired", "get a fresh one"),
        (400, "invalid_request", "credential_required", "name one with --credential"),
    ],
)
async def test_a_refusal_is_exit_4_with_cause_fix_and_request_id(
    capsys: pytest.CaptureFixture[str],
    broker: BrokerStandIn,
    status: int,
    error: str,
    reason: str,
    fix: str,
) -> None:
    broker.then(refusal(status, error, reason, "the broker's own words"))
    code, out, err = await exchange(capsys, broker, "--credential", "x")
    assert (code, out) == (4, "")
    assert f"HTTP {status} {error} ({reason}): the broker's own words [request id req-0123]" in err
    fix_line = err.split("\nfix: ", 1)[1]
    assert fix in fix_line
    assert len(broker.requests) == 1


@pytest.mark.usefixtures("env0_token")
async def test_a_refusal_without_the_brokers_json_is_still_exit_4(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn
) -> None:
    broker.then(Scripted(403, "<html>Forbidden by proxy</html>"))
    code, _, err = await exchange(capsys, broker)
    assert code == 4
    assert "HTTP 403" in err


@pytest.mark.usefixtures("env0_token")
async def test_a_redirect_is_not_followed(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn
) -> None:
    broker.then(Scripted(307, "", {"Location": "https://elsewhere.example/v1/exchange"}))
    code, _, err = await exchange(capsys, broker)
    assert code == 2
    assert "redirects are not followed" in err
    assert len(broker.requests) == 1


@pytest.mark.usefixtures("env0_token")
async def test_a_broker_failing_until_the_deadline_is_exit_5(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn
) -> None:
    broker.then(*[refusal(502, "upstream_error", "backend_unreachable", "cannot reach Vault")] * 20)
    code, _, err = await exchange(capsys, broker, "--timeout", "1")
    assert code == 5
    assert "HTTP 502 upstream_error (backend_unreachable): cannot reach Vault" in err
    assert "giving up" in err


@pytest.mark.usefixtures("env0_token")
async def test_a_broker_nobody_listens_at_is_exit_5(
    capsys: pytest.CaptureFixture[str], unused_tcp_port: int
) -> None:
    code, _, err = await tokenbroker(
        capsys, "exchange", "--broker", f"http://127.0.0.1:{unused_tcp_port}", "--timeout", "1"
    )
    assert code == 5
    assert "cannot reach the broker: cannot connect" in err


@pytest.mark.usefixtures("env0_token")
async def test_a_hung_broker_is_abandoned_at_the_deadline_with_exit_5(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn
) -> None:
    broker.then(Scripted(hang=True))
    started = time.monotonic()
    code, _, err = await exchange(capsys, broker, "--timeout", "0.5")
    assert code == 5
    assert "no answer in time" in err
    assert time.monotonic() - started < 10


# --- dry run ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("env0_token")
async def test_dry_run_prints_the_trace_and_is_exit_4_when_it_would_be_refused(
    capsys: pytest.CaptureFixture[str], broker: BrokerStandIn
) -> None:
    trace = {
        "allowed": False,
        "credential": "prod-aws",
        "type": "aws_oidc",
        "error": "access_denied",
        "reason": "bound_claims_mismatch",
        "error_description": "claim 'ref' does not match",
        "checks": [
            {"check": "token", "ok": True, "detail": "valid"},
            {
                "check": "bound_claims",
                "ok": False,
                "detail": "a bound claim does not match",
                "claims": [
                    {"claim": "ref", "expected": ["main"], "actual": "dev", "matched": False}
                ],
            },
        ],
    }
    broker.then(Scripted(200, trace))
    code, out, _ = await exchange(capsys, broker, "--dry-run", "--credential", "prod-aws")
    assert code == 4
    assert broker.requests[0].query == {"dry_run": "true"}
    assert "  ✗ bound_claims  a bound claim does not match" in out
    assert "      ✗ ref  expected [main], actual dev" in out


@pytest.mark.usefixtures("env0_token")
async def test_dry_run_allowed_is_exit_0_and_writes_no_credential(
    capsys: pytest.CaptureFixture[str],
    broker: BrokerStandIn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB_ENV", str(tmp_path / "github_env"))
    code, out, _ = await exchange(capsys, broker, "--dry-run", "--append-env")
    assert code == 0
    assert out.startswith("dry run: the credential would be ISSUED")
    assert not (tmp_path / "github_env").exists()


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["exchange", "--help"])
    out = capsys.readouterr().out
    for line in ("3  no platform token", "4  denied", "5  broker or backend unavailable"):
        assert line in out
