"""Console pages of what happened: the audit trail, and the explanation of a decision.

A pasted platform token is handed to the exchange's dry run and dropped: it is never logged,
stored, or written back into the page (only its trace is shown).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from aiohttp import web
from pydantic import ValidationError

from tokenbroker.errors import NotFound
from tokenbroker.exchange.service import DecisionTrace, ExchangeRequest, TraceStep
from tokenbroker.logs import request_id_var
from tokenbroker.policy.models import AuditEvent
from tokenbroker.web import keys
from tokenbroker.web.admin.actions import AdminActions
from tokenbroker.web.admin.schemas import AuditQuery, validation_problems
from tokenbroker.web.console.context import actions, form, viewer
from tokenbroker.web.console.html import Markup, join, render
from tokenbroker.web.console.layout import (
    Field,
    badge,
    code,
    csrf_field,
    error_summary,
    field_errors,
    filter_form,
    form_field,
    link,
    page,
    pager,
    scope_filters,
    section,
    table,
    url,
)

_FILTERS = ("outcome", "organization", "project", "credential", "since", "until")
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")
_PAGE_SIZE = 50
_TONES = {"success": "ok", "denied": "bad", "error": "warn"}


def when(moment: datetime) -> str:
    """A time as the console shows it: UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def moment(value: datetime) -> Markup:
    """A ``<time>`` element showing ``when``."""
    return render('<time datetime="{iso}">{t}</time>', iso=value.isoformat(), t=when(value))


def _as_utc(text: str) -> str:
    # A datetime-local input sends no zone; the console's times are UTC, and so are these.
    return f"{text}+00:00" if _LOCAL_TIME.match(text) else text


def _query(raw: Mapping[str, str]) -> tuple[AuditQuery, list[tuple[str, str]]]:
    given = {k: raw[k].strip() for k in _FILTERS if raw.get(k, "").strip()}
    for key in ("since", "until"):
        if key in given:
            given[key] = _as_utc(given[key])
    if raw.get("before", "").strip():
        given["before"] = raw["before"].strip()
    given["limit"] = str(_PAGE_SIZE)
    try:
        return AuditQuery.model_validate(given), []
    except ValidationError as exc:
        return AuditQuery(limit=_PAGE_SIZE), validation_problems(exc)


def _who(event: AuditEvent) -> Markup:
    if event.actor:
        return render('<span class="actor">{a}</span>', a=event.actor)
    if event.subject:
        return code(event.subject, clip=True)
    return render('<span class="muted">-</span>')


def _filters_form(
    raw: Mapping[str, str], orgs: Sequence[str], problems: list[tuple[str, str]]
) -> Markup:
    error = field_errors(problems)

    fields = [
        Field(
            "outcome",
            "Outcome",
            kind="select",
            value=raw.get("outcome", ""),
            options=[("", "any"), ("success", "success"), ("denied", "denied"), ("error", "error")],
            error=error("outcome"),
        ),
        *scope_filters(raw, orgs, error),
        Field(
            "since",
            "Since (UTC)",
            kind="datetime-local",
            value=raw.get("since"),
            error=error("since"),
        ),
        Field(
            "until",
            "Until (UTC)",
            kind="datetime-local",
            value=raw.get("until"),
            error=error("until"),
        ),
    ]
    return filter_form(url("audit"), "Filter audit events", fields)


async def audit(request: web.Request) -> web.Response:
    """Audit events this admin may see: filters, newest first, paged."""
    admin = actions(request)
    raw = {k: v for k, v in request.query.items()}
    query, problems = _query(raw)
    page_of = await admin.audit_events(query)
    orgs = [o.name for o in await admin.organizations()]
    rows = [
        (
            moment(e.time),
            badge(e.outcome, _TONES.get(e.outcome, "muted")),
            join(
                [
                    code(e.reason),
                    render(' <span class="kind">{k}</span>', k=e.kind)
                    if e.kind != "exchange"
                    else "",
                ]
            ),
            e.organization or "",
            code(e.project, clip=True) if e.project else "",
            e.credential or "",
            _who(e),
            link(url("explain", event=e.id), "Explain", accessible_name=f"Explain event {e.id}"),
        )
        for e in page_of.events
    ]
    listing = table(
        "Audit events, newest first",
        ("Time (UTC)", "Outcome", "Reason", "Organization", "Project", "Credential", "Who", ""),
        rows,
        empty="No event matches these filters.",
    )
    kept = {k: raw[k] for k in _FILTERS if raw.get(k)}
    pages = pager(
        "audit", kept, before=query.before, older=page_of.next, older_label="Older events"
    )
    body = join(
        [
            section(
                "Filters",
                join([error_summary(problems, set(_FILTERS)), _filters_form(raw, orgs, problems)]),
            ),
            section(
                "Events",
                join([listing, pages]),
            ),
        ]
    )
    return page("Audit", body, viewer=viewer(request), section="audit")


