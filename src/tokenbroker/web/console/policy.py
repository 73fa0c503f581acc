"""Console pages of the policy: organizations, an organization's credentials, a project's.

Every change goes through ``AdminActions`` (scoped, audited, logged); a 422 from it is shown
inline, each message next to the field the API names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiohttp import web

from tokenbroker.backends.base import traits_of
from tokenbroker.backends.registry import (
    BackendUnavailable,
    UnknownCredentialType,
    backend_class,
    credential_types,
    settings_model_for,
)
from tokenbroker.errors import BrokerError, Conflict, NotFound, UnprocessableEntity
from tokenbroker.policy.models import Credential, Organization
from tokenbroker.web.admin.actions import CredentialChange
from tokenbroker.web.admin.views import public_settings
from tokenbroker.web.console.context import actions, flash, form, redirect, viewer
from tokenbroker.web.console.forms import (
    SettingSpec,
    bound_claim_rows,
    bound_claims_from_form,
    setting_hint,
    setting_specs,
    setting_value,
    settings_from_form,
)
from tokenbroker.web.console.html import Markup, attributes, join, render
from tokenbroker.web.console.layout import (
    Field,
    code,
    csrf_field,
    error_summary,
    form_field,
    link,
    page,
    post_button,
    section,
    table,
    url,
)

Problems = list[tuple[str, str]]
# Empty claim/value rows offered under the existing ones (the script adds more on demand).
_SPARE_CLAIM_ROWS = 2


def problems_of(exc: BrokerError) -> Problems:
    """(field, message) pairs of a refusal: a 422's field list, else the description."""
    if isinstance(exc, UnprocessableEntity) and exc.details:
        fields = exc.details.get("fields")
        if isinstance(fields, list):
            return [
                (str(f.get("field")), str(f.get("message"))) for f in fields if isinstance(f, dict)
            ]
    if isinstance(exc, Conflict) and "exists" in exc.reason:
        return [("name", exc.description)]
    return [("form", exc.description)]


def _error_for(problems: Problems, name: str) -> str | None:
    messages = [message for field, message in problems if field == name]
    return "; ".join(messages) or None


def _org_crumbs(org: str) -> list[tuple[str, str]]:
    return [("Organizations", url("organizations")), (org, url("organizations", org))]


# -- organizations --------------------------------------------------------------------------


def _organizations_page(
    request: web.Request,
    orgs: Sequence[Organization],
    issuers: Sequence[str],
    problems: Problems,
    values: Mapping[str, str],
    status: int = 200,
) -> web.Response:
    rows = [
        (
            link(url("organizations", o.name), o.name),
            code(o.issuer),
            code(o.platform_org_id),
        )
        for o in orgs
    ]
    listing = table(
        "Organizations",
        ("Name", "Issuer", "Platform org id"),
        rows,
        empty="No organizations yet. Create the first one below.",
    )
    fields = [
        Field(
            "name",
            "Name",
            value=values.get("name"),
            required=True,
            hint="Letters, digits, '_', '.', '-'; used in URLs and the audit trail.",
            error=_error_for(problems, "name"),
        ),
        Field(
            "issuer",
            "Issuer",
            kind="select",
            value=values.get("issuer"),
            required=True,
            options=[(i, i) for i in issuers],
            hint="The configured [[issuers]] entry its runners' tokens come from.",
            error=_error_for(problems, "issuer"),
        ),
        Field(
            "platform_org_id",
            "Platform org id",
            value=values.get("platform_org_id"),
            required=True,
            hint="The organization's id in the platform's tokens: the immutable id its issuer's "
            "profile reads as the organization (the README's table names the claim).",
            error=_error_for(problems, "platform_org_id"),
        ),
    ]
    create = render(
        '<form method="post" action="{action}" class="grid-form">{errors}{csrf}{fields}'
        '<div class="actions"><button type="submit" class="primary">Create organization</button>'
        "</div></form>",
        action=url("organizations"),
        errors=error_summary(problems, {f.name for f in fields}),
        csrf=csrf_field(viewer(request)),
        fields=join(form_field(f) for f in fields),
    )
    body = join([section("All organizations", listing), section("New organization", create)])
    return page(
        "Organizations", body, viewer=viewer(request), section="organizations", status=status
    )


