"""``tokenbroker admin``: the CLI against a real broker's admin API on a real SQLite store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from tokenbroker.cli import admin as admin_cli
from tokenbroker.cli.common import CliError
from tokenbroker.cli.main import build_parser, main
from tokenbroker.config import parse_settings
from tokenbroker.policy.models import AuditEvent
from tokenbroker.store import Store
from tokenbroker.web import keys
from tokenbroker.web.admin.auth import admin_token_digest
from tokenbroker.web.app import create_app

TOKEN = "cli-admin-token-0123456789abcdef"


@pytest.fixture
async def broker(aiohttp_server: AiohttpServer, tmp_path: Path) -> TestServer:
    """A running broker with one admin token and one trusted issuer."""
    settings = parse_settings(
        {
            # The backends and issuers of this test listen on loopback.
            "security": {"allow_private_backends": True},
            "server": {"data_dir": str(tmp_path)},
            "admin": {"tokens": [admin_token_digest(TOKEN)]},
            "issuers": [
                {
                    "name": "env0",
                    "issuer": "http://127.0.0.1:9/env0",
                    "audiences": ["https://prod.env0.com"],
                    "profile": "env0",
                }
            ],
        },
        {},
    )
    return await aiohttp_server(create_app(settings))


@pytest.fixture(autouse=True)
def admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The admin token in the default environment variable."""
    monkeypatch.setenv("TOKENBROKER_ADMIN_TOKEN", TOKEN)


def store_of(broker: TestServer) -> Store:
    return broker.app[keys.STORE]


async def cli(broker: TestServer, *argv: str) -> str:
    """Run ``tokenbroker admin --url <broker> <argv>`` in-process; what it would print."""
    base = str(broker.make_url("/"))
    args = build_parser().parse_args(["admin", "--url", base, *argv])
    return await admin_cli.execute(args)


async def arrange(broker: TestServer) -> None:
    """Organization acme with credential prod-vault."""
    await cli(broker, "orgs", "create", "acme", "--issuer", "env0", "--platform-org-id", "o-1")
    await cli(
        broker,
        "credentials", "create", "prod-vault", "--org", "acme", "--type", "vault_oidc",
        "--setting", "address=https://vault.example.com", "--setting", "role=ci",
    )  # fmt: skip


async def test_orgs_create_list_show_update_delete(broker: TestServer) -> None:
    created = await cli(
        broker, "orgs", "create", "acme", "--issuer", "env0", "--platform-org-id", "o-1"
    )
    assert created.splitlines() == ["name             acme", "issuer           env0",
                                    "platform_org_id  o-1"]  # fmt: skip
    await cli(broker, "orgs", "create", "b", "--issuer", "env0", "--platform-org-id", "o-22")
    listed = await cli(broker, "orgs", "list")
    assert listed.splitlines() == [
        "NAME  ISSUER  PLATFORM ORG ID",
        "acme  env0    o-1",
        "b     env0    o-22",
    ]
    updated = await cli(broker, "orgs", "update", "acme", "--platform-org-id", "o-9")
    assert "platform_org_id  o-9" in updated
    assert "o-9" in await cli(broker, "orgs", "show", "acme")
    assert await cli(broker, "orgs", "delete", "b") == "deleted organization b"
    assert [o.name for o in await store_of(broker).policy.list_organizations()] == ["acme"]