# -- explain ---------------------------------------------------------------------------------


def _value(value: object) -> Markup:
    if value is None:
        return render('<span class="muted">none</span>')
    if isinstance(value, list):
        return join((code(v) for v in value), " ")
    return code(value)


def _actual(check: Mapping[str, object]) -> Markup:
    if "actual" not in check:
        return render('<span class="muted">not kept</span>')
    actual = check.get("actual")
    return _value(None if repr(actual) == "MISSING" else actual)


def _match(check: Mapping[str, object]) -> Markup:
    if "matched" not in check:
        return render('<span class="muted">-</span>')
    return badge("yes", "ok") if check.get("matched") else badge("no", "bad")


def _step(step: TraceStep, *, informative: bool = False) -> Markup:
    extra = dict(step.data)
    claims = extra.pop("claims", None)
    reason = extra.pop("reason", None)
    details = []
    if isinstance(claims, list) and claims:
        details.append(
            table(
                "Bound claims: expected and actual",
                ("Claim", "Expected", "Actual", "Match"),
                [
                    (
                        code(c.get("claim")),
                        _value(c.get("expected")),
                        _actual(c),
                        _match(c),
                    )
                    for c in claims
                    if isinstance(c, dict)
                ],
            )
        )
    if extra:
        details.append(
            render(
                '<dl class="facts">{items}</dl>',
                items=join(
                    render("<dt>{k}</dt><dd>{v}</dd>", k=k, v=_value(v)) for k, v in extra.items()
                ),
            )
        )
    if informative:
        state, mark = "info", badge("today", "muted")
    elif step.ok:
        state, mark = "pass", badge("passed", "ok")
    else:
        state, mark = "fail", badge("failed", "bad")
    return render(
        '<li class="step {state}"><div class="check-head">{mark}<span class="check-name">'
        "{name}</span>{reason}</div><p>{detail}</p>{details}</li>",
        state=state,
        mark=mark,
        name=step.check,
        reason=render(' <code class="reason">{r}</code>', r=reason) if reason else "",
        detail=step.detail,
        details=join(details),
    )


def render_trace(trace: DecisionTrace) -> Markup:
    """The dry run's checks in order, each passed or failed with expected and actual values."""
    verdict = (
        render(
            '<p class="verdict ok">Allowed: the exchange would issue {c}.</p>',
            c=code(trace.credential.name) if trace.credential else "a credential",
        )
        if trace.allowed
        else render(
            '<p class="verdict bad">Refused: {error} <code>{reason}</code></p>',
            error=trace.error.description if trace.error else "",
            reason=trace.error.reason if trace.error else "",
        )
    )
    return join(
        [verdict, render('<ol class="checks">{s}</ol>', s=join(_step(s) for s in trace.steps))]
    )


def _explain_form(request: web.Request, credential: str | None = None) -> Markup:
    fields = [
        Field(
            "token",
            "Platform token",
            kind="textarea",
            required=True,
            autocomplete="off",
            hint="The runner's OIDC token (a JWT). It is checked as an exchange would check "
            "it, with no credential issued, then dropped: never logged or stored.",
        ),
        Field(
            "credential",
            "Credential",
            value=credential,
            hint="The credential the runner asks for; empty when its project has one.",
        ),
    ]
    return render(
        '<form method="post" action="{action}">{csrf}{fields}<div class="actions">'
        '<button type="submit" class="primary">Explain</button></div></form>',
        action=url("explain"),
        csrf=csrf_field(viewer(request)),
        fields=join(form_field(f) for f in fields),
    )


def _event_checks(event: AuditEvent, assigned: bool | None, bound: Mapping[str, object]) -> Markup:
    recorded = [
        TraceStep(
            "token",
            event.issuer is not None,
            f"valid, issued by {event.issuer!r}" if event.issuer else "the token was refused",
        ),
        TraceStep(
            "organization",
            event.organization is not None,
            f"organization {event.organization!r}"
            if event.organization
            else "no organization was identified",
        ),
        TraceStep(
            "decision",
            event.outcome == "success",
            f"the broker answered {event.outcome}",
            {"reason": event.reason},
        ),
    ]
    today = []
    if event.credential is not None and event.project is not None and assigned is not None:
        today.append(
            TraceStep(
                "assignment",
                assigned,
                f"credential {event.credential!r} is {'' if assigned else 'not '}assigned "
                f"to project {event.project!r}",
            )
        )
    if bound:
        today.append(
            TraceStep(
                "bound_claims",
                True,
                "what the credential expects; the token's own values were not kept: paste "
                "the token (or a new one of the same job) below to compare",
                {
                    "claims": [
                        {"claim": k, "expected": v if isinstance(v, list) else [v]}
                        for k, v in bound.items()
                    ]
                },
            )
        )
    return join(
        [
            render("<h3>As recorded</h3>"),
            render('<ol class="checks">{s}</ol>', s=join(_step(s) for s in recorded)),
            render("<h3>The policy today</h3>") if today else Markup(""),
            render('<ol class="checks">{s}</ol>', s=join(_step(s, informative=True) for s in today))
            if today
            else Markup(""),
        ]
    )


