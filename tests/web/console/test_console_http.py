"""The console over HTTP (no browser): sessions, cookies, CSRF, headers, scope, audit."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from tests.web.admin.conftest import ADMIN_TOKEN, admin_settings_dict

from tokenbroker.clock import FrozenClock
from tokenbroker.config import parse_settings
from tokenbroker.store.policy import Policy
from tokenbroker.web import keys
from tokenbroker.web.admin.auth import admin_token_digest
from tokenbroker.web.app import create_app

ACME_TOKEN = "console-acme-admin-token-0123456789"
Client = TestClient[web.Request, web.Application]
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def clock() -> FrozenClock:
    """The app's clock, moved by the idle-timeout test."""
    return FrozenClock(1_800_000_000.0)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path, clock: FrozenClock) -> Client:
    """An app with a global admin and an admin of ``acme`` only; orgs acme and beta exist."""
    raw = admin_settings_dict(tmp_path)
    raw["admin"] = {
        "tokens": [admin_token_digest(ADMIN_TOKEN)],
        "org_tokens": [
            {"name": "acme-team", "hash": admin_token_digest(ACME_TOKEN), "organizations": ["acme"]}
        ],
        "session_idle_seconds": 600,
        "sign_in_burst": 3,
        "sign_in_failures_per_minute": 1,
    }
    app = create_app(parse_settings(raw, {}), clock=clock)
    client = await aiohttp_client(app)
    policy = app[keys.STORE].policy
    await policy.create_organization("acme", "env0", "org-acme")
    await policy.create_organization("beta", "env0", "org-beta")
    await create_vault(policy, "beta", "beta-vault")
    return client


async def create_vault(policy: Policy, organization: str, name: str) -> None:
    """A Vault credential at an address the console never calls."""
    await policy.create_credential(
        organization,
        name,
        "vault_oidc",
        settings={"address": "https://vault.example.com", "role": "ci"},
    )


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found, html
    return found.group(1)


async def sign_in(client: Client, token: str = ADMIN_TOKEN) -> str:
    """Sign in through the form; the session's CSRF token."""
    form = await client.get("/console/sign-in")
    response = await client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(await form.text()), "token": token},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    page = await client.get("/console/organizations")
    assert page.status == 200
    return csrf_of(await page.text())


async def test_pages_need_a_session_and_send_the_browser_to_sign_in(client: Client) -> None:
    response = await client.get("/console/organizations", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/console/sign-in"
    root = await client.get("/console", allow_redirects=False)
    assert root.headers["Location"] == "/console/"


async def test_the_session_cookie_is_httponly_strict_and_scoped_to_the_console(
    client: Client,
) -> None:
    form = await client.get("/console/sign-in")
    response = await client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(await form.text()), "token": ADMIN_TOKEN},
        allow_redirects=False,
    )
    cookie = next(
        v for v in response.headers.getall("Set-Cookie") if v.startswith("tokenbroker_console=")
    )
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "samesite"} <= attributes
    assert "Path=/console" in cookie
    assert "SameSite=Strict" in cookie
    assert "secure" not in attributes  # public_url is not https here
    assert ADMIN_TOKEN not in cookie


async def test_every_console_response_has_the_security_headers(client: Client) -> None:
    for path in (
        "/console/sign-in",
        "/console/organizations",
        "/console/static/console.css",
        "/console/nothing-here",
    ):
        response = await client.get(path, allow_redirects=False)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert "'unsafe-inline'" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_pages_have_no_inline_script_or_style(client: Client) -> None:
    await sign_in(client)
    for path in (
        "/console/organizations",
        "/console/organizations/acme",
        "/console/organizations/acme/new-credential?type=vault_oidc",
        "/console/audit",
        "/console/explain",
        "/console/keys",
        "/console/leases",
    ):
        html = await (await client.get(path)).text()
        assert "<script>" not in html
        assert "style=" not in html
        assert "<style" not in html
        assert html.count("<h1>") == 1, path


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    client: Client,
) -> None:
    csrf = await sign_in(client)
    for data in ({}, {"csrf": "forged"}, {"csrf": csrf[:-1]}):
        response = await client.post(
            "/console/organizations",
            data={**data, "name": "evil", "issuer": "env0", "platform_org_id": "x"},
        )
        assert response.status == 403
    orgs = await client.server.app[keys.STORE].policy.list_organizations()
    assert "evil" not in [o.name for o in orgs]
    ok = await client.post(
        "/console/organizations",
        data={"csrf": csrf, "name": "gamma", "issuer": "env0", "platform_org_id": "g"},
        allow_redirects=False,
    )
    assert ok.status == 303


