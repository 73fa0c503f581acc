"""``GET /openapi.json``: OpenAPI 3.1 of every endpoint, as the app really answers.

Request bodies and query parameters of the admin API come from the same pydantic models that
validate them, refined with what the store checks after them (name patterns, lengths, control
characters), so an input the document calls valid is one the app accepts. A test checks that
every route the app serves is described here, and a schemathesis run against a served broker
checks that every answer (status, content type, body) is one the document describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from aiohttp import web
from pydantic import BaseModel

from tokenbroker import __version__
from tokenbroker.backends import registry
from tokenbroker.config.models import NAME_REGEX
from tokenbroker.output import known_formats
from tokenbroker.store.validation import (
    MAX_AUDIENCE,
    MAX_BOUND_CLAIMS,
    MAX_BOUND_VALUES,
    MAX_ID,
    MAX_TEXT,
    TOKEN_MODES,
)
from tokenbroker.web.admin.schemas import (
    AssignmentQuery,
    AuditQuery,
    CredentialCreate,
    CredentialUpdate,
    LeaseQuery,
    OrganizationCreate,
    OrganizationUpdate,
)
from tokenbroker.web.routes.oauth import SUBJECT_TOKEN_TYPES, TOKEN_EXCHANGE_GRANT

_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
Schema = dict[str, object]
Operation = dict[str, object]

# The longest credential name a runner may ask for (POST /v1/exchange refuses longer ones).
MAX_CREDENTIAL_NAME = 128
# RFC 8693 parameters the token endpoint refuses rather than ignores (web/routes/oauth.py).
REFUSED_TOKEN_PARAMETERS = ("actor_token", "actor_token_type", "scope", "resource")

# The name rule of config and store, in its JSON Schema (ECMA-262) form.
NAME: Schema = {"type": "string", "pattern": NAME_REGEX}
# A platform identifier (org id, project id) or an audience: the store refuses control
# characters; other unprintable characters (format, separator) are refused too, as described.
_PRINTABLE = r"^[^\u0000-\u001f\u007f-\u009f]*$"


def _printable(limit: int, what: str) -> Schema:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": limit,
        "pattern": _PRINTABLE,
        "description": f"{what}: printable text (no control, format or line separator characters)",
    }


_BOUND_CLAIM_VALUE: Schema = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_BOUND_VALUES},
    ]
}
# A key starting with '/' is a JSON pointer: every '~' is followed by 0 or 1.
_BOUND_CLAIM_KEY: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_TEXT,
    "pattern": r"^(?:[^/]|/(?:[^~]|~[01])*$)",
}


def _bound_claims(*, patch: bool) -> Schema:
    value = {"anyOf": [_BOUND_CLAIM_VALUE, {"type": "null"}]} if patch else _BOUND_CLAIM_VALUE
    return {
        "type": "object",
        "maxProperties": MAX_BOUND_CLAIMS,
        "propertyNames": _BOUND_CLAIM_KEY,
        "additionalProperties": value,
    }


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _model_schema(model: type[BaseModel], **refined: Schema) -> Schema:
    """The model's JSON schema, with ``refined`` properties replaced by what the store checks."""
    schema = model.model_json_schema()
    properties = schema["properties"]
    assert isinstance(properties, dict)
    for name, replacement in refined.items():
        default = properties[name].get("default") if isinstance(properties[name], dict) else None
        properties[name] = replacement if default is None else {**replacement, "default": default}
    return schema


def _request_schemas() -> dict[str, Schema]:
    types: Schema = {"type": "string", "enum": list(registry.credential_types())}
    token: Schema = {"type": "string", "enum": list(TOKEN_MODES)}
    audience = _printable(MAX_AUDIENCE, "the audience of minted tokens")
    platform_org_id = _printable(MAX_TEXT, "the platform's organization id")
    return {
        "OrganizationCreate": _model_schema(
            OrganizationCreate, name=NAME, issuer=NAME, platform_org_id=platform_org_id
        ),
        "OrganizationUpdate": _model_schema(
            OrganizationUpdate, issuer=NAME, platform_org_id=platform_org_id
        ),
        "CredentialCreate": _model_schema(
            CredentialCreate,
            name=NAME,
            type=types,
            token=token,
            audience=_nullable(audience),
            settings={"type": "object", "description": "validated by the type's settings schema"},
            bound_claims=_bound_claims(patch=False),
        ),
        "CredentialUpdate": _model_schema(
            CredentialUpdate,
            token=token,
            audience=_nullable(audience),
            settings={"type": "object", "description": "a JSON merge patch of the settings"},
            bound_claims=_bound_claims(patch=True),
        ),
    }


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Mapping[str, object]) -> dict[str, object]:
    return {_JSON: {"schema": schema}}


