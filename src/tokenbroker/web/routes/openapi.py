"""``GET /openapi.json``: OpenAPI 3.1 of every endpoint.

Request bodies of the admin API come from the same pydantic models that validate them, and a
test checks that every route the app serves is described here, so the two cannot drift.
"""

from __future__ import annotations

from functools import cache

from aiohttp import web
from pydantic import BaseModel

from tokenbroker import __version__
from tokenbroker.output import known_formats
from tokenbroker.web.admin.schemas import (
    CredentialCreate,
    CredentialUpdate,
    OrganizationCreate,
    OrganizationUpdate,
)

_JSON = "application/json"
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
Operation = dict[str, object]


def _responses(ok: str, *errors: int, ok_schema: object | None = None) -> dict[str, object]:
    body: dict[str, object] = {"description": ok}
    if ok_schema is not None:
        body["content"] = {_JSON: {"schema": ok_schema}}
    out: dict[str, object] = {"200": body}
    for status in errors:
        out[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {_JSON: {"schema": _ERROR_REF}},
        }
    return out


_ERROR_TEXT = {
    400: "invalid_request: malformed request",
    401: "invalid_token (exchange) or unauthorized (admin)",
    403: "access_denied (exchange) or forbidden (admin)",
    404: "not_found",
    409: "conflict: already exists",
    413: "payload_too_large",
    422: "invalid_request with a field list",
    429: "rate_limited, with Retry-After",
    502: "upstream_error",
    503: "temporarily_unavailable, with Retry-After (the audit store cannot take the decision)",
    504: "upstream_timeout",
}


def _body(model: type[BaseModel]) -> dict[str, object]:
    return {"required": True, "content": {_JSON: {"schema": model.model_json_schema()}}}


def _admin(summary: str, *errors: int, body: type[BaseModel] | None = None) -> Operation:
    operation: Operation = {
        "summary": summary,
        "security": [{"adminToken": []}],
        "responses": _responses("ok", 401, 403, *errors),
    }
    if body is not None:
        operation["requestBody"] = _body(body)
    return operation


def _path_params(*names: str) -> list[dict[str, object]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in names
    ]


@cache
def openapi_document() -> dict[str, object]:
    """The OpenAPI 3.1 document of the broker."""
    exchange_query = [
        {
            "name": "format",
            "in": "query",
            "schema": {"type": "string", "enum": list(known_formats()), "default": "json"},
        },
        {"name": "dry_run", "in": "query", "schema": {"type": "boolean", "default": False}},
    ]
    credential_params = _path_params("org", "name")
    assignment_params = _path_params("org", "project", "credential")
    paths: dict[str, dict[str, object]] = {
        "/v1/exchange": {
            "post": {
                "summary": "Exchange a platform OIDC token for a credential",
                "security": [{"platformToken": []}],
                "parameters": exchange_query,
                "requestBody": {
                    "required": False,
                    "content": {
                        _JSON: {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"credential": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": _responses(
                    "the credential (format=json shown), or the dry-run trace",
                    400,
                    401,
                    403,
                    413,
                    429,
                    502,
                    503,
                    504,
                    ok_schema={"$ref": "#/components/schemas/ExchangeResult"},
                ),
            }
        },
        "/v1/leases/revoke": {
            "post": {
                "summary": "Revoke what the bearer platform token was issued",
                "security": [{"platformToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        _JSON: {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["job"],
                                "properties": {"job": {"const": True}},
                            }
                        }
                    },
                },
                "responses": _responses(
                    "revoked and not_revocable credential names", 400, 401, 503
                ),
            }
        },
        "/oauth2/token": {
            "post": {
                "summary": "RFC 8693 token exchange",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["grant_type", "subject_token", "subject_token_type"],
                                "properties": {
                                    "grant_type": {
                                        "const": "urn:ietf:params:oauth:grant-type:token-exchange"
                                    },
                                    "subject_token": {"type": "string"},
                                    "subject_token_type": {"type": "string"},
                                    "audience": {
                                        "type": "string",
                                        "description": "the credential name",
                                    },
                                    "requested_token_type": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": _responses("access_token, issued_token_type, expires_in", 400, 502),
            }
        },
        "/.well-known/openid-configuration": {
            "get": {"summary": "The broker's issuer metadata", "responses": _responses("ok")}
        },
        "/.well-known/jwks.json": {
            "get": {"summary": "The broker's public signing keys", "responses": _responses("ok")}
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": _responses("ok")}},
        "/readyz": {"get": {"summary": "Readiness (store, keys)", "responses": _responses("ok")}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": _responses("ok")}},
        "/openapi.json": {"get": {"summary": "This document", "responses": _responses("ok")}},
        "/v1/admin/organizations": {
            "get": _admin("List organizations"),
            "post": _admin("Create an organization", 409, 422, body=OrganizationCreate),
        },
        "/v1/admin/organizations/{name}": {
            "parameters": _path_params("name"),
            "get": _admin("Show an organization", 404),
            "patch": _admin("Update an organization", 404, 422, body=OrganizationUpdate),
            "delete": _admin("Delete an organization and its credentials", 404),
        },
        "/v1/admin/organizations/{org}/credentials": {
            "parameters": _path_params("org"),
            "get": _admin("List credentials", 404),
            "post": _admin("Create a credential", 404, 409, 422, body=CredentialCreate),
        },
        "/v1/admin/organizations/{org}/credentials/{name}": {
            "parameters": credential_params,
            "get": _admin("Show a credential", 404),
            "patch": _admin("Merge-patch a credential", 404, 422, body=CredentialUpdate),
            "delete": _admin("Delete a credential and its assignments", 404),
        },
        "/v1/admin/organizations/{org}/projects/{project}/credentials": {
            "parameters": _path_params("org", "project"),
            "get": _admin("Credentials assigned to a project", 404),
        },
        "/v1/admin/organizations/{org}/projects/{project}/credentials/{credential}": {
            "parameters": assignment_params,
            "put": _admin("Assign a credential to a project", 404, 422),
            "delete": _admin("Unassign a credential", 404),
        },
        "/v1/admin/organizations/{org}/assignments": {
            "parameters": _path_params("org"),
            "get": _admin("Every assignment of an organization", 404),
        },
        "/v1/admin/audit": {"get": _admin("Audit events, newest first, paginated", 422)},
        "/v1/admin/leases": {"get": _admin("Leases, newest first, filtered, paginated", 422)},
        "/v1/admin/leases/{id}/revoke": {
            "post": {
                **_admin("Revoke one lease (at its backend where its type allows it)", 404),
                "parameters": _path_params("id"),
            }
        },
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
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "error_description", "request_id"],
                    "properties": {
                        "error": {"type": "string"},
                        "error_description": {"type": "string"},
                        "reason": {"type": "string"},
                        "request_id": {"type": "string"},
                    },
                },
                "ExchangeResult": {
                    "type": "object",
                    "required": ["credential", "type", "expires_at", "values", "metadata"],
                    "properties": {
                        "credential": {"type": "string"},
                        "type": {"type": "string"},
                        "expires_at": {"type": "string", "format": "date-time"},
                        "values": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "metadata": {"type": "object"},
                    },
                },
            },
        },
    }


async def openapi(request: web.Request) -> web.Response:
    """Serve the document."""
    return web.json_response(openapi_document())


def add_routes(app: web.Application) -> None:
    """Register the OpenAPI route."""
    app.router.add_get("/openapi.json", openapi)
