"""``tokenbroker admin``: organizations, credentials, assignments and the audit trail.

Speaks to a running broker's admin API. Each command is built as an ``ApiCall`` (pure) and its
answer rendered as an aligned table, or printed as the API's JSON with ``--json``. The broker
and token come from ``--url`` and ``$TOKENBROKER_ADMIN_TOKEN``, or with ``--dev-stack`` from
the state file of a running ``tokenbroker dev``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias
from urllib.parse import quote

import aiohttp
from yarl import URL

from tokenbroker import __version__
from tokenbroker.cli.common import DEFAULT_DEV_DATA_DIR, CliError
from tokenbroker.config.urls import require_trusted_url
from tokenbroker.web.admin.auth import admin_token_digest

DEFAULT_URL = "http://127.0.0.1:8400"
DEFAULT_TOKEN_ENV = "TOKENBROKER_ADMIN_TOKEN"
_TIMEOUT_SECONDS = 30.0
# Marks an admin token as one (secret scanners, a reader of a leaked config).
ADMIN_TOKEN_PREFIX = "tbadm_"

JsonObject = dict[str, object]
Renderer = Callable[[JsonObject | None], str]


@dataclass(frozen=True)
class ApiCall:
    """One admin API request and how to show its answer as text."""

    method: str
    segments: tuple[str, ...]
    render: Renderer
    query: Mapping[str, str] = field(default_factory=dict)
    body: JsonObject | None = None

    def url(self, base: str) -> URL:
        """The request URL under ``<base>/v1/admin``, each segment percent-encoded whole.

        A project id like GitHub's ``owner/repo`` must stay one path segment, so ``/`` is
        encoded too.
        """
        path = "/".join(quote(segment, safe="") for segment in self.segments)
        url = URL(f"{base.rstrip('/')}/v1/admin/{path}", encoded=True)
        return url.with_query(dict(self.query)) if self.query else url


# -- rendering -------------------------------------------------------------------------------


def _cell(value: object) -> str:
    # Values come from tokens (subjects, projects): control characters are shown escaped so
    # they cannot drive the admin's terminal.
    if value is None:
        return "-"
    if isinstance(value, list):
        text = ", ".join(str(item) for item in value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned with two spaces between them; ``-`` for an empty value."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in [list(headers), *cells]
    ]
    return "\n".join(lines)


def format_fields(pairs: Sequence[tuple[str, object]]) -> str:
    """``key  value`` lines, the keys aligned."""
    width = max((len(key) for key, _ in pairs), default=0)
    return "\n".join(f"{key.ljust(width)}  {_cell(value)}".rstrip() for key, value in pairs)


def _items(body: JsonObject | None, key: str) -> list[JsonObject]:
    values = (body or {}).get(key)
    if not isinstance(values, list):
        return []
    return [item for item in values if isinstance(item, dict)]


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def render_organizations(body: JsonObject | None) -> str:
    """The organization list."""
    rows = [
        (o.get("name"), o.get("issuer"), o.get("platform_org_id"))
        for o in _items(body, "organizations")
    ]
    return format_table(("NAME", "ISSUER", "PLATFORM ORG ID"), rows)


def render_organization(body: JsonObject | None) -> str:
    """One organization."""
    org = body or {}
    return format_fields([(key, org.get(key)) for key in ("name", "issuer", "platform_org_id")])


def render_credentials(body: JsonObject | None) -> str:
    """The credential list."""
    rows = [
        (
            c.get("name"),
            c.get("type"),
            c.get("token"),
            c.get("audience"),
            sorted(_mapping(c.get("bound_claims"))) or None,
        )
        for c in _items(body, "credentials")
    ]
    return format_table(("NAME", "TYPE", "TOKEN", "AUDIENCE", "BOUND CLAIMS"), rows)


def render_credential(body: JsonObject | None) -> str:
    """One credential, settings and bound claims one per line."""
    cred = body or {}
    pairs: list[tuple[str, object]] = [
        (key, cred.get(key)) for key in ("organization", "name", "type", "token", "audience")
    ]
    pairs += [(f"settings.{k}", v) for k, v in sorted(_mapping(cred.get("settings")).items())]
    pairs += [
        (f"bound_claims.{k}", v) for k, v in sorted(_mapping(cred.get("bound_claims")).items())
    ]
    return format_fields(pairs)


def render_assignments(body: JsonObject | None) -> str:
    """The assignment list."""
    rows = [(a.get("project"), a.get("credential")) for a in _items(body, "assignments")]
    return format_table(("PROJECT", "CREDENTIAL"), rows)


def render_audit(body: JsonObject | None) -> str:
    """A page of audit events; the cursor of the next page, if any, on the last line."""
    rows = [
        (
            e.get("id"),
            e.get("time"),
            e.get("outcome"),
            e.get("reason"),
            e.get("organization"),
            e.get("project"),
            e.get("credential"),
            e.get("subject"),
            e.get("request_id"),
        )
        for e in _items(body, "events")
    ]
    table = format_table(
        (
            "ID",
            "TIME",
            "OUTCOME",
            "REASON",
            "ORGANIZATION",
            "PROJECT",
            "CREDENTIAL",
            "SUBJECT",
            "REQUEST ID",
        ),
        rows,
    )
    cursor = (body or {}).get("next")
    if cursor is not None:
        table += f"\n(more: repeat with --before {_cell(cursor)})"
    return table


def render_leases(body: JsonObject | None) -> str:
    """A page of leases; the cursor of the next page, if any, on the last line."""
    columns = ("id", "state", "organization", "project", "credential", "type", "job", "expires_at")
    rows = [tuple(lease.get(column) for column in columns) for lease in _items(body, "leases")]
    table = format_table(tuple(c.upper().replace("_", " ") for c in columns), rows)
    cursor = (body or {}).get("next")
    if cursor is not None:
        table += f"\n(more: repeat with --before {_cell(cursor)})"
    return table


def render_revoked(body: JsonObject | None) -> str:
    """What a revocation did, a line a lease."""
    lines = []
    for key, told in (("revoked", "revoked"), ("not_revocable", "ended, left to expire:")):
        leases = (body or {}).get(key)
        for lease in leases if isinstance(leases, list) else []:
            if isinstance(lease, dict):
                lines.append(f"{told} {lease.get('credential')} (lease {lease.get('id')})")
    return "\n".join(lines) or "nothing was active"


def _said(message: str) -> Renderer:
    def render(body: JsonObject | None) -> str:
        return message

    return render


# -- argument values -------------------------------------------------------------------------


def key_value(text: str) -> tuple[str, str]:
    """``key=value`` (the value may hold ``=``); the key must not be empty."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def key_json(text: str) -> tuple[str, object]:
    """``key=<JSON>``, for settings that are numbers, booleans or lists."""
    key, value = key_value(text)
    try:
        return key, json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the value of {key!r} is not JSON") from None