_RETRY_AFTER = {
    "Retry-After": {
        "required": True,
        "description": "whole seconds to wait before retrying",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "required": True,
        "description": 'RFC 6750: "Bearer", with error="invalid_token" when a token was refused',
        "schema": {"type": "string", "pattern": "^Bearer"},
    }
}
_ERRORS: dict[int, tuple[str, Mapping[str, object] | None]] = {
    400: (
        "invalid_request (malformed or ambiguous: an empty or non-JSON body, a duplicate JSON key, "
        "a repeated header, query or form parameter, a boolean other than true|false|1|0); "
        "RFC 6749/8693 codes on /oauth2/token",
        None,
    ),
    401: (
        "invalid_token (runner routes) or unauthorized (admin): no or a refused bearer token",
        _WWW_AUTHENTICATE,
    ),
    403: ("access_denied (runner routes) or forbidden (admin)", None),
    404: ("not_found", None),
    409: ("conflict: the name, or the issuer and platform org id, is taken", None),
    413: ("payload_too_large: the body is over [server] max_body_bytes", None),
    422: ("invalid_request with a field list", None),
    429: ("rate_limited", _RETRY_AFTER),
    502: ("upstream_error", None),
    503: (
        "temporarily_unavailable: audit_unavailable (the decision cannot be audited, nothing "
        "is issued), jwks_unavailable (an unknown key id while the issuer's JWKS is down) or "
        "rate_limit_unavailable (the rate limit store fails and on_redis_error is deny)",
        _RETRY_AFTER,
    ),
    504: ("upstream_timeout", None),
}


def _responses(ok: Mapping[str, object], *errors: int) -> dict[str, object]:
    """``ok`` (status -> response) plus the error responses of ``errors``."""
    out: dict[str, object] = dict(ok)
    for status in errors:
        description, headers = _ERRORS[status]
        response: dict[str, object] = {"description": description, "content": _json(_ref("Error"))}
        if headers is not None:
            response["headers"] = headers
        out[str(status)] = response
    return out


def _ok(description: str, schema: Mapping[str, object], status: int = 200) -> dict[str, object]:
    return {str(status): {"description": description, "content": _json(schema)}}


_DELETED: Schema = {"204": {"description": "deleted; no body"}}
_CREATED_HEADERS = {
    "Location": {
        "required": True,
        "description": "the path of the new resource",
        "schema": {"type": "string"},
    }
}


def _created(schema_name: str) -> dict[str, object]:
    return {
        "201": {
            "description": "created",
            "headers": _CREATED_HEADERS,
            "content": _json(_ref(schema_name)),
        }
    }


def _admin(
    summary: str,
    ok: Mapping[str, object],
    *errors: int,
    body: str | None = None,
    query: type[BaseModel] | None = None,
) -> Operation:
    # Every admin route reads the Authorization header (400 when it is sent twice).
    codes = (400, 401, 403, *errors, *((413, 422) if body is not None else ()))
    operation: Operation = {
        "summary": summary,
        "security": [{"adminToken": []}],
        "responses": _responses(ok, *sorted(set(codes))),
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(_ref(body))}
    if query is not None:
        operation["parameters"] = _query_parameters(query)
    return operation


# What the store checks on filters beyond the query models (store/validation.py), by model.
_QUERY_REFINED: dict[str, dict[str, Schema]] = {
    "AuditQuery": {"before": {"type": "integer", "minimum": 1, "maximum": MAX_ID}},
}
_NO_NUL = r"^[^\u0000]*$"


def _query_parameters(model: type[BaseModel]) -> list[dict[str, object]]:
    """One query parameter per field of ``model``; a parameter sent twice is a 422."""
    schema = model.model_json_schema()
    properties = schema["properties"]
    assert isinstance(properties, dict)
    parameters = []
    for name, field_schema in properties.items():
        assert isinstance(field_schema, dict)
        value = _QUERY_REFINED.get(model.__name__, {}).get(name) or _without_null(field_schema)
        if value.get("type") == "string" and "format" not in value and "enum" not in value:
            value = {**value, "pattern": _NO_NUL}
        parameters.append({"name": name, "in": "query", "required": False, "schema": value})
    return parameters


def _without_null(schema: Schema) -> Schema:
    """An optional field's schema without its ``null`` (a query parameter is absent instead)."""
    choices = schema.get("anyOf")
    if isinstance(choices, list):
        kept = [c for c in choices if c != {"type": "null"}]
        if len(kept) == 1:
            return {k: v for k, v in {**schema, **kept[0]}.items() if k not in {"anyOf", "title"}}
    return {k: v for k, v in schema.items() if k != "title"}


