"""Console page of the leases: what the broker issued and still tracks; revoke one."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from pydantic import ValidationError

from tokenbroker.web.admin.schemas import LeaseQuery, validation_problems
from tokenbroker.web.console.activity import moment
from tokenbroker.web.console.context import actions, flash, form, redirect, viewer
from tokenbroker.web.console.html import join, render
from tokenbroker.web.console.layout import (
    Field,
    badge,
    code,
    error_summary,
    field_errors,
    filter_form,
    page,
    pager,
    post_button,
    scope_filters,
    section,
    table,
    url,
)

_FILTERS = ("organization", "project", "credential", "job", "state")
_STATES = ("active", "pending", "revoked", "expired", "failed")
_TONES = {"active": "ok", "pending": "warn", "revoked": "bad", "expired": "muted", "failed": "bad"}
_PAGE_SIZE = 50


def _query(raw: Mapping[str, str]) -> tuple[LeaseQuery, list[tuple[str, str]]]:
    given = {k: raw[k].strip() for k in (*_FILTERS, "before") if raw.get(k, "").strip()}
    # The page opens on what can still be revoked; "any" shows every state.
    state = raw.get("state", "active")
    if state == "any":
        given.pop("state", None)
    else:
        given["state"] = state
    given["limit"] = str(_PAGE_SIZE)
    try:
        return LeaseQuery.model_validate(given), []
    except ValidationError as exc:
        return LeaseQuery(state="active", limit=_PAGE_SIZE), validation_problems(exc)


async def leases(request: web.Request) -> web.Response:
    """Leases with filters (organization, project, credential, job, state); revoke."""
    admin = actions(request)
    raw = dict(request.query.items())
    query, problems = _query(raw)
    found = await admin.leases(query)
    orgs = [o.name for o in await admin.organizations()]
    me = viewer(request)

    error = field_errors(problems)

    fields = [
        *scope_filters(raw, orgs, error),
        Field(
            "job",
            "Job",
            value=raw.get("job"),
            error=error("job"),
            placeholder="deploymentLogId, run id, ...",
        ),
        Field(
            "state",
            "State",
            kind="select",
            value=raw.get("state", "active"),
            options=[("any", "any"), *((s, s) for s in _STATES)],
            error=error("state"),
        ),
    ]
    filters = filter_form(url("leases"), "Filter leases", fields)
    rows = []
    for lease in found.leases:
        revoke = (
            post_button(
                me,
                url("leases", lease.id, "revoke"),
                "Revoke",
                accessible_name=f"Revoke lease {lease.id}",
                style="small danger",
            )
            if lease.state in ("active", "pending")
            else render(
                '<span class="muted">{by}</span>',
                by=f"by {lease.revoked_by}" if lease.revoked_by else "",
            )
        )
        rows.append(
            (
                code(lease.id, clip=True),
                badge(lease.state, _TONES.get(lease.state, "muted")),
                lease.organization,
                code(lease.project, clip=True) if lease.project else "",
                join(
                    [
                        lease.credential,
                        render(' <span class="kind">{t}</span>', t=lease.credential_type),
                    ]
                ),
                code(lease.job, clip=True),
                moment(lease.issued_at),
                moment(lease.expires_at) if lease.expires_at else "",
                revoke,
            )
        )
    listing = table(
        "Leases, newest first",
        (
            "Lease",
            "State",
            "Organization",
            "Project",
            "Credential",
            "Job",
            "Issued (UTC)",
            "Expires (UTC)",
            "Action",
        ),
        rows,
        empty="No lease matches these filters.",
    )
    kept = {k: raw[k] for k in _FILTERS if raw.get(k)}
    pages = pager("leases", kept, before=query.before, older=found.next, older_label="Older leases")
    body = join(
        [
            section("Filters", join([error_summary(problems, set(_FILTERS)), filters])),
            section(
                "Leases",
                join(
                    [
                        render(
                            '<p class="hint">Revoking a Vault lease revokes its token at '
                            "Vault; AWS and GCP credentials cannot be revoked early: they "
                            "are never handed out again and expire.</p>"
                        ),
                        listing,
                        pages,
                    ]
                ),
            ),
        ]
    )
    return page("Leases", body, viewer=me, section="leases")


async def revoke(request: web.Request) -> web.Response:
    """Revoke one lease."""
    lease_id = request.match_info["id"]
    form(request)  # the middleware checked its CSRF token
    result = await actions(request).revoke_lease(lease_id)
    if any(r.get("id") == lease_id for r in result.revoked):
        flash(request, f"Lease {lease_id} revoked at its backend.")
    else:
        flash(request, f"Lease {lease_id} ended; its type cannot be revoked early, so it expires.")
    return redirect(url("leases"))


def add_routes(app: web.Application) -> None:
    """Register the leases page."""
    app.router.add_get("/leases", leases)
    app.router.add_post("/leases/{id}/revoke", revoke)