def settings_from(
    strings: Sequence[tuple[str, str]], typed: Sequence[tuple[str, object]]
) -> JsonObject:
    """Settings from ``--setting`` (strings) and ``--setting-json`` (any JSON) pairs."""
    settings: JsonObject = dict(strings)
    settings.update(typed)
    return settings


def bound_claims_from(pairs: Sequence[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Bound claims from repeated ``--bound-claim key=value``: a key given twice becomes a list."""
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return {key: values[0] if len(values) == 1 else values for key, values in grouped.items()}


# -- building calls from arguments -----------------------------------------------------------


def _orgs_call(args: argparse.Namespace) -> ApiCall:
    action: str = args.orgs_action
    if action == "list":
        return ApiCall("GET", ("organizations",), render_organizations)
    if action == "create":
        body: JsonObject = {
            "name": args.name,
            "issuer": args.issuer,
            "platform_org_id": args.platform_org_id,
        }
        return ApiCall("POST", ("organizations",), render_organization, body=body)
    path = ("organizations", args.name)
    if action == "show":
        return ApiCall("GET", path, render_organization)
    if action == "update":
        changes: JsonObject = {}
        if args.issuer is not None:
            changes["issuer"] = args.issuer
        if args.platform_org_id is not None:
            changes["platform_org_id"] = args.platform_org_id
        return ApiCall("PATCH", path, render_organization, body=changes)
    return ApiCall("DELETE", path, _said(f"deleted organization {args.name}"))


def _leases_call(args: argparse.Namespace) -> ApiCall:
    if args.leases_action == "revoke":
        return ApiCall("POST", ("leases", args.id, "revoke"), render_revoked)
    filters = {
        "organization": args.org,
        "project": args.project,
        "credential": args.credential,
        "state": args.state,
        "job": args.job,
        "limit": None if args.limit is None else str(args.limit),
        "before": args.before,
    }
    query = {key: value for key, value in filters.items() if value is not None}
    return ApiCall("GET", ("leases",), render_leases, query=query)


def _credentials_call(args: argparse.Namespace) -> ApiCall:
    action: str = args.credentials_action
    base = ("organizations", args.org, "credentials")
    if action == "list":
        return ApiCall("GET", base, render_credentials)
    if action == "create":
        body: JsonObject = {
            "name": args.name,
            "type": args.type,
            "token": args.token or "passthrough",
            "settings": settings_from(args.setting, args.setting_json),
            "bound_claims": bound_claims_from(args.bound_claim),
        }
        if args.audience is not None:
            body["audience"] = args.audience
        return ApiCall("POST", base, render_credential, body=body)
    path = (*base, args.name)
    if action == "show":
        return ApiCall("GET", path, render_credential)
    if action == "update":
        return ApiCall("PATCH", path, render_credential, body=_credential_patch(args))
    return ApiCall("DELETE", path, _said(f"deleted credential {args.name} of {args.org}"))


def _credential_patch(args: argparse.Namespace) -> JsonObject:
    # A JSON merge patch: only what was asked changes; null removes a key.
    patch: JsonObject = {}
    if args.token is not None:
        patch["token"] = args.token
    if args.clear_audience:
        patch["audience"] = None
    elif args.audience is not None:
        patch["audience"] = args.audience
    settings: JsonObject = settings_from(args.setting, args.setting_json)
    settings.update({key: None for key in args.unset_setting})
    if settings:
        patch["settings"] = settings
    claims: JsonObject = dict(bound_claims_from(args.bound_claim))
    claims.update({key: None for key in args.unset_bound_claim})
    if claims:
        patch["bound_claims"] = claims
    return patch


def _assignment_path(args: argparse.Namespace) -> tuple[str, ...]:
    return ("organizations", args.org, "projects", args.project, "credentials", args.credential)


def build_call(args: argparse.Namespace) -> ApiCall:
    """The API call an ``admin`` command line stands for."""
    command: str = args.admin_command
    if command == "orgs":
        return _orgs_call(args)
    if command == "credentials":
        return _credentials_call(args)
    if command == "assign":
        message = f"assigned {args.credential} to project {args.project} of {args.org}"
        return ApiCall("PUT", _assignment_path(args), _said(message))
    if command == "unassign":
        message = f"unassigned {args.credential} from project {args.project} of {args.org}"
        return ApiCall("DELETE", _assignment_path(args), _said(message))
    if command == "assignments":
        query = {"project": args.project} if args.project is not None else {}
        return ApiCall(
            "GET", ("organizations", args.org, "assignments"), render_assignments, query=query
        )
    if command == "leases":
        return _leases_call(args)
    filters = {
        "organization": args.org,
        "project": args.project,
        "credential": args.credential,
        "outcome": args.outcome,
        "since": args.since,
        "until": args.until,
        "limit": None if args.limit is None else str(args.limit),
        "before": None if args.before is None else str(args.before),
    }
    query = {key: value for key, value in filters.items() if value is not None}
    return ApiCall("GET", ("audit",), render_audit, query=query)


# -- talking to the broker -------------------------------------------------------------------


def describe_error(status: int, body: object) -> str:
    """One line from the broker's error_description, plus one line per invalid field."""
    if not isinstance(body, dict):
        return f"the broker answered HTTP {status}"
    message = str(body.get("error_description") or body.get("error") or f"HTTP {status}")
    fields = body.get("fields")
    if isinstance(fields, list):
        for item in fields:
            if isinstance(item, dict):
                message += f"\n  {_cell(item.get('field'))}: {_cell(item.get('message'))}"
    return message


async def send(call: ApiCall, *, base_url: str, token: str) -> JsonObject | None:
    """Send one call; the JSON answer (None when empty), or CliError with the broker's words."""
    headers = {
        "Authorization": f"Bearer {token}",
        "User-Agent": f"tokenbroker-cli/{__version__}",
        "Accept": "application/json",
    }
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                call.method, call.url(base_url), json=call.body, headers=headers
            ) as response,
        ):
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CliError(f"cannot reach the broker at {base_url}: {type(exc).__name__}") from None
    try:
        body: object = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    if status >= 400:
        raise CliError(describe_error(status, body))
    if body is not None and not isinstance(body, dict):
        raise CliError(f"the broker answered HTTP {status} with unexpected content")
    return body