def _path_parameters(**schemas: Schema) -> list[dict[str, object]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": schema}
        for name, schema in schemas.items()
    ]


def _exchange_operation() -> Operation:
    query = [
        {
            "name": "format",
            "in": "query",
            "schema": {"type": "string", "enum": list(known_formats()), "default": "json"},
        },
        {
            "name": "dry_run",
            "in": "query",
            "description": "true: the decision trace, nothing issued",
            "schema": {"type": "string", "enum": ["true", "false", "1", "0"], "default": "false"},
        },
    ]
    credential = {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": MAX_CREDENTIAL_NAME,
        "description": "the credential's name; absent or null when one is assigned",
    }
    ok = {
        "200": {
            "description": (
                "format=json: the credential (ExchangeResult); dry_run=true: the decision trace "
                "(DecisionTrace); a format its credential type renders itself: that format's "
                "JSON document; env: KEY=value lines; shell: export KEY='value' lines"
            ),
            "content": {
                _JSON: {
                    "schema": {
                        "anyOf": [
                            _ref("ExchangeResult"),
                            _ref("DecisionTrace"),
                            _ref("FormatDocument"),
                        ]
                    }
                },
                "text/plain": {"schema": {"type": "string"}},
                "text/x-shellscript": {"schema": {"type": "string"}},
            },
        }
    }
    return {
        "summary": "Exchange a platform OIDC token for a credential",
        "security": [{"platformToken": []}],
        "parameters": query,
        "requestBody": {
            "required": False,
            "content": _json(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"credential": credential},
                }
            ),
        },
        "responses": _responses(ok, 400, 401, 403, 413, 429, 502, 503, 504),
    }


def _token_operation() -> Operation:
    form = {
        "type": "object",
        "required": ["grant_type", "subject_token", "subject_token_type"],
        "properties": {
            "grant_type": {"const": TOKEN_EXCHANGE_GRANT},
            "subject_token": {"type": "string", "minLength": 1},
            "subject_token_type": {"type": "string", "enum": sorted(SUBJECT_TOKEN_TYPES)},
            "audience": {"type": "string", "description": "the credential name"},
            "requested_token_type": {"type": "string"},
        },
        "propertyNames": {"not": {"enum": list(REFUSED_TOKEN_PARAMETERS)}},
    }
    token = {
        "type": "object",
        "required": ["access_token", "issued_token_type", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string"},
            "issued_token_type": {"type": "string"},
            "token_type": {"type": "string", "enum": ["Bearer", "N_A"]},
            "expires_in": {"type": "integer", "minimum": 0},
        },
    }
    return {
        "summary": "RFC 8693 token exchange",
        "requestBody": {"required": True, "content": {_FORM: {"schema": form}}},
        "responses": _responses(
            _ok("the credential as one token", token), 400, 413, 429, 502, 503, 504
        ),
    }


def _revoked_schema() -> Schema:
    lease: Schema = {
        "type": "object",
        "required": ["id", "credential", "type"],
        "properties": {
            "id": {"type": "string"},
            "credential": {"type": "string"},
            "type": {"type": "string"},
        },
    }
    leases: Schema = {"type": "array", "items": lease}
    return {
        "type": "object",
        "required": ["revoked", "not_revocable"],
        "properties": {"revoked": leases, "not_revocable": leases},
    }


def _revoke_operation() -> Operation:
    return {
        "summary": "Revoke the leases of the bearer platform token's job, or one of them",
        "security": [{"platformToken": []}],
        "requestBody": {
            "required": True,
            "content": _json(
                {
                    "oneOf": [
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["job"],
                            "properties": {"job": {"const": True}},
                        },
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["lease"],
                            "properties": {
                                "lease": {"type": "string", "minLength": 1, "maxLength": 64}
                            },
                        },
                    ]
                }
            ),
        },
        "responses": _responses(
            _ok(
                "leases revoked at their backend, and those whose credential only expires",
                _revoked_schema(),
            ),
            400,
            401,
            404,
            413,
            429,
            503,
        ),
    }


def _public(summary: str, ok: Mapping[str, object], *errors: int) -> Operation:
    return {"summary": summary, "responses": _responses(ok, *errors)}