async def organizations(request: web.Request) -> web.Response:
    """The organizations the admin may see, and the form that creates one."""
    admin = actions(request)
    return _organizations_page(request, await admin.organizations(), admin.issuer_names(), [], {})


async def create_organization(request: web.Request) -> web.Response:
    """Create an organization from the form."""
    admin = actions(request)
    submitted = form(request)
    values = {k: str(submitted.get(k, "")).strip() for k in ("name", "issuer", "platform_org_id")}
    try:
        org = await admin.create_organization(
            values["name"], values["issuer"], values["platform_org_id"]
        )
    except (UnprocessableEntity, Conflict, NotFound) as exc:
        return _organizations_page(
            request,
            await admin.organizations(),
            admin.issuer_names(),
            problems_of(exc),
            values,
            status=422 if not isinstance(exc, Conflict) else 409,
        )
    flash(request, f"Organization {org.name} created.")
    return redirect(url("organizations", org.name))


# -- an organization's credentials ----------------------------------------------------------


def _type_options() -> list[tuple[str, str]]:
    return [(t, t) for t in credential_types()]


async def organization(request: web.Request) -> web.Response:
    """An organization's credentials (type, token mode, projects) and its projects."""
    admin = actions(request)
    name = request.match_info["org"]
    org = await admin.organization(name)
    creds = await admin.credentials(name)
    projects_of: dict[str, list[str]] = {}
    for assignment in await admin.assignments(name):
        projects_of.setdefault(assignment.credential, []).append(assignment.project)
    rows = []
    for cred in creds:
        projects = projects_of.get(cred.name, [])
        rows.append(
            (
                link(
                    url("organizations", name, "credentials", cred.name),
                    cred.name,
                    accessible_name=f"Edit credential {cred.name}",
                ),
                code(cred.type),
                render('<span class="mode">{m}</span>', m=cred.token),
                join(
                    (
                        link(
                            url("organizations", name, "projects", p),
                            p,
                            accessible_name=f"Project {p}",
                        )
                        for p in projects
                    ),
                    ", ",
                )
                or render('<span class="muted">none</span>'),
                join(
                    [
                        link(
                            url("organizations", name, "credentials", cred.name),
                            "Edit",
                            accessible_name=f"Edit credential {cred.name}",
                        ),
                        link(
                            url("organizations", name, "credentials", cred.name, "delete"),
                            "Delete",
                            accessible_name=f"Delete credential {cred.name}",
                        ),
                    ],
                    " · ",
                ),
            )
        )
    listing = table(
        f"Credentials of {name}",
        ("Name", "Type", "Token", "Assigned to projects", "Actions"),
        rows,
        empty="No credentials yet.",
    )
    new = render(
        '<form method="get" action="{action}" class="row-form">{field}'
        '<button type="submit" class="primary">New credential</button></form>',
        action=url("organizations", name, "new-credential"),
        field=form_field(Field("type", "Credential type", kind="select", options=_type_options())),
    )
    projects = sorted({p for ps in projects_of.values() for p in ps})
    project_list = (
        render(
            '<ul class="chips">{items}</ul>',
            items=join(
                render(
                    "<li>{a}</li>",
                    a=link(
                        url("organizations", name, "projects", p), p, accessible_name=f"Project {p}"
                    ),
                )
                for p in projects
            ),
        )
        if projects
        else render('<p class="empty">No project has a credential yet.</p>')
    )
    open_project = render(
        '<form method="get" action="{action}" class="row-form">{field}'
        '<button type="submit">Open project</button></form>',
        action=url("organizations", name, "project"),
        field=form_field(
            Field(
                "project",
                "Project id",
                required=True,
                hint="The project id in the platform's tokens: the immutable id its issuer's "
                "profile reads as the project (the README's table names the claim).",
            )
        ),
    )
    about = render(
        '<dl class="facts"><dt>Issuer</dt><dd>{issuer}</dd><dt>Platform org id</dt>'
        "<dd>{pid}</dd></dl>",
        issuer=code(org.issuer),
        pid=code(org.platform_org_id),
    )
    body = join(
        [
            about,
            section("Credentials", join([listing, new])),
            section("Projects", join([project_list, open_project])),
        ]
    )
    return page(
        f"Organization {name}",
        body,
        viewer=viewer(request),
        section="organizations",
        crumbs=[("Organizations", url("organizations"))],
    )


