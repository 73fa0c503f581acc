"""Console page of the broker's signing keys: list, rotate with a confirmation."""

from __future__ import annotations

from aiohttp import web

from tokenbroker.web import keys
from tokenbroker.web.console.activity import when
from tokenbroker.web.console.context import actions, flash, redirect, viewer
from tokenbroker.web.console.html import join, render
from tokenbroker.web.console.layout import badge, code, page, post_button, section, table, url


async def signing_keys(request: web.Request) -> web.Response:
    """The keys the broker's issuer publishes (global admins only)."""
    listed = actions(request).signing_keys()
    rows = [
        (
            code(k.kid),
            k.algorithm,
            badge(k.state, "ok" if k.state == "active" else "muted"),
            when(k.created_at),
            when(k.retired_at) if k.retired_at else "",
        )
        for k in listed
    ]
    retire = request.config_dict[keys.SETTINGS].signing.retire_after_seconds
    body = join(
        [
            section(
                "Published keys",
                join(
                    [
                        render(
                            '<p class="hint">Tokens the broker mints are signed with the '
                            "active key; a retiring key stays in the JWKS for {s} seconds "
                            "so that what it signed keeps verifying.</p>",
                            s=retire,
                        ),
                        table(
                            "Signing keys",
                            ("Key id", "Algorithm", "State", "Created (UTC)", "Retired (UTC)"),
                            rows,
                        ),
                    ]
                ),
            ),
            section(
                "Rotate",
                render(
                    "<p>Make a new active key. Other instances pick it up within a minute.</p>"
                    '<p><a class="button" href="{href}">Rotate the signing key…</a></p>',
                    href=url("keys", "rotate"),
                ),
            ),
        ]
    )
    return page("Signing keys", body, viewer=viewer(request), section="keys")


async def confirm_rotate(request: web.Request) -> web.Response:
    """Ask before rotating: what changes for tokens already minted."""
    active = next((k for k in actions(request).signing_keys() if k.state == "active"), None)
    retire = request.config_dict[keys.SETTINGS].signing.retire_after_seconds
    body = section(
        "Confirm the rotation",
        join(
            [
                render(
                    "<p>A new key becomes active now. The current key {kid} keeps being "
                    "published for {s} seconds, then is dropped: tokens it signed stop "
                    "verifying after that.</p>",
                    kid=code(active.kid) if active else "",
                    s=retire,
                ),
                render(
                    '<div class="actions">{button}<a class="button ghost" href="{back}">'
                    "Cancel</a></div>",
                    button=post_button(
                        viewer(request), url("keys", "rotate"), "Rotate now", style="danger"
                    ),
                    back=url("keys"),
                ),
            ]
        ),
        extra_class="danger-zone",
    )
    return page(
        "Rotate the signing key",
        body,
        viewer=viewer(request),
        section="keys",
        crumbs=[("Signing keys", url("keys"))],
    )


async def rotate(request: web.Request) -> web.Response:
    """Rotate: a new active key, the old one retiring."""
    previous, active = await actions(request).rotate_signing_key()
    flash(request, f"Rotated: {active.kid} is active, {previous.kid} is retiring.")
    return redirect(url("keys"))


def add_routes(app: web.Application) -> None:
    """Register the signing keys pages."""
    app.router.add_get("/keys", signing_keys)
    app.router.add_get("/keys/rotate", confirm_rotate)
    app.router.add_post("/keys/rotate", rotate)