def _component_schemas() -> dict[str, Schema]:
    string: Schema = {"type": "string"}
    nullable_string: Schema = {"type": ["string", "null"]}
    organization: Schema = {
        "type": "object",
        "required": ["name", "issuer", "platform_org_id"],
        "properties": {"name": string, "issuer": string, "platform_org_id": string},
    }
    credential: Schema = {
        "type": "object",
        "required": [
            "organization",
            "name",
            "type",
            "token",
            "audience",
            "settings",
            "bound_claims",
        ],
        "properties": {
            "organization": string,
            "name": string,
            "type": string,
            "token": {"type": "string", "enum": list(TOKEN_MODES)},
            "audience": nullable_string,
            "settings": {"type": "object", "description": "without the type's sensitive fields"},
            "bound_claims": {"type": "object", "additionalProperties": _BOUND_CLAIM_VALUE},
        },
    }
    assignment: Schema = {
        "type": "object",
        "required": ["organization", "project", "credential"],
        "properties": {"organization": string, "project": string, "credential": string},
    }
    audit_event: Schema = {
        "type": "object",
        "required": ["id", "time", "request_id", "outcome", "reason", "latency_ms"],
        "properties": {
            "id": {"type": "integer"},
            "time": {"type": "string", "format": "date-time"},
            "request_id": string,
            "outcome": {"type": "string", "enum": ["success", "denied", "error"]},
            "reason": string,
            "latency_ms": {"type": "number"},
            **{
                name: nullable_string
                for name in (
                    "issuer",
                    "organization",
                    "project",
                    "subject",
                    "credential",
                    "credential_type",
                    "token_fingerprint",
                    "client_address",
                )
            },
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error", "error_description", "request_id"],
            "properties": {
                "error": string,
                "error_description": string,
                "reason": string,
                "request_id": string,
                "fields": {
                    "type": "array",
                    "description": "422: one entry per field that does not validate",
                    "items": {
                        "type": "object",
                        "required": ["field", "message"],
                        "properties": {"field": string, "message": string},
                    },
                },
            },
        },
        "ExchangeResult": {
            "type": "object",
            "required": ["credential", "type", "expires_at", "values", "metadata"],
            "properties": {
                "credential": string,
                "type": string,
                "expires_at": {"type": "string", "format": "date-time"},
                "values": {"type": "object", "additionalProperties": string},
                "metadata": {"type": "object"},
            },
        },
        "DecisionTrace": {
            "type": "object",
            "description": "what a dry run decided, check by check; nothing is issued",
            "required": ["allowed", "checks"],
            "properties": {
                "allowed": {"type": "boolean"},
                "checks": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "description": "one check; what it found is in further fields",
                        "required": ["check", "ok", "detail"],
                        "properties": {
                            "check": string,
                            "ok": {"type": "boolean"},
                            "detail": string,
                            "reason": string,
                        },
                    },
                },
                "credential": string,
                "type": string,
                "error": string,
                "reason": string,
                "error_description": string,
            },
        },
        "FormatDocument": {
            "type": "object",
            "description": (
                "the JSON document of a format a credential type renders itself, in the "
                "shape the consuming tool defines (see the format's documentation)"
            ),
        },
        "Organization": organization,
        "Credential": credential,
        "Assignment": assignment,
        "AuditEvent": audit_event,
        "Readiness": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "unavailable", "shutting_down"]},
                "checks": {
                    "type": "object",
                    "description": "each dependency: ok, or failing with the error's kind",
                    "additionalProperties": string,
                },
            },
        },
        **_request_schemas(),
    }


def _list_of(key: str, item: str, **extra: Schema) -> Schema:
    return {
        "type": "object",
        "required": [key, *extra],
        "properties": {key: {"type": "array", "items": _ref(item)}, **extra},
    }