async def open_project(request: web.Request) -> web.StreamResponse:
    """The project page named by the "open project" form."""
    project = request.query.get("project", "").strip()
    org = request.match_info["org"]
    if not project:
        return redirect(url("organizations", org))
    return redirect(url("organizations", org, "projects", project))


def _specs_of(type_name: str) -> list[SettingSpec]:
    try:
        return setting_specs(settings_model_for(type_name))
    except (UnknownCredentialType, BackendUnavailable) as exc:
        raise NotFound("credential_type_unknown", str(exc)) from None


_GLOB_RULES = Markup(
    """<details class="rules" open><summary>How bound claims match</summary><ul>
<li>Every claim listed must match for the token to get this credential.</li>
<li><code>*</code> matches any run of characters: <code>prod-*</code> matches
<code>prod-eu</code>; a value without <code>*</code> must be equal.</li>
<li>A claim given on several rows accepts any of those values.</li>
<li>A claim whose value in the token is a list matches when any element matches.</li>
<li>A claim name starting with <code>/</code> is a JSON pointer into nested claims
(<code>/https:~1~1aws.amazon.com~1tags/principal_tags</code>); any other name is taken
literally, dots and slashes included (<code>example.com/claim-name</code>).</li>
</ul></details>"""
)


def _claim_rows(rows: Sequence[tuple[str, str]], problems: Problems) -> Markup:
    shown = list(rows) + [("", "")] * _SPARE_CLAIM_ROWS
    items = []
    for index, (claim, value) in enumerate(shown, start=1):
        error = _error_for(problems, f"bound_claims.{claim}") if claim else None
        items.append(
            render(
                """<div class="claim-row{inv}" data-claim-row>
<div class="field"><label for="claim-{i}">Claim {i}</label>
<input id="claim-{i}" name="claim" value="{claim}" spellcheck="false" autocomplete="off"{ph1}>
</div>
<div class="field"><label for="claim-value-{i}">Value {i}</label>
<input id="claim-value-{i}" name="claim_value" value="{value}" spellcheck="false"
 autocomplete="off"{ph2}{described}></div>{error}</div>""",
                ph1=attributes(placeholder="environmentId" if index == 1 else None),
                ph2=attributes(placeholder="prod-*" if index == 1 else None),
                inv=" invalid" if error else "",
                i=index,
                claim=claim,
                value=value,
                described=render(' aria-describedby="claim-{i}-error"', i=index) if error else "",
                error=render('<p class="error" id="claim-{i}-error">{e}</p>', i=index, e=error)
                if error
                else "",
            )
        )
    return render(
        '<fieldset class="claims"><legend>Bound claims</legend>{rules}'
        '<div class="claim-rows" id="claim-rows">{rows}</div>'
        '<p class="hint">Clear both boxes of a row to remove it.</p></fieldset>',
        rules=_GLOB_RULES,
        rows=join(items),
    )