async def test_a_sign_in_without_the_forms_token_is_refused(client: Client) -> None:
    response = await client.post(
        "/console/sign-in", data={"token": ADMIN_TOKEN}, allow_redirects=False
    )
    assert response.status == 403
    assert "tokenbroker_console=" not in response.headers.get("Set-Cookie", "")


async def test_a_failed_sign_in_is_audited_without_the_token_and_then_rate_limited(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        form = await client.get("/console/sign-in")
        response = await client.post(
            "/console/sign-in", data={"csrf": csrf_of(await form.text()), "token": "guess"}
        )
        assert response.status == 401
    form = await client.get("/console/sign-in")
    limited = await client.post(
        "/console/sign-in", data={"csrf": csrf_of(await form.text()), "token": ADMIN_TOKEN}
    )
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) >= 1
    events = await client.server.app[keys.STORE].audit.events()
    failed = [e for e in events if e.reason == "console_sign_in_failed"]
    assert len(failed) == 3
    assert {(e.kind, e.outcome, e.actor) for e in failed} == {("admin", "denied", None)}
    assert all("guess" not in repr(e) for e in events)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "console_sign_in_failed" in logged
    assert "guess" not in logged
    assert ADMIN_TOKEN not in logged


async def test_an_idle_session_ends(client: Client, clock: FrozenClock) -> None:
    await sign_in(client)
    clock.advance(599)
    assert (await client.get("/console/audit", allow_redirects=False)).status == 200
    clock.advance(599)
    assert (await client.get("/console/audit", allow_redirects=False)).status == 200
    clock.advance(601)
    response = await client.get("/console/audit", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/console/sign-in")


async def test_sign_out_ends_the_session(client: Client) -> None:
    csrf = await sign_in(client)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/console/"))
    response = await client.post("/console/sign-out", data={"csrf": csrf}, allow_redirects=False)
    assert response.status == 303
    client.session.cookie_jar.update_cookies(cookie)  # the old cookie, presented again
    again = await client.get("/console/organizations", allow_redirects=False)
    assert again.status == 303


async def test_an_org_admin_sees_nothing_of_another_organization(client: Client) -> None:
    await sign_in(client, ACME_TOKEN)
    listing = await (await client.get("/console/organizations")).text()
    assert "acme" in listing
    assert "beta" not in listing
    assert "Signing keys" not in listing
    for path in (
        "/console/organizations/beta",
        "/console/organizations/beta/credentials/beta-vault",
        "/console/organizations/beta/projects/p1",
        "/console/keys",
        "/console/organizations/beta/new-credential?type=vault_oidc",
    ):
        response = await client.get(path)
        assert response.status == 404, path
        assert "beta-vault" not in await response.text()
    audit = await (await client.get("/console/audit")).text()
    assert "beta" not in audit.replace("beta-vault", "")


async def test_a_credential_form_shows_the_apis_errors_next_to_their_fields(
    client: Client,
) -> None:
    csrf = await sign_in(client)
    response = await client.post(
        "/console/organizations/acme/new-credential?type=vault_oidc",
        data={
            "csrf": csrf,
            "name": "v",
            "token": "passthrough",
            "settings.address": "not a url",
            "settings.role": "bad role!",
            "settings.max_retries": "many",
        },
    )
    assert response.status == 422
    html = await response.text()
    for name in ("settings-address", "settings-role", "settings-max-retries"):
        assert f'id="f-{name}-error"' in html, name
    assert 'aria-invalid="true"' in html
    assert "a Vault role name is 1-256 letters" in html


async def test_the_session_cookie_is_secure_when_the_broker_is_served_over_https(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    raw = admin_settings_dict(tmp_path)
    raw["server"] = {"data_dir": str(tmp_path), "public_url": "https://broker.example.com"}
    client = await aiohttp_client(create_app(parse_settings(raw, {})))
    form = await client.get("/console/sign-in")
    sign_in_cookie = form.headers["Set-Cookie"]
    assert "Secure" in sign_in_cookie
    # The test client speaks http, so it keeps Secure cookies to itself: sent by hand here.
    response = await client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(await form.text()), "token": ADMIN_TOKEN},
        headers={"Cookie": sign_in_cookie.split(";", 1)[0]},
        allow_redirects=False,
    )
    cookie = next(
        v for v in response.headers.getall("Set-Cookie") if v.startswith("tokenbroker_console=")
    )
    assert "Secure" in cookie