async def test_credentials_create_show_update_list_delete(broker: TestServer) -> None:
    await cli(broker, "orgs", "create", "acme", "--issuer", "env0", "--platform-org-id", "o-1")
    shown = await cli(
        broker,
        "credentials", "create", "prod-vault", "--org", "acme", "--type", "vault_oidc",
        "--setting", "address=https://vault.example.com", "--setting", "role=ci",
        "--setting-json", "max_retries=3",
        "--bound-claim", "projectId=p1",
        "--bound-claim", "/deployer/email=*@acme.com", "--bound-claim", "/deployer/email=ops@x",
    )  # fmt: skip
    lines = shown.splitlines()
    # Keys are padded to the longest one, then two spaces.
    assert "bound_claims./deployer/email  *@acme.com, ops@x" in lines
    assert "settings.role" + " " * 17 + "ci" in lines
    values = dict(line.split(None, 1) for line in lines)
    assert values["settings.max_retries"] == "3"
    assert values["bound_claims.projectId"] == "p1"
    assert values["audience"] == "-"
    stored = await store_of(broker).policy.get_credential("acme", "prod-vault")
    assert dict(stored.bound_claims) == {
        "projectId": "p1",
        "/deployer/email": ["*@acme.com", "ops@x"],
    }
    await cli(
        broker,
        "credentials", "update", "prod-vault", "--org", "acme",
        "--setting", "role=deployer", "--unset-bound-claim", "projectId",
        "--token", "mint", "--audience", "vault",
    )  # fmt: skip
    stored = await store_of(broker).policy.get_credential("acme", "prod-vault")
    assert stored.settings["role"] == "deployer"
    assert stored.settings["address"] == "https://vault.example.com"
    assert dict(stored.bound_claims) == {"/deployer/email": ["*@acme.com", "ops@x"]}
    assert (stored.token, stored.audience) == ("mint", "vault")
    listed = await cli(broker, "credentials", "list", "--org", "acme")
    assert listed.splitlines() == [
        "NAME        TYPE        TOKEN  AUDIENCE  BOUND CLAIMS",
        "prod-vault  vault_oidc  mint   vault     /deployer/email",
    ]
    deleted = await cli(broker, "credentials", "delete", "prod-vault", "--org", "acme")
    assert deleted == "deleted credential prod-vault of acme"
    assert await store_of(broker).policy.list_credentials("acme") == []


async def test_assign_list_and_unassign_a_project_with_a_slash(broker: TestServer) -> None:
    await arrange(broker)
    said = await cli(broker, "assign", "acme", "acme/app", "prod-vault")
    assert said == "assigned prod-vault to project acme/app of acme"
    await cli(broker, "assign", "acme", "p2", "prod-vault")
    assert (await cli(broker, "assignments", "acme")).splitlines() == [
        "PROJECT   CREDENTIAL",
        "acme/app  prod-vault",
        "p2        prod-vault",
    ]
    only = await cli(broker, "assignments", "acme", "--project", "acme/app")
    assert only.splitlines()[1:] == ["acme/app  prod-vault"]
    await cli(broker, "unassign", "acme", "acme/app", "prod-vault")
    assert [a.project for a in await store_of(broker).policy.list_assignments("acme")] == ["p2"]


async def test_audit_pages_with_filters_and_a_cursor(broker: TestServer) -> None:
    for n in range(3):
        await store_of(broker).audit.record(
            AuditEvent(
                time=datetime(2026, 11, 1, 12, n, tzinfo=UTC),
                request_id=f"req-{n}",
                outcome="denied" if n else "success",
                reason="bound_claims_mismatch" if n else "issued",
                latency_ms=1.0,
                organization="acme",
                project="p1",
                subject="evil\x1b[31msubject",
            )
        )
    page = await cli(broker, "audit", "--outcome", "denied", "--limit", "1")
    lines = page.splitlines()
    assert lines[0].split() == ["ID", "TIME", "OUTCOME", "REASON", "ORGANIZATION", "PROJECT",
                                "CREDENTIAL", "SUBJECT", "REQUEST", "ID"]  # fmt: skip
    assert "req-2" in lines[1]
    assert "2026-11-01T12:02:00Z" in lines[1]
    # A control character from a token never reaches the terminal raw.
    assert "\x1b" not in page
    assert "evil\\x1b[31msubject" in lines[1]
    assert lines[-1].startswith("(more: repeat with --before ")
    cursor = lines[-1].split()[-1].rstrip(")")
    rest = await cli(broker, "audit", "--outcome", "denied", "--before", cursor)
    assert "req-1" in rest
    assert "req-2" not in rest
    assert "(more" not in rest