def _credential_form(
    request: web.Request,
    *,
    org: str,
    type_name: str,
    current: Credential | None,
    refused: BrokerError | None = None,
) -> web.Response:
    """The credential form; after a ``refused`` submission, its problems and what was sent."""
    problems: Problems = problems_of(refused) if refused is not None else []
    values = _submitted_values(request) if refused is not None else None
    claims = _submitted_claims(request) if refused is not None else None
    status = 422 if refused is not None else 200
    specs = _specs_of(type_name)
    mint_only = traits_of(backend_class(type_name)).mint_only
    submitted = values or {}
    shown_settings: Mapping[str, object] | None = (
        public_settings(type_name, current.settings) if current is not None else None
    )

    def value_of(name: str, fallback: object) -> object:
        return submitted.get(name, fallback)

    head_fields: list[Field] = []
    if current is None:
        head_fields.append(
            Field(
                "name",
                "Name",
                value=submitted.get("name"),
                required=True,
                hint='What runners ask for ({"credential": name}); letters, digits, '
                "'_', '.', '-'.",
                error=_error_for(problems, "name"),
            )
        )
    token_value = value_of(
        "token", current.token if current else ("mint" if mint_only else "passthrough")
    )
    head_fields.append(
        Field(
            "token",
            "Token mode",
            kind="select",
            value=token_value,
            options=[
                ("passthrough", "passthrough: the platform's own token"),
                ("mint", "mint: a token the broker signs"),
            ],
            hint="This type only mints."
            if mint_only
            else "passthrough sends the runner's platform token to the backend; mint sends a "
            "short-lived token signed by this broker (set the audience).",
            error=_error_for(problems, "token"),
        )
    )
    head_fields.append(
        Field(
            "audience",
            "Audience",
            value=value_of("audience", current.audience if current else None),
            hint="The minted token's aud (token mode mint).",
            error=_error_for(problems, "audience"),
        )
    )
    setting_fields = []
    for spec in specs:
        if values is not None and spec.kind == "boolean":
            start: object = values.get(spec.form_name) == "true"
        elif values is not None:
            start = values.get(spec.form_name)
        else:
            start = setting_value(spec, shown_settings)
        kind = {
            "boolean": "checkbox",
            "enum": "select",
            "list": "textarea",
            "multiline": "textarea",
            "integer": "number",
        }.get(spec.kind, "password" if spec.sensitive else "text")
        setting_fields.append(
            Field(
                spec.form_name,
                spec.name,
                kind=kind,
                value=start,
                required=spec.required,
                hint=setting_hint(spec) or None,
                error=_error_for(problems, spec.form_name),
                options=[("", "default")] + [(o, o) for o in spec.options] if spec.options else (),
                placeholder=None
                if spec.default in (None, [], True, False) or spec.kind == "list"
                else str(spec.default),
                autocomplete="off",
                wide=kind == "textarea",
            )
        )
    rows = (
        claims if claims is not None else bound_claim_rows(current.bound_claims if current else {})
    )
    known = {f.name for f in head_fields} | {f.name for f in setting_fields}
    known |= {f"bound_claims.{c}" for c, _ in rows}
    settings_block = (
        render('<div class="fields-grid">{f}</div>', f=join(form_field(f) for f in setting_fields))
        if setting_fields
        else render('<p class="empty">This type has no settings of its own.</p>')
    )
    action = (
        url("organizations", org, "credentials", current.name)
        if current is not None
        else url("organizations", org, "new-credential", type=type_name)
    )
    body = render(
        """<form method="post" action="{action}" class="credential-form" novalidate>{errors}{csrf}
<input type="hidden" name="type" value="{type}">
<section class="card"><h2>Credential</h2>
<dl class="facts"><dt>Type</dt><dd>{type_code}</dd></dl>{head}</section>
<section class="card"><h2>Settings of {type}</h2>
<p class="hint lead">From the type's schema; checked by the broker exactly as the admin API
checks them.</p>{settings}</section>
<section class="card">{claims}</section>
<div class="actions"><button type="submit" class="primary">{submit}</button>
<a class="button ghost" href="{cancel}">Cancel</a></div>
</form>""",
        action=action,
        errors=error_summary([p for p in problems if p[0] != "type"], known),
        csrf=csrf_field(viewer(request)),
        type=type_name,
        type_code=code(type_name),
        head=join(form_field(f) for f in head_fields),
        settings=settings_block,
        claims=_claim_rows(rows, problems),
        submit="Save credential" if current is not None else "Create credential",
        cancel=url("organizations", org),
    )
    title = f"Credential {current.name}" if current is not None else f"New {type_name} credential"
    return page(
        title,
        body,
        viewer=viewer(request),
        section="organizations",
        crumbs=_org_crumbs(org),
        status=status,
    )


async def new_credential(request: web.Request) -> web.Response:
    """The form of a new credential of the chosen type."""
    org = request.match_info["org"]
    await actions(request).organization(org)
    type_name = request.query.get("type", "")
    return _credential_form(request, org=org, type_name=type_name, current=None)


