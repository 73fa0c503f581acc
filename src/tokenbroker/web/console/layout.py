"""The console's page frame, its building blocks (tables, fields, buttons) and its URLs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from aiohttp import web

from tokenbroker.web.admin.auth import AdminPrincipal
from tokenbroker.web.console.html import Markup, attributes, escape, join, render

BASE = "/console"
# The console's headers: no inline script or style, no framing, no referrer, no caching.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def url(*segments: str, **query: object) -> str:
    """A console URL: each segment percent-encoded whole (a project id may hold ``/``)."""
    path = "/".join(quote(segment, safe="") for segment in segments)
    address = f"{BASE}/{path}" if path else f"{BASE}/"
    given = {key: str(value) for key, value in query.items() if value not in (None, "")}
    return f"{address}?{urlencode(given)}" if given else address


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who a page is rendered for: the admin, the session's CSRF token, a one-time message."""

    principal: AdminPrincipal
    csrf: str
    flash: str | None = None


_NAV = (
    ("organizations", "Organizations", False),
    ("leases", "Leases", False),
    ("audit", "Audit", False),
    ("explain", "Explain", False),
    ("keys", "Signing keys", True),
)


def _nav(viewer: Viewer, section: str) -> Markup:
    items = []
    for key, label, global_only in _NAV:
        if global_only and not viewer.principal.is_global:
            continue
        current = "page" if key == section else None
        items.append(
            render(
                '<li><a href="{href}"{attrs}>{label}</a></li>',
                href=url(key),
                attrs=attributes(aria_current=current),
                label=label,
            )
        )
    return join(items)


def _scope(principal: AdminPrincipal) -> str:
    if principal.organizations is None:
        return "all organizations"
    return ", ".join(sorted(principal.organizations))


def page(
    title: str,
    body: Markup,
    *,
    viewer: Viewer | None,
    section: str = "",
    crumbs: Sequence[tuple[str, str]] = (),
    status: int = 200,
) -> web.Response:
    """A whole page: the header (navigation, who is signed in, sign out), one ``<h1>``."""
    header = render(
        '<header class="top"><div class="bar"><a class="brand" href="{home}">'
        '<span class="mark" aria-hidden="true"></span>tokenbroker</a></div></header>',
        home=url("sign-in"),
    )
    if viewer is not None:
        header = render(
            """<header class="top"><div class="bar">
<a class="brand" href="{home}"><span class="mark" aria-hidden="true"></span>tokenbroker</a>
<nav aria-label="Console"><ul>{nav}</ul></nav>
<div class="who"><span class="who-name" title="Scope: {scope}">{name}</span>
<span class="who-scope">{scope}</span>
<form method="post" action="{sign_out}">{csrf}
<button type="submit" class="ghost">Sign out</button></form>
</div></div></header>""",
            home=url("organizations"),
            nav=_nav(viewer, section),
            name=viewer.principal.name,
            scope=_scope(viewer.principal),
            sign_out=url("sign-out"),
            csrf=csrf_field(viewer),
        )
    trail = Markup("")
    if crumbs:
        trail = render(
            '<nav class="crumbs" aria-label="Breadcrumb"><ol>{items}</ol></nav>',
            items=join(
                render('<li><a href="{href}">{label}</a></li>', href=href, label=label)
                for label, href in crumbs
            ),
        )
    flash = Markup("")
    if viewer is not None and viewer.flash:
        flash = render('<p class="flash" role="status">{message}</p>', message=viewer.flash)
    document = render(
        """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · tokenbroker</title>
<link rel="stylesheet" href="{css}">
<script src="{js}" defer></script>
</head><body>
<a class="skip" href="#main">Skip to content</a>
{header}
<main id="main" tabindex="-1">{trail}<h1>{title}</h1>{flash}{body}</main>
</body></html>""",
        title=title,
        css=url("static", "console.css"),
        js=url("static", "console.js"),
        header=header,
        trail=trail,
        flash=flash,
        body=body,
    )
    return web.Response(text=document, content_type="text/html", charset="utf-8", status=status)


def csrf_field(viewer: Viewer) -> Markup:
    """The hidden CSRF field every state-changing form carries."""
    return render('<input type="hidden" name="csrf" value="{token}">', token=viewer.csrf)


