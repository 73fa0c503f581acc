"""The console sub-app: its middleware (headers, session, CSRF, HTML errors) and sign-in.

Every response carries the console's security headers. Every page but sign-in and the static
files needs a live session; every POST needs the session's CSRF token (sign-in's own form a
token bound to a short-lived cookie), else it is refused with 403 and nothing is done.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import MultiDict

from tokenbroker.config.models import Settings
from tokenbroker.errors import BrokerError
from tokenbroker.ratelimit import retry_after_seconds
from tokenbroker.web import keys
from tokenbroker.web.admin.actions import record_admin_event
from tokenbroker.web.admin.auth import AdminTokens
from tokenbroker.web.console import activity, leases, policy, signing
from tokenbroker.web.console.context import (
    FORM,
    SESSION,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    VIEWER,
    redirect,
)
from tokenbroker.web.console.html import Markup, render
from tokenbroker.web.console.layout import SECURITY_HEADERS, Field, Viewer, form_field, page, url
from tokenbroker.web.console.sessions import (
    ConsoleSessions,
    SignInThrottle,
    new_secret,
    same_secret,
)
from tokenbroker.web.parsing import read_form_fields

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
_OPEN_PATHS = frozenset({"/console/sign-in"})
_SIGN_IN_COOKIE_SECONDS = 1800


def _is_open(request: web.Request) -> bool:
    return request.path in _OPEN_PATHS or request.path.startswith("/console/static/")


def _secure(request: web.Request) -> bool:
    public_url = request.config_dict[keys.SETTINGS].server.public_url
    return bool(public_url and public_url.startswith("https://"))


def _cookie(
    response: web.StreamResponse,
    request: web.Request,
    name: str,
    value: str,
    *,
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        name,
        value,
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        max_age=max_age,
    )


def error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    """An HTML error page, framed when someone is signed in."""
    viewer = request.get(VIEWER)
    body = render(
        '<section class="card"><p>{message}</p><p><a href="{home}">Back to the console</a></p>'
        "</section>",
        message=message,
        home=url("organizations"),
    )
    return page(title, body, viewer=viewer, status=status)


_TITLES = {
    400: "Bad request",
    401: "Sign in needed",
    403: "Refused",
    404: "Not found",
    405: "Not allowed",
    409: "Conflict",
    413: "Too large",
    422: "Not valid",
    429: "Too many attempts",
}


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Headers on everything; session and CSRF before any handler; errors as HTML pages."""
    try:
        response = await _guarded(request, handler)
    except BrokerError as exc:
        title = _TITLES.get(exc.status, "Something went wrong")
        response = error_page(request, exc.status, title, exc.description)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_page(
            request, exc.status, _TITLES.get(exc.status, "Something went wrong"), exc.reason
        )
    response.headers.update(SECURITY_HEADERS)
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_open(request):
        return await handler(request)
    sessions = request.config_dict[keys.CONSOLE_SESSIONS]
    cookie = request.cookies.get(SESSION_COOKIE)
    session = sessions.find(cookie)
    tokens = request.config_dict[keys.ADMIN_TOKENS]
    principal = tokens.by_name(session.admin) if session is not None else None
    if session is None or principal is None:
        return redirect(url("sign-in", expired="1" if cookie else None))
    request[SESSION] = session
    request[VIEWER] = Viewer(principal, session.csrf, session.take_flash())
    if request.method == "POST":
        submitted = MultiDict(await read_form_fields(request))
        if not same_secret(submitted.get("csrf"), session.csrf):
            log.warning("console POST without its CSRF token refused", extra={"path": request.path})
            return error_page(
                request,
                403,
                "Refused",
                "This form has no valid CSRF token, so nothing was done. Reload the page and "
                "submit it again.",
            )
        request[FORM] = submitted
    return await handler(request)


# -- sign in and out ------------------------------------------------------------------------