def _submitted_values(request: web.Request) -> dict[str, str]:
    submitted = form(request)
    return {k: str(v) for k, v in submitted.items() if k not in ("claim", "claim_value", "csrf")}


def _submitted_claims(request: web.Request) -> list[tuple[str, str]]:
    submitted = form(request)
    pairs = zip(submitted.getall("claim", []), submitted.getall("claim_value", []), strict=False)
    return [(str(c), str(v)) for c, v in pairs if str(c).strip() or str(v).strip()]


async def create_credential(request: web.Request) -> web.Response:
    """Create a credential from the generated form."""
    org = request.match_info["org"]
    type_name = request.query.get("type", "")
    specs = _specs_of(type_name)
    submitted = form(request)
    audience = str(submitted.get("audience", "")).strip() or None
    name = str(submitted.get("name", "")).strip()
    try:
        await actions(request).create_credential(
            org,
            name,
            type_name,
            token=str(submitted.get("token", "passthrough")),
            audience=audience,
            settings=settings_from_form(specs, submitted, patch=False),
            bound_claims=bound_claims_from_form(submitted),
        )
    except (UnprocessableEntity, Conflict) as exc:
        return _credential_form(request, org=org, type_name=type_name, current=None, refused=exc)
    flash(request, f"Credential {name} created.")
    return redirect(url("organizations", org))


async def edit_credential(request: web.Request) -> web.Response:
    """The form of an existing credential, filled with what it has (never a secret)."""
    org, name = request.match_info["org"], request.match_info["name"]
    current = await actions(request).credential(org, name)
    return _credential_form(request, org=org, type_name=current.type, current=current)


async def update_credential(request: web.Request) -> web.Response:
    """Save the edited form: settings merged (an empty sensitive field keeps its value)."""
    org, name = request.match_info["org"], request.match_info["name"]
    admin = actions(request)
    current = await admin.credential(org, name)
    specs = _specs_of(current.type)
    submitted = form(request)
    claims = bound_claims_from_form(submitted)
    removed: dict[str, object] = {k: None for k in current.bound_claims if k not in claims}
    change = CredentialChange(
        token=str(submitted.get("token", current.token)),
        audience=str(submitted.get("audience", "")).strip() or None,
        settings=settings_from_form(specs, submitted, patch=True),
        bound_claims={**removed, **claims},
    )
    try:
        await admin.update_credential(org, name, change)
    except UnprocessableEntity as exc:
        return _credential_form(
            request, org=org, type_name=current.type, current=current, refused=exc
        )
    flash(request, f"Credential {name} saved.")
    return redirect(url("organizations", org))


async def confirm_delete_credential(request: web.Request) -> web.Response:
    """Ask before deleting: which projects lose the credential."""
    org, name = request.match_info["org"], request.match_info["name"]
    admin = actions(request)
    await admin.credential(org, name)
    projects = [a.project for a in await admin.assignments(org) if a.credential == name]
    if projects:
        effect = render(
            "<p>It is assigned to these projects, whose runners will be refused it:</p>"
            '<ul class="chips danger">{items}</ul>',
            items=join(render("<li>{p}</li>", p=code(p)) for p in projects),
        )
    else:
        effect = render("<p>It is not assigned to any project.</p>")
    body = section(
        "This cannot be undone",
        join(
            [
                render(
                    "<p>Delete credential {n} of organization {o}?</p>", n=code(name), o=code(org)
                ),
                effect,
                render(
                    '<div class="actions">{button}<a class="button ghost" href="{back}">Cancel'
                    "</a></div>",
                    button=post_button(
                        viewer(request),
                        url("organizations", org, "credentials", name, "delete"),
                        "Delete credential",
                        accessible_name=f"Delete credential {name}",
                        style="danger",
                    ),
                    back=url("organizations", org),
                ),
            ]
        ),
        extra_class="danger-zone",
    )
    return page(
        f"Delete credential {name}",
        body,
        viewer=viewer(request),
        section="organizations",
        crumbs=_org_crumbs(org),
    )