def post_button(
    viewer: Viewer,
    action: str,
    label: str,
    *,
    accessible_name: str | None = None,
    hidden: Mapping[str, str] | None = None,
    style: str = "",
) -> Markup:
    """A one-button form that POSTs to ``action`` with the CSRF token."""
    fields = join(
        render('<input type="hidden" name="{name}" value="{value}">', name=k, value=v)
        for k, v in (hidden or {}).items()
    )
    return render(
        '<form method="post" action="{action}" class="inline">{csrf}{fields}'
        '<button type="submit"{attrs}>{label}</button></form>',
        action=action,
        csrf=csrf_field(viewer),
        fields=fields,
        attrs=attributes(class_=style or None, aria_label=accessible_name),
        label=label,
    )


def table(
    caption: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    empty: str = "Nothing here yet.",
    caption_visible: bool = False,
) -> Markup:
    """A data table with a caption (hidden unless asked) and header cells."""
    body = [
        render("<tr>{cells}</tr>", cells=join(render("<td>{v}</td>", v=v) for v in row))
        for row in rows
    ]
    if not body:
        return render('<p class="empty">{empty}</p>', empty=empty)
    return render(
        '<div class="table-wrap"><table><caption{cap}>{caption}</caption><thead><tr>{head}'
        "</tr></thead><tbody>{body}</tbody></table></div>",
        cap=attributes(class_=None if caption_visible else "visually-hidden"),
        caption=caption,
        head=join(render('<th scope="col">{h}</th>', h=h) for h in headers),
        body=join(body),
    )


def link(href: str, label: object, *, accessible_name: str | None = None) -> Markup:
    """An ``<a>``; ``accessible_name`` when the visible text alone would be ambiguous."""
    return render(
        '<a href="{href}"{attrs}>{label}</a>',
        href=href,
        attrs=attributes(aria_label=accessible_name),
        label=label,
    )


def code(value: object, *, clip: bool = False) -> Markup:
    """A value shown as code (names, ids, claims); ``clip`` shortens a long id on screen (the
    whole value stays in the text and its title)."""
    if clip:
        return render('<code class="clip" title="{value}">{value}</code>', value=value)
    return render("<code>{value}</code>", value=value)


def badge(text: str, tone: str) -> Markup:
    """A small coloured label: ``ok``, ``bad``, ``warn`` or ``muted``."""
    return render('<span class="badge {tone}">{text}</span>', tone=tone, text=text)


@dataclass(frozen=True, slots=True)
class Field:
    """One form control with its label, hint and the API's error for it."""

    name: str
    label: str
    kind: str = "text"
    value: object = None
    required: bool = False
    hint: Markup | str | None = None
    error: str | None = None
    options: Sequence[tuple[str, str]] = ()
    placeholder: str | None = None
    autocomplete: str | None = None
    wide: bool = False


def field_errors(problems: Sequence[tuple[str, str]]) -> Callable[[str], str | None]:
    """The API's words for each field of a form, joined, from its (field, message) problems."""

    def error(name: str) -> str | None:
        return "; ".join(m for f, m in problems if f == name) or None

    return error


def pager(
    route: str, kept: Mapping[str, str], *, before: object, older: object, older_label: str
) -> Markup:
    """The links to the newest page (when this one is not) and to the ``older`` one, if any,
    each keeping the filters ``kept``."""
    links = []
    if before is not None:
        links.append(link(url(route, **kept), "Newest"))
    if older is not None:
        links.append(link(url(route, before=older, **kept), older_label))
    return render('<nav class="pager" aria-label="Pages">{links}</nav>', links=join(links, " "))


def scope_filters(
    raw: Mapping[str, str], orgs: Sequence[str], error: Callable[[str], str | None]
) -> list[Field]:
    """The organization, project and credential filters the audit and lease pages share."""
    return [
        Field(
            "organization",
            "Organization",
            kind="select",
            value=raw.get("organization", ""),
            options=[("", "any"), *((o, o) for o in orgs)],
            error=error("organization"),
        ),
        Field("project", "Project", value=raw.get("project"), error=error("project")),
        Field("credential", "Credential", value=raw.get("credential"), error=error("credential")),
    ]