def _admin_paths() -> dict[str, dict[str, object]]:
    project = _printable(MAX_TEXT, "the platform's project id")
    organization = _ok("the organization", _ref("Organization"))
    credential = _ok("the credential, without its sensitive settings", _ref("Credential"))
    return {
        "/v1/admin/organizations": {
            "get": _admin(
                "List organizations",
                _ok("organizations", _list_of("organizations", "Organization")),
            ),
            "post": _admin(
                "Create an organization", _created("Organization"), 409, body="OrganizationCreate"
            ),
        },
        "/v1/admin/organizations/{name}": {
            "parameters": _path_parameters(name=NAME),
            "get": _admin("Show an organization", organization, 404),
            "patch": _admin(
                "Update an organization",
                organization,
                404,
                409,  # another organization signs in with that issuer and platform org id
                body="OrganizationUpdate",
            ),
            "delete": _admin("Delete an organization and its credentials", _DELETED, 404),
        },
        "/v1/admin/organizations/{org}/credentials": {
            "parameters": _path_parameters(org=NAME),
            "get": _admin(
                "List credentials", _ok("credentials", _list_of("credentials", "Credential")), 404
            ),
            "post": _admin(
                "Create a credential", _created("Credential"), 404, 409, body="CredentialCreate"
            ),
        },
        "/v1/admin/organizations/{org}/credentials/{name}": {
            "parameters": _path_parameters(org=NAME, name=NAME),
            "get": _admin("Show a credential", credential, 404),
            "patch": _admin("Merge-patch a credential", credential, 404, body="CredentialUpdate"),
            "delete": _admin("Delete a credential and its assignments", _DELETED, 404),
        },
        "/v1/admin/organizations/{org}/projects/{project}/credentials": {
            "parameters": _path_parameters(org=NAME, project=project),
            "get": _admin(
                "Credentials assigned to a project",
                _ok(
                    "the project's credentials",
                    _list_of(
                        "credentials",
                        "Credential",
                        organization={"type": "string"},
                        project={"type": "string"},
                    ),
                ),
                404,
            ),
        },
        "/v1/admin/organizations/{org}/projects/{project}/credentials/{credential}": {
            "parameters": _path_parameters(org=NAME, project=project, credential=NAME),
            "put": _admin(
                "Assign a credential to a project",
                _ok("the assignment", _ref("Assignment")),
                404,
                422,
            ),
            "delete": _admin("Unassign a credential", _DELETED, 404),
        },
        "/v1/admin/organizations/{org}/assignments": {
            "parameters": _path_parameters(org=NAME),
            "get": _admin(
                "Every assignment of an organization, or of one project",
                _ok("assignments", _list_of("assignments", "Assignment")),
                404,
                422,
                query=AssignmentQuery,
            ),
        },
        "/v1/admin/audit": {
            "get": _admin(
                "Audit events, newest first, paginated",
                _ok(
                    "a page of events; next is the before of the following page, or null",
                    _list_of("events", "AuditEvent", next={"type": ["integer", "null"]}),
                ),
                422,
                query=AuditQuery,
            )
        },
        "/v1/admin/leases": {
            "get": _admin(
                "Leases, newest first, filtered and paginated",
                _ok(
                    "a page of leases; next is the before of the following page, or null",
                    {
                        "type": "object",
                        "required": ["leases", "next"],
                        "properties": {
                            "leases": {"type": "array", "items": {"type": "object"}},
                            "next": {"type": ["string", "null"]},
                        },
                    },
                ),
                422,
                query=LeaseQuery,
            )
        },
        "/v1/admin/leases/{id}/revoke": {
            "parameters": _path_parameters(id={"type": "string", "minLength": 1}),
            "post": _admin(
                "Revoke one lease (at its backend where its type allows it)",
                _ok("what was revoked", _revoked_schema()),
                404,
            ),
        },
    }


@cache
def openapi_document() -> dict[str, object]:
    """The OpenAPI 3.1 document of the broker."""
    any_object: Schema = {"type": "object"}
    paths: dict[str, dict[str, object]] = {
        "/v1/exchange": {"post": _exchange_operation()},
        "/v1/leases/revoke": {"post": _revoke_operation()},
        "/oauth2/token": {"post": _token_operation()},
        "/.well-known/openid-configuration": {
            "get": _public(
                "The broker's issuer metadata",
                _ok(
                    "OpenID provider metadata",
                    {"type": "object", "required": ["issuer", "jwks_uri"]},
                ),
            )
        },
        "/.well-known/jwks.json": {
            "get": _public(
                "The broker's public signing keys",
                _ok(
                    "active and retiring keys",
                    {
                        "type": "object",
                        "required": ["keys"],
                        "properties": {"keys": {"type": "array", "items": any_object}},
                    },
                ),
            )
        },
        "/healthz": {
            "get": _public(
                "Liveness",
                _ok(
                    "serving",
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"const": "ok"}},
                    },
                ),
            )
        },
        "/readyz": {
            "get": _public(
                "Readiness (store, keys, issuers' keys)",
                {
                    "200": {
                        "description": "every dependency answers",
                        "content": _json(_ref("Readiness")),
                    },
                    "503": {
                        "description": "a dependency fails (named in checks), or shutting down",
                        "content": _json(_ref("Readiness")),
                    },
                },
            )
        },
        "/metrics": {
            "get": _public(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/openapi.json": {"get": _public("This document", _ok("OpenAPI 3.1", any_object))},
        **_admin_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "tokenbroker", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "platformToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
            "schemas": _component_schemas(),
        },
    }


async def openapi(request: web.Request) -> web.Response:
    """Serve the document."""
    return web.json_response(openapi_document())


def add_routes(app: web.Application) -> None:
    """Register the OpenAPI route."""
    app.router.add_get("/openapi.json", openapi)