def _sign_in_page(
    request: web.Request, *, status: int = 200, error: str | None = None, note: str | None = None
) -> web.Response:
    value = new_secret()
    token_field = Field(
        "token",
        "Admin token",
        kind="password",
        required=True,
        error=error,
        hint="An [admin] token of this broker. It is checked, then forgotten: never stored.",
        autocomplete="off",
    )
    body = render(
        """<section class="card narrow signin">{note}
<form method="post" action="{action}">
<input type="hidden" name="csrf" value="{csrf}">
{field}
<button type="submit" class="primary">Sign in</button>
</form>
<p class="hint">Make a token with <code>tokenbroker admin tokens hash</code>.</p>
</section>""",
        note=render('<p class="flash" role="status">{n}</p>', n=note) if note else Markup(""),
        action=url("sign-in"),
        csrf=value,
        field=form_field(token_field),
    )
    response = page("Sign in to tokenbroker", body, viewer=None, status=status)
    _cookie(response, request, SIGN_IN_COOKIE, value, max_age=_SIGN_IN_COOKIE_SECONDS)
    return response


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    """The sign-in page (or, with a live session, the console itself)."""
    sessions = request.config_dict[keys.CONSOLE_SESSIONS]
    if sessions.find(request.cookies.get(SESSION_COOKIE)) is not None:
        return redirect(url("organizations"))
    note = None
    if request.query.get("signed_out"):
        note = "You are signed out."
    elif request.query.get("expired"):
        note = "Your session ended. Sign in again."
    return _sign_in_page(request, note=note)


async def sign_in(request: web.Request) -> web.StreamResponse:
    """Check the admin token; a session on success, an audited refusal otherwise."""
    submitted = MultiDict(await read_form_fields(request))
    if not same_secret(submitted.get("csrf"), request.cookies.get(SIGN_IN_COOKIE, "")):
        return error_page(
            request,
            403,
            "Refused",
            "The sign-in form expired or was not this console's. Open the sign-in page again.",
        )
    app = request.config_dict
    address = request.remote or "unknown"
    throttle = app[keys.CONSOLE_SIGN_IN_THROTTLE]
    wait = throttle.wait(address)
    if wait is not None:
        log.warning("console sign-in refused: too many failures", extra={"client": address})
        response = _sign_in_page(
            request,
            status=429,
            error=f"Too many failed sign-ins from your address. Try again in "
            f"{retry_after_seconds(wait)} seconds.",
        )
        response.headers["Retry-After"] = str(retry_after_seconds(wait))
        return response
    token = submitted.get("token", "")
    principal = app[keys.ADMIN_TOKENS].find(token.strip()) if token.strip() else None
    if principal is None:
        throttle.failed(address)
        await record_admin_event(
            app[keys.STORE],
            app[keys.CLOCK],
            actor=None,
            reason="console_sign_in_failed",
            detail={"object": "console_session"},
            client_address=request.remote,
            outcome="denied",
        )
        return _sign_in_page(
            request, status=401, error="That is not an admin token of this broker."
        )
    cookie, _ = app[keys.CONSOLE_SESSIONS].start(principal.name)
    await record_admin_event(
        app[keys.STORE],
        app[keys.CLOCK],
        actor=principal.name,
        reason="console_signed_in",
        detail={"object": "console_session"},
        client_address=request.remote,
    )
    response = redirect(url("organizations"))
    _cookie(response, request, SESSION_COOKIE, cookie)
    response.del_cookie(SIGN_IN_COOKIE, path="/console")
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    """End the session (the CSRF token was checked by the middleware)."""
    request.config_dict[keys.CONSOLE_SESSIONS].end(request.cookies.get(SESSION_COOKIE))
    response = redirect(url("sign-in", signed_out="1"))
    response.del_cookie(SESSION_COOKIE, path="/console")
    return response


async def home(request: web.Request) -> web.StreamResponse:
    """``/console/``: the organizations page."""
    return redirect(url("organizations"))


def create_console_app(settings: Settings) -> web.Application:
    """Build the console sub-app; mount it with ``app.add_subapp("/console", ...)``."""
    app = web.Application(middlewares=[console_middleware])
    app.router.add_get("/", home)
    app.router.add_get("/sign-in", sign_in_form)
    app.router.add_post("/sign-in", sign_in)
    app.router.add_post("/sign-out", sign_out)
    policy.add_routes(app)
    activity.add_routes(app)
    leases.add_routes(app)
    signing.add_routes(app)
    app.router.add_static("/static", STATIC_DIR, append_version=False)
    return app


def console_state(app: web.Application, settings: Settings) -> None:
    """The console's shared state on the main app: tokens, sessions, the sign-in throttle."""
    app[keys.ADMIN_TOKENS] = AdminTokens.from_settings(settings.admin)
    app[keys.CONSOLE_SESSIONS] = ConsoleSessions(
        app[keys.CLOCK], idle_seconds=settings.admin.session_idle_seconds
    )
    app[keys.CONSOLE_SIGN_IN_THROTTLE] = SignInThrottle(app[keys.CLOCK], settings.admin)


async def console_root(request: web.Request) -> web.StreamResponse:
    """``/console`` without its slash."""
    return redirect(url())