def dev_stack_connection(data_dir: Path) -> tuple[str, str]:
    """(broker URL, admin token) of the ``tokenbroker dev`` serving ``data_dir``."""
    # Imported here: only this option needs the devstack extra.
    from tokenbroker.devstack.stack import read_state, state_path

    state = read_state(data_dir)
    if state is None:
        raise CliError(f"no dev stack is running there: {state_path(data_dir)} is missing")
    return state.broker_url, state.admin_token


def connection(args: argparse.Namespace) -> tuple[str, str]:
    """(broker URL, admin token) from ``--dev-stack``, else ``--url`` and ``--token-env``."""
    if args.dev_stack is not None:
        url, token = dev_stack_connection(Path(args.dev_stack))
    else:
        url, token = args.url, os.environ.get(args.token_env, "")
        if not token:
            raise CliError(
                f"set ${args.token_env} to an admin token (see [admin] tokens), "
                "or use --dev-stack against a running tokenbroker dev"
            )
    try:
        # The operator's own broker, often on an internal address: only https is required.
        return require_trusted_url(url, allow_private=True), token
    except ValueError as exc:
        raise CliError(f"--url {url!r}: {exc} (http is allowed on loopback only)") from None


async def execute(args: argparse.Namespace) -> str:
    """Run an ``admin`` command line against the broker; the text to print."""
    base_url, token = connection(args)
    call = build_call(args)
    body = await send(call, base_url=base_url, token=token)
    if args.json:
        return "" if body is None else json.dumps(body, indent=2)
    return call.render(body)


