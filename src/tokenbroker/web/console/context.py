"""What a console handler is given: the viewer, the submitted form, the admin's actions."""

from __future__ import annotations

from aiohttp import web
from multidict import MultiDict

from tokenbroker.web.admin.actions import AdminActions, admin_actions
from tokenbroker.web.console.layout import Viewer
from tokenbroker.web.console.sessions import ConsoleSession

VIEWER = web.RequestKey("console_viewer", Viewer)
FORM: web.RequestKey[MultiDict[str]] = web.RequestKey("console_form")
SESSION = web.RequestKey("console_session", ConsoleSession)
SESSION_COOKIE = "tokenbroker_console"
SIGN_IN_COOKIE = "tokenbroker_console_sign_in"


def viewer(request: web.Request) -> Viewer:
    """The signed-in admin of the request (the console's middleware put it there)."""
    return request[VIEWER]


def form(request: web.Request) -> MultiDict[str]:
    """The submitted form of a POST, read (and its CSRF token checked) by the middleware."""
    return request[FORM]


def actions(request: web.Request) -> AdminActions:
    """The admin API's actions, done as the signed-in admin."""
    return admin_actions(request, viewer(request).principal)


def redirect(location: str) -> web.Response:
    """303 See Other: after a POST, the browser GETs the page that shows the result."""
    return web.Response(status=303, headers={"Location": location})


def flash(request: web.Request, message: str) -> None:
    """Leave a message for the next page of this session."""
    session = request.get(SESSION)
    if session is not None:
        session.flash = message