async def test_json_prints_the_api_answer_before_or_after_the_command(
    broker: TestServer,
) -> None:
    await arrange(broker)
    before = json.loads(await cli(broker, "--json", "credentials", "show", "prod-vault",
                                  "--org", "acme"))  # fmt: skip
    after = json.loads(await cli(broker, "credentials", "show", "prod-vault", "--org", "acme",
                                 "--json"))  # fmt: skip
    assert before == after
    assert before["name"] == "prod-vault"
    assert before["settings"]["role"] == "ci"
    await cli(broker, "assign", "acme", "p1", "prod-vault")
    # An answer without a body prints nothing in JSON mode.
    assert await cli(broker, "--json", "unassign", "acme", "p1", "prod-vault") == ""


async def test_a_validation_error_prints_the_description_and_each_field(
    broker: TestServer,
) -> None:
    await cli(broker, "orgs", "create", "acme", "--issuer", "env0", "--platform-org-id", "o-1")
    with pytest.raises(CliError) as caught:
        await cli(
            broker,
            "credentials", "create", "v", "--org", "acme", "--type", "vault_oidc",
            "--setting", "address=http://vault.example.com",
        )  # fmt: skip
    message = str(caught.value)
    assert "does not validate" in message
    assert "\n  settings.address: " in message
    assert "\n  settings.role: " in message
    assert caught.value.exit_code != 0


async def test_not_found_and_conflict_print_the_brokers_words(broker: TestServer) -> None:
    await arrange(broker)
    with pytest.raises(CliError, match="nope"):
        await cli(broker, "orgs", "show", "nope")
    with pytest.raises(CliError, match="already exists"):
        await cli(broker, "orgs", "create", "acme", "--issuer", "env0", "--platform-org-id", "x")