async def delete_credential(request: web.Request) -> web.Response:
    """Delete the credential and its assignments."""
    org, name = request.match_info["org"], request.match_info["name"]
    await actions(request).delete_credential(org, name)
    flash(request, f"Credential {name} deleted.")
    return redirect(url("organizations", org))


# -- a project's credentials ----------------------------------------------------------------


async def project(request: web.Request) -> web.Response:
    """The credentials assigned to one project: assign, unassign (env0's project page)."""
    org, project_id = request.match_info["org"], request.match_info["project"]
    admin = actions(request)
    _, assigned = await admin.project_credentials(org, project_id)
    every = await admin.credentials(org)
    assigned_names = {c.name for c in assigned}
    me = viewer(request)
    rows = [
        (
            link(
                url("organizations", org, "credentials", c.name),
                c.name,
                accessible_name=f"Edit credential {c.name}",
            ),
            code(c.type),
            render('<span class="mode">{m}</span>', m=c.token),
            post_button(
                me,
                url("organizations", org, "projects", project_id, "unassign"),
                "Unassign",
                accessible_name=f"Unassign {c.name} from project {project_id}",
                hidden={"credential": c.name},
                style="small",
            ),
        )
        for c in assigned
    ]
    listing = table(
        f"Credentials of project {project_id}",
        ("Credential", "Type", "Token", "Action"),
        rows,
        empty="No credential is assigned to this project: its runners get nothing.",
    )
    available = [c for c in every if c.name not in assigned_names]
    if available:
        assign = render(
            '<form method="post" action="{action}" class="row-form">{csrf}{field}'
            '<button type="submit" class="primary">Assign</button></form>',
            action=url("organizations", org, "projects", project_id, "assign"),
            csrf=csrf_field(me),
            field=form_field(
                Field(
                    "credential",
                    "Credential",
                    kind="select",
                    options=[(c.name, f"{c.name} ({c.type})") for c in available],
                )
            ),
        )
    else:
        assign = render(
            '<p class="empty">Every credential of {o} is assigned here. '
            '<a href="{href}">Create another</a>.</p>',
            o=org,
            href=url("organizations", org),
        )
    body = join([section("Assigned credentials", listing), section("Assign a credential", assign)])
    return page(
        f"Project {project_id}", body, viewer=me, section="organizations", crumbs=_org_crumbs(org)
    )


async def assign(request: web.Request) -> web.Response:
    """Assign the chosen credential to the project."""
    org, project_id = request.match_info["org"], request.match_info["project"]
    credential = str(form(request).get("credential", ""))
    await actions(request).assign(org, project_id, credential)
    flash(request, f"{credential} assigned to project {project_id}.")
    return redirect(url("organizations", org, "projects", project_id))


async def unassign(request: web.Request) -> web.Response:
    """Take the credential away from the project."""
    org, project_id = request.match_info["org"], request.match_info["project"]
    credential = str(form(request).get("credential", ""))
    await actions(request).unassign(org, project_id, credential)
    flash(request, f"{credential} unassigned from project {project_id}.")
    return redirect(url("organizations", org, "projects", project_id))


def add_routes(app: web.Application) -> None:
    """Register the policy pages."""
    r = app.router
    r.add_get("/organizations", organizations)
    r.add_post("/organizations", create_organization)
    r.add_get("/organizations/{org}", organization)
    r.add_get("/organizations/{org}/project", open_project)
    r.add_get("/organizations/{org}/new-credential", new_credential)
    r.add_post("/organizations/{org}/new-credential", create_credential)
    r.add_get("/organizations/{org}/credentials/{name}", edit_credential)
    r.add_post("/organizations/{org}/credentials/{name}", update_credential)
    r.add_get("/organizations/{org}/credentials/{name}/delete", confirm_delete_credential)
    r.add_post("/organizations/{org}/credentials/{name}/delete", delete_credential)
    r.add_get("/organizations/{org}/projects/{project}", project)
    r.add_post("/organizations/{org}/projects/{project}/assign", assign)
    r.add_post("/organizations/{org}/projects/{project}/unassign", unassign)