async def test_a_credential_is_edited_from_its_current_values(
    client: Client,
) -> None:
    csrf = await sign_in(client)
    policy = client.server.app[keys.STORE].policy
    await policy.create_credential(
        "acme",
        "v",
        "vault_oidc",
        settings={"address": "https://vault.example.com", "role": "ci", "namespace": "team-a"},
        bound_claims={"environmentId": ["prod-*", "stage"], "apiKeyType": "oidc"},
    )
    form = await (await client.get("/console/organizations/acme/credentials/v")).text()
    assert 'value="https://vault.example.com"' in form
    assert 'value="team-a"' in form
    assert form.count('name="claim" value="environmentId"') == 2
    response = await client.post(
        "/console/organizations/acme/credentials/v",
        data=[
            ("csrf", csrf),
            ("token", "passthrough"),
            ("audience", ""),
            ("settings.address", "https://vault2.example.com"),
            ("settings.role", "ci"),
            ("settings.namespace", ""),
            ("settings.tls_verify", "true"),
            ("claim", "environmentId"),
            ("claim_value", "prod-*"),
            ("claim", ""),
            ("claim_value", ""),
        ],
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    saved = await policy.get_credential("acme", "v")
    assert saved.settings["address"] == "https://vault2.example.com"
    assert saved.settings.get("namespace") is None  # emptied: back to its default
    assert dict(saved.bound_claims) == {"environmentId": "prod-*"}
    [event] = [
        e
        for e in await client.server.app[keys.STORE].audit.events()
        if e.reason == "credential_updated"
    ]
    assert event.actor == "admin"
    assert event.detail is not None
    assert "bound_claims.apiKeyType" in event.detail["fields"]  # type: ignore[operator]


async def test_deleting_a_credential_asks_first_naming_its_projects(client: Client) -> None:
    csrf = await sign_in(client)
    policy = client.server.app[keys.STORE].policy
    await create_vault(policy, "acme", "v")
    await policy.assign("acme", "project-one", "v")
    await policy.assign("acme", "owner/repo", "v")
    confirm = await (await client.get("/console/organizations/acme/credentials/v/delete")).text()
    assert "project-one" in confirm
    assert "owner/repo" in confirm
    assert await policy.get_credential("acme", "v")  # asking deleted nothing
    response = await client.post(
        "/console/organizations/acme/credentials/v/delete",
        data={"csrf": csrf},
        allow_redirects=False,
    )
    assert response.status == 303
    assert [c.name for c in await policy.list_credentials("acme")] == []


async def test_a_project_id_with_a_slash_is_one_path_segment(client: Client) -> None:
    csrf = await sign_in(client)
    policy = client.server.app[keys.STORE].policy
    await create_vault(policy, "acme", "v")
    opened = await client.get(
        "/console/organizations/acme/project?project=owner/repo", allow_redirects=False
    )
    assert opened.headers["Location"] == "/console/organizations/acme/projects/owner%2Frepo"
    response = await client.post(
        "/console/organizations/acme/projects/owner%2Frepo/assign",
        data={"csrf": csrf, "credential": "v"},
        allow_redirects=False,
    )
    assert response.status == 303
    assigned = await policy.list_assignments("acme", "owner/repo")
    assert [a.credential for a in assigned] == ["v"]