def new_admin_token() -> tuple[str, str]:
    """A new random admin token and the ``sha256:`` form ``[admin]`` lists it in."""
    token = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, admin_token_digest(token)


def render_new_token(token: str, digest: str) -> str:
    """What ``admin tokens hash`` prints: the token once, and where its hash goes."""
    return "\n".join(
        [
            f"token:  {token}",
            f"hash:   {digest}",
            "",
            "Give the token to its admin now: it is not kept anywhere. Configure the hash as",
            f'  [admin] tokens = ["{digest}"]',
            "or, named and scoped to organizations,",
            "  [[admin.org_tokens]]",
            '  name = "team-a"',
            f'  hash = "{digest}"',
            '  organizations = ["team-a"]',
        ]
    )


def run(args: argparse.Namespace) -> int:
    """Run the command and print its result."""
    if args.admin_command == "tokens":
        # Local: making a token needs no broker, and the token never crosses the network.
        print(render_new_token(*new_admin_token()), file=sys.stdout)
        return 0
    output = asyncio.run(execute(args))
    if output:
        print(output, file=sys.stdout)
    return 0


# -- the parser ------------------------------------------------------------------------------

# A string: argparse's action class is generic only to type checkers.
_SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    # Accepted both before and after the command; at the command, SUPPRESS keeps an absent
    # option from overwriting what was given before it.
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--url",
        default=default(os.environ.get("TOKENBROKER_URL", DEFAULT_URL)),
        help=f"the broker's base URL (default $TOKENBROKER_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token-env",
        metavar="NAME",
        default=default(DEFAULT_TOKEN_ENV),
        help=f"environment variable holding the admin token (default {DEFAULT_TOKEN_ENV})",
    )
    parser.add_argument(
        "--dev-stack",
        metavar="DIR",
        nargs="?",
        const=os.environ.get("TOKENBROKER_DEV_DATA_DIR", str(DEFAULT_DEV_DATA_DIR)),
        default=default(None),
        help=(
            "take the URL and admin token from a running tokenbroker dev's state file in DIR "
            f"(default $TOKENBROKER_DEV_DATA_DIR or {DEFAULT_DEV_DATA_DIR})"
        ),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the API's JSON instead of a table",
    )