def field_id(name: str) -> str:
    """The element id of a form field (its name, made id-safe)."""
    return "f-" + "".join(c if c.isalnum() else "-" for c in name)


def filter_form(action: str, label: str, fields: Sequence[Field]) -> Markup:
    """A GET search form of ``fields`` over a listing at ``action``, with Filter and Clear."""
    return render(
        '<form method="get" action="{action}" class="filters" role="search" '
        'aria-label="{label}">{fields}<div class="actions">'
        '<button type="submit" class="primary">Filter</button>'
        '<a class="button ghost" href="{action}">Clear</a></div></form>',
        action=action,
        label=label,
        fields=join(form_field(f) for f in fields),
    )


def form_field(f: Field) -> Markup:
    """A labelled control; a hint and an error are tied to it with aria-describedby."""
    ident = field_id(f.name)
    described = [ident + "-hint"] if f.hint else []
    if f.error:
        described.append(ident + "-error")
    common = attributes(
        id=ident,
        name=f.name,
        required=f.required,
        aria_invalid="true" if f.error else None,
        aria_describedby=" ".join(described) or None,
        placeholder=f.placeholder,
        autocomplete=f.autocomplete,
    )
    value = "" if f.value is None else f.value
    if f.kind == "checkbox":
        control = render(
            '<input type="checkbox" value="true"{common}{checked}>',
            common=common,
            checked=attributes(checked=bool(f.value)),
        )
    elif f.kind == "select":
        control = render(
            "<select{common}>{options}</select>",
            common=common,
            options=join(
                render(
                    '<option value="{v}"{sel}>{label}</option>',
                    v=v,
                    sel=attributes(selected=str(value) == v),
                    label=label,
                )
                for v, label in f.options
            ),
        )
    elif f.kind == "textarea":
        control = render(
            '<textarea rows="4" spellcheck="false"{common}>{value}</textarea>',
            common=common,
            value=value,
        )
    else:
        control = render(
            '<input type="{kind}" value="{value}" spellcheck="false"{common}>',
            kind=f.kind,
            value=value,
            common=common,
        )
    hint = (
        render('<p class="hint" id="{i}-hint">{hint}</p>', i=ident, hint=f.hint)
        if f.hint
        else Markup("")
    )
    error = (
        render('<p class="error" id="{i}-error">{error}</p>', i=ident, error=f.error)
        if f.error
        else Markup("")
    )
    # The mark of a required field stays outside the label: the label is the field's name.
    label = render(
        '<span class="label-row"><label for="{i}">{label}</label>{req}</span>',
        i=ident,
        label=f.label,
        req=Markup('<span class="req" aria-hidden="true">*</span>') if f.required else "",
    )
    kind_class = "check" if f.kind == "checkbox" else "field"
    if f.wide:
        kind_class += " wide-field"
    # A checkbox stands before its label; every other control after it.
    first, second = (control, label) if f.kind == "checkbox" else (label, control)
    return render(
        '<div class="{k}{inv}">{first}{second}{hint}{error}</div>',
        k=kind_class,
        inv=" invalid" if f.error else "",
        first=first,
        second=second,
        hint=hint,
        error=error,
    )


def error_summary(problems: Sequence[tuple[str, str]], known: set[str]) -> Markup:
    """The API's list of problems at the top of a form, each linking to its field."""
    if not problems:
        return Markup("")
    items = []
    for name, message in problems:
        if name in known:
            items.append(
                render(
                    '<li><a href="#{i}">{name}</a>: {message}</li>',
                    i=field_id(name),
                    name=name,
                    message=message,
                )
            )
        else:
            items.append(render("<li>{name}: {message}</li>", name=name, message=message))
    return render(
        '<div class="errors" role="alert" tabindex="-1" id="form-errors">'
        "<h2>The broker refused this</h2><ul>{items}</ul></div>",
        items=join(items),
    )


def section(title: str, body: Markup, *, extra_class: str = "") -> Markup:
    """A titled card of the page (``<h2>``)."""
    return render(
        '<section class="card{cls}"><h2>{title}</h2>{body}</section>',
        cls=f" {extra_class}" if extra_class else "",
        title=title,
        body=body,
    )


def escape_all(values: Iterable[object]) -> list[Markup]:
    """Each value escaped."""
    return [escape(v) for v in values]