async def test_a_wrong_admin_token_is_reported(
    broker: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTHER_TOKEN", "wrong-token")
    with pytest.raises(CliError, match="admin token is not valid") as caught:
        await cli(broker, "--token-env", "OTHER_TOKEN", "orgs", "list")
    assert "wrong-token" not in str(caught.value)


async def test_a_missing_token_variable_is_reported_before_any_request(
    broker: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKENBROKER_ADMIN_TOKEN")
    with pytest.raises(CliError, match=r"\$TOKENBROKER_ADMIN_TOKEN"):
        await cli(broker, "orgs", "list")


async def test_plain_http_to_a_remote_host_is_refused() -> None:
    args = build_parser().parse_args(["admin", "--url", "http://broker.example.com", "orgs",
                                      "list"])  # fmt: skip
    with pytest.raises(CliError, match="loopback"):
        await admin_cli.execute(args)


def test_an_unreachable_broker_exits_non_zero_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["admin", "--url", "http://127.0.0.1:9", "orgs", "list"])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot reach the broker at http://127.0.0.1:9" in err
    assert TOKEN not in err


def test_the_default_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENBROKER_URL", "https://broker.example.com")
    args = build_parser().parse_args(["admin", "orgs", "list"])
    assert args.url == "https://broker.example.com"
    assert args.token_env == "TOKENBROKER_ADMIN_TOKEN"
    assert args.json is False


def test_a_setting_without_an_equals_sign_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(
            ["admin", "credentials", "create", "x", "--org", "a", "--type", "t", "--setting", "k"]
        )
    assert caught.value.code == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_paths_encode_every_segment_whole() -> None:
    call = admin_cli.ApiCall(
        "PUT",
        ("organizations", "acme", "projects", "owner/repo ?#%", "credentials", "c"),
        admin_cli.render_assignments,
        query={"project": "a/b&c"},
    )
    url = call.url("http://127.0.0.1:8400/")
    assert url.raw_path == (
        "/v1/admin/organizations/acme/projects/owner%2Frepo%20%3F%23%25/credentials/c"
    )
    assert url.query["project"] == "a/b&c"


def test_repeated_bound_claims_become_a_list() -> None:
    pairs = [("a", "1"), ("b", "2"), ("a", "3")]
    assert admin_cli.bound_claims_from(pairs) == {"a": ["1", "3"], "b": "2"}


def test_tables_align_columns_and_show_missing_values_as_dashes() -> None:
    table = admin_cli.format_table(("A", "LONGER"), [("xyz", None), ("q", ["1", "2"])])
    assert table.splitlines() == ["A    LONGER", "xyz  -", "q    1, 2"]


def test_tokens_hash_prints_a_new_token_once_with_its_sha256_form(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # It needs no broker and no admin token.
    monkeypatch.delenv("TOKENBROKER_ADMIN_TOKEN")
    assert main(["admin", "tokens", "hash"]) == 0
    first = capsys.readouterr().out
    assert main(["admin", "tokens", "hash"]) == 0
    second = capsys.readouterr().out
    lines = dict(line.split(":  ", 1) for line in first.splitlines() if ":  " in line)
    token, digest = lines["token"].strip(), lines["hash"].strip()
    assert token.startswith(admin_cli.ADMIN_TOKEN_PREFIX)
    assert len(token) > 40
    assert digest == admin_token_digest(token)
    assert first.count(token) == 1
    assert token not in second
    # The printed hash is accepted where the config wants one.
    settings = parse_settings(
        {
            "admin": {
                "org_tokens": [{"name": "team-a", "hash": digest, "organizations": ["team-a"]}]
            }
        },
        {},
    )
    assert settings.admin.org_tokens[0].hash == digest


SCOPED_TOKEN = "cli-scoped-admin-token-0123456789"


@pytest.fixture
async def scoped_broker(aiohttp_server: AiohttpServer, tmp_path: Path) -> TestServer:
    """A broker with a global admin and an admin of ``acme`` only, who is named ``acme-team``."""
    settings = parse_settings(
        {
            "server": {"data_dir": str(tmp_path)},
            "admin": {
                "tokens": [admin_token_digest(TOKEN)],
                "org_tokens": [
                    {
                        "name": "acme-team",
                        "hash": admin_token_digest(SCOPED_TOKEN),
                        "organizations": ["acme"],
                    }
                ],
            },
            "issuers": [
                {
                    "name": "env0",
                    "issuer": "https://login.example.test/env0",
                    "audiences": ["https://prod.env0.com"],
                    "profile": "env0",
                }
            ],
        },
        {},
    )
    return await aiohttp_server(create_app(settings))


async def test_an_org_scoped_token_sees_only_its_organizations_through_the_cli(
    scoped_broker: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await cli(scoped_broker, "orgs", "create", "acme", "--issuer", "env0", "--platform-org-id", "1")
    await cli(scoped_broker, "orgs", "create", "beta", "--issuer", "env0", "--platform-org-id", "2")
    monkeypatch.setenv("TOKENBROKER_ADMIN_TOKEN", SCOPED_TOKEN)
    listed = await cli(scoped_broker, "orgs", "list")
    assert [line.split()[0] for line in listed.splitlines()[1:]] == ["acme"]
    with pytest.raises(CliError, match="no organization named 'beta'"):
        await cli(scoped_broker, "orgs", "show", "beta")
    with pytest.raises(CliError, match="no organization named 'beta'"):
        await cli(scoped_broker, "orgs", "delete", "beta")
    await cli(scoped_broker, "orgs", "update", "acme", "--platform-org-id", "9")
    [event] = [e for e in await store_of(scoped_broker).audit.events() if e.actor == "acme-team"]
    assert event.kind == "admin"
    assert event.reason == "organization_updated"
    assert event.detail == {"object": "organization", "name": "acme", "fields": ["platform_org_id"]}