def _command(subparsers: _SubParsers, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    _add_connection_options(parser, defaults=False)
    return parser


def _register_orgs(commands: _SubParsers) -> None:
    orgs = commands.add_parser("orgs", help="organizations")
    actions = orgs.add_subparsers(dest="orgs_action", metavar="ACTION", required=True)
    _command(actions, "list", "list organizations")
    create = _command(actions, "create", "create an organization")
    create.add_argument("name")
    create.add_argument("--issuer", required=True, help="name of a configured issuer")
    create.add_argument("--platform-org-id", required=True, help="the org's id on the platform")
    show = _command(actions, "show", "show an organization")
    show.add_argument("name")
    update = _command(actions, "update", "change an organization's issuer or platform org id")
    update.add_argument("name")
    update.add_argument("--issuer")
    update.add_argument("--platform-org-id")
    delete = _command(actions, "delete", "delete an organization with its credentials")
    delete.add_argument("name")


def _add_credential_values(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", choices=("passthrough", "mint"), help="outbound token mode")
    parser.add_argument("--audience", help="audience of the minted token (token = mint)")
    parser.add_argument(
        "--setting",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the credential type (repeatable)",
    )
    parser.add_argument(
        "--setting-json",
        type=key_json,
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a setting given as JSON: a number, boolean or list (repeatable)",
    )
    parser.add_argument(
        "--bound-claim",
        type=key_value,
        action="append",
        default=[],
        metavar="CLAIM=PATTERN",
        help="a claim the token must match; '*' globs; repeat a claim to allow several values",
    )


def _register_credentials(commands: _SubParsers) -> None:
    creds = commands.add_parser("credentials", help="typed credentials of an organization")
    actions = creds.add_subparsers(dest="credentials_action", metavar="ACTION", required=True)
    listing = _command(actions, "list", "list an organization's credentials")
    listing.add_argument("--org", required=True)
    create = _command(actions, "create", "create a credential")
    create.add_argument("name")
    create.add_argument("--org", required=True)
    create.add_argument(
        "--type", required=True, help="a credential type the broker has installed (see the README)"
    )
    _add_credential_values(create)
    show = _command(actions, "show", "show a credential (sensitive settings are never shown)")
    show.add_argument("name")
    show.add_argument("--org", required=True)
    update = _command(actions, "update", "change a credential; unnamed values stay")
    update.add_argument("name")
    update.add_argument("--org", required=True)
    _add_credential_values(update)
    update.add_argument("--clear-audience", action="store_true", help="remove the audience")
    update.add_argument(
        "--unset-setting", action="append", default=[], metavar="KEY", help="remove a setting"
    )
    update.add_argument(
        "--unset-bound-claim",
        action="append",
        default=[],
        metavar="CLAIM",
        help="remove a bound claim",
    )
    delete = _command(actions, "delete", "delete a credential and its assignments")
    delete.add_argument("name")
    delete.add_argument("--org", required=True)


def _register_assignments(commands: _SubParsers) -> None:
    for name, help_text in (
        ("assign", "make a credential available to a project"),
        ("unassign", "take a credential away from a project"),
    ):
        parser = _command(commands, name, help_text)
        parser.add_argument("org")
        parser.add_argument("project", help="the platform's project id")
        parser.add_argument("credential")
    listing = _command(commands, "assignments", "list an organization's assignments")
    listing.add_argument("org")
    listing.add_argument("--project")


def _register_audit(commands: _SubParsers) -> None:
    audit = _command(commands, "audit", "read the audit trail, newest first")
    audit.add_argument("--org")
    audit.add_argument("--project")
    audit.add_argument("--credential")
    audit.add_argument("--outcome", choices=("success", "denied", "error"))
    audit.add_argument("--since", metavar="TIME", help="RFC 3339 time, e.g. 2026-11-01T00:00:00Z")
    audit.add_argument("--until", metavar="TIME", help="RFC 3339 time (exclusive)")
    audit.add_argument("--limit", type=int, help="events per page (default 100)")
    audit.add_argument("--before", type=int, metavar="ID", help="the page's cursor")


def _register_tokens(commands: _SubParsers) -> None:
    tokens = commands.add_parser("tokens", help="admin tokens")
    actions = tokens.add_subparsers(dest="tokens_action", metavar="ACTION", required=True)
    actions.add_parser(
        "hash",
        help="make a new random admin token; print it once, with its sha256: form",
        description="Make a new random admin token and print it once, with the sha256: form "
        "that [admin] tokens and [[admin.org_tokens]] hash take.",
    )


def _register_leases(commands: _SubParsers) -> None:
    leases = commands.add_parser("leases", help="issued credentials: list, revoke")
    actions = leases.add_subparsers(dest="leases_action", metavar="ACTION", required=True)
    listing = _command(actions, "list", "list leases, newest first")
    listing.add_argument("--org")
    listing.add_argument("--project")
    listing.add_argument("--credential")
    listing.add_argument("--state", choices=("pending", "active", "revoked", "expired", "failed"))
    listing.add_argument("--job")
    listing.add_argument("--limit", type=int, help="leases per page (default 100)")
    listing.add_argument("--before", metavar="ID", help="the page's cursor")
    revoke = _command(actions, "revoke", "revoke a lease (at its backend where it can be)")
    revoke.add_argument("id")


def register(subparsers: _SubParsers) -> None:
    """Add the ``admin`` verb."""
    parser = subparsers.add_parser(
        "admin",
        help="manage organizations, credentials, assignments; read the audit trail",
        description="Speak to a running broker's admin API (/v1/admin).",
    )
    _add_connection_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)
    _register_orgs(commands)
    _register_credentials(commands)
    _register_assignments(commands)
    _register_audit(commands)
    _register_tokens(commands)
    _register_leases(commands)
    parser.set_defaults(handler=run)