def _changed_fields(event: AuditEvent) -> str | None:
    fields = (event.detail or {}).get("fields")
    return ", ".join(str(f) for f in fields) if isinstance(fields, list) and fields else None


async def _event_explanation(admin: AdminActions, event: AuditEvent) -> Markup:
    assigned: bool | None = None
    bound: Mapping[str, object] = {}
    if event.organization and event.credential and admin.principal.may_see(event.organization):
        try:
            cred = await admin.credential(event.organization, event.credential)
            bound = dict(cred.bound_claims)
            if event.project is not None:
                _, creds = await admin.project_credentials(event.organization, event.project)
                assigned = any(c.name == cred.name for c in creds)
        except NotFound:
            assigned = False
    facts = [
        ("Time (UTC)", when(event.time)),
        ("Outcome", badge(event.outcome, _TONES.get(event.outcome, "muted"))),
        ("Reason", code(event.reason)),
        ("Kind", event.kind),
        ("Organization", event.organization),
        ("Project", code(event.project) if event.project else None),
        ("Credential", event.credential),
        ("Subject", code(event.subject) if event.subject else None),
        ("Admin", event.actor),
        ("What changed", _changed_fields(event)),
        ("Request id", code(event.request_id)),
        ("Token fingerprint", code(event.token_fingerprint) if event.token_fingerprint else None),
    ]
    listed = join(
        render("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v) for k, v in facts if v not in (None, "")
    )
    return join(
        [
            render('<dl class="facts wide">{items}</dl>', items=listed),
            _event_checks(event, assigned, bound) if event.kind == "exchange" else Markup(""),
        ]
    )


async def explain_form(request: web.Request) -> web.Response:
    """Paste a token, or arrive from an audit event (``?event=ID``)."""
    admin = actions(request)
    parts = []
    credential = None
    event_id = request.query.get("event", "")
    if event_id:
        if not event_id.isdigit() or len(event_id) > 18:
            raise NotFound("audit_event_not_found", f"no audit event {event_id!r}")
        event = await admin.audit_event(int(event_id))
        credential = event.credential
        parts.append(section(f"Audit event {event.id}", await _event_explanation(admin, event)))
    parts.append(section("Explain a token", _explain_form(request, credential)))
    return page("Explain a decision", join(parts), viewer=viewer(request), section="explain")


def _trace_organization(trace: DecisionTrace) -> tuple[str, str] | None:
    issuer = org = None
    for step in trace.steps:
        if step.check == "token" and step.ok:
            issuer = step.data.get("issuer")
        if step.check == "identity" and step.ok:
            org = step.data.get("org")
    if isinstance(issuer, str) and isinstance(org, str):
        return issuer, org
    return None


async def explain(request: web.Request) -> web.Response:
    """The dry-run trace of a pasted token (the token is dropped when this returns)."""
    admin = actions(request)
    submitted = form(request)
    token = str(submitted.get("token", "")).strip()
    credential = str(submitted.get("credential", "")).strip() or None
    if not token:
        body = join(
            [
                error_summary([("token", "paste a platform token")], {"token"}),
                section("Explain a token", _explain_form(request, credential)),
            ]
        )
        return page(
            "Explain a decision", body, viewer=viewer(request), section="explain", status=422
        )
    service = request.config_dict[keys.SERVICE]
    trace = await service.explain(
        ExchangeRequest(token, credential, request_id_var.get(), request.remote)
    )
    del token
    if not await _may_see_trace(request, admin, trace):
        result = render(
            '<p class="verdict bad">This token is not of an organization you administer.</p>'
        )
    else:
        result = render_trace(trace)
    body = join(
        [
            section("Decision", result, extra_class="trace"),
            section("Explain another token", _explain_form(request, credential)),
        ]
    )
    return page("Explain a decision", body, viewer=viewer(request), section="explain")


async def _may_see_trace(request: web.Request, admin: AdminActions, trace: DecisionTrace) -> bool:
    # An org-scoped admin sees a trace only when it stopped before naming an organization, or
    # named one of theirs: the refusal "registered elsewhere" would tell another org exists.
    if admin.principal.is_global:
        return True
    found = _trace_organization(trace)
    if found is None:
        return True
    org = await request.config_dict[keys.STORE].policy.find_organization(*found)
    return org is not None and admin.principal.may_see(org.name)


def add_routes(app: web.Application) -> None:
    """Register the audit and explain pages."""
    app.router.add_get("/audit", audit)
    app.router.add_get("/explain", explain_form)
    app.router.add_post("/explain", explain)
