"""What the admin API accepts: strict request shapes, and the 400/422 mapping of bad input.

These models check the JSON shape only (types, unknown fields, nulls); what the values mean
(names, settings against the credential type's schema, bound claims) is checked by the store,
which every writer goes through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal, TypeVar

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from tokenbroker.errors import InvalidRequest, UnprocessableEntity
from tokenbroker.web.parsing import loads_json

Model = TypeVar("Model", bound=BaseModel)


class _Body(BaseModel):
    # Strict: a JSON number is not a string, "true" is not a boolean; unknown fields are errors.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _not_null(value: object) -> object:
    # In a PATCH an absent field means "unchanged"; an explicit null for a field that cannot be
    # empty is a mistake, not a request to clear it.
    if value is None:
        raise ValueError("must not be null")
    return value


class OrganizationCreate(_Body):
    """``POST /organizations``."""

    name: str
    issuer: str
    platform_org_id: str


class OrganizationUpdate(_Body):
    """``PATCH /organizations/{name}``: absent fields stay as they are."""

    issuer: str | None = None
    platform_org_id: str | None = None

    _present = field_validator("issuer", "platform_org_id", mode="before")(_not_null)


class CredentialCreate(_Body):
    """``POST /organizations/{org}/credentials``."""

    name: str
    type: str
    token: str = "passthrough"
    audience: str | None = None
    settings: dict[str, object] = Field(default_factory=dict)
    bound_claims: dict[str, object] = Field(default_factory=dict)


class CredentialUpdate(_Body):
    """``PATCH .../credentials/{name}``, a JSON merge patch (RFC 7396): absent fields stay,
    ``settings`` and ``bound_claims`` are merged key by key (``null`` removes a key), and
    ``"audience": null`` clears the audience. Name and type are fixed once created."""

    token: str | None = None
    audience: str | None = None
    settings: dict[str, object] | None = None
    bound_claims: dict[str, object] | None = None

    _present = field_validator("token", "settings", "bound_claims", mode="before")(_not_null)


def merge_patch(target: Mapping[str, object], patch: Mapping[str, object]) -> dict[str, object]:
    """RFC 7396: ``patch`` applied to ``target``; null removes a key, objects merge recursively.

    Merging (rather than replacing) lets a caller change one setting without sending back the
    sensitive ones, which responses never show.
    """
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            current = merged.get(key)
            base = current if isinstance(current, Mapping) else {}
            merged[key] = merge_patch(base, value)
        else:
            merged[key] = value
    return merged


class AuditQuery(BaseModel):
    """``GET /audit`` query parameters (strings on the wire, so not strict)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    organization: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    project: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    credential: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    outcome: Literal["success", "denied", "error"] | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    # Below the store's page cap, so one extra row can be fetched to see whether more exist.
    limit: int = Field(default=100, ge=1, le=500)
    before: int | None = Field(default=None, ge=1)


class LeaseQuery(BaseModel):
    """``GET /leases`` query parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    organization: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    project: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    credential: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    state: Literal["pending", "active", "revoked", "expired", "failed"] | None = None
    job: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    # Below the store's page cap, so one extra row can be fetched to see whether more exist.
    limit: int = Field(default=100, ge=1, le=500)
    before: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class AssignmentQuery(BaseModel):
    """``GET /organizations/{org}/assignments`` query parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: Annotated[str, Field(min_length=1, max_length=256)] | None = None


def field_problems(problems: list[tuple[str, str]]) -> dict[str, object]:
    """The ``details`` of a 422: ``{"fields": [{"field": ..., "message": ...}]}``."""
    return {"fields": [{"field": field, "message": message} for field, message in problems]}


def unprocessable(problems: list[tuple[str, str]]) -> UnprocessableEntity:
    """The 422 for a list of (field, message) problems; names the fields, never their values."""
    names = ", ".join(dict.fromkeys(field for field, _ in problems))
    return UnprocessableEntity(
        "invalid_input",
        f"the request does not validate: {names}",
        details=field_problems(problems),
    )


def _message(error: Mapping[str, object]) -> str:
    # pydantic prefixes messages raised by our own validators; the field name says enough.
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(field, message) for each error; never the rejected input, which may hold a secret."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append((field, _message(error)))
    return problems


async def read_json(request: web.Request) -> object:
    """The request body as JSON; InvalidRequest (400) when it is not JSON, or repeats a key."""
    raw = await request.read()
    if not raw.strip():
        raise InvalidRequest("malformed_json", "the request body must be a JSON object")
    return loads_json(raw, reason="malformed_json")


async def parse_body(request: web.Request, model: type[Model]) -> Model:
    """Read and validate a JSON body against a request model."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise unprocessable([("body", "must be a JSON object")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise unprocessable(validation_problems(exc)) from None


def parse_query(request: web.Request, model: type[Model]) -> Model:
    """Validate query parameters against a model; a parameter given twice is a 422 too."""
    query = request.query
    repeated = sorted({key for key in query if len(query.getall(key)) > 1})
    if repeated:
        raise unprocessable([(key, "given more than once") for key in repeated])
    try:
        return model.model_validate(dict(query))
    except ValidationError as exc:
        raise unprocessable(validation_problems(exc)) from None
