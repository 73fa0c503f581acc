"""The admin API's handlers: organizations, credentials, assignments, audit events."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from aiohttp import web

from tokenbroker.config.models import Settings
from tokenbroker.policy.models import BoundClaims
from tokenbroker.store import UNSET, Store, Unset
from tokenbroker.store.validation import warn_on_settings
from tokenbroker.web import keys
from tokenbroker.web.admin.schemas import (
    AssignmentQuery,
    AuditQuery,
    CredentialCreate,
    CredentialUpdate,
    OrganizationCreate,
    OrganizationUpdate,
    merge_patch,
    parse_body,
    parse_query,
    unprocessable,
)
from tokenbroker.web.admin.views import (
    assignment_view,
    audit_event_view,
    credential_view,
    organization_view,
)

routes = web.RouteTableDef()


def _store(request: web.Request) -> Store:
    return request.config_dict[keys.STORE]


def _check_issuer(request: web.Request, issuer: str) -> None:
    # The store cannot know which issuers are configured; an organization of an issuer the
    # broker does not trust could never sign in, so it is refused here.
    settings: Settings = request.config_dict[keys.SETTINGS]
    names = [i.name for i in settings.issuers]
    if issuer not in names:
        configured = ", ".join(names) or "none"
        raise unprocessable([("issuer", f"no issuer of that name; configured: {configured}")])


# Organizations.


@routes.get("/organizations")
async def list_organizations(request: web.Request) -> web.Response:
    """All organizations, by name."""
    orgs = await _store(request).policy.list_organizations()
    return web.json_response({"organizations": [organization_view(o) for o in orgs]})


@routes.post("/organizations")
async def create_organization(request: web.Request) -> web.Response:
    """Create an organization (409 when the name or the issuer + platform id is taken)."""
    body = await parse_body(request, OrganizationCreate)
    _check_issuer(request, body.issuer)
    org = await _store(request).policy.create_organization(
        body.name, body.issuer, body.platform_org_id
    )
    return web.json_response(
        organization_view(org),
        status=201,
        headers={"Location": f"/v1/admin/organizations/{org.name}"},
    )


@routes.get("/organizations/{name}")
async def show_organization(request: web.Request) -> web.Response:
    """One organization."""
    org = await _store(request).policy.get_organization(request.match_info["name"])
    return web.json_response(organization_view(org))


@routes.patch("/organizations/{name}")
async def update_organization(request: web.Request) -> web.Response:
    """Change an organization's issuer or platform org id."""
    body = await parse_body(request, OrganizationUpdate)
    if body.issuer is not None:
        _check_issuer(request, body.issuer)
    org = await _store(request).policy.update_organization(
        request.match_info["name"], issuer=body.issuer, platform_org_id=body.platform_org_id
    )
    return web.json_response(organization_view(org))


@routes.delete("/organizations/{name}")
async def delete_organization(request: web.Request) -> web.Response:
    """Delete an organization with its credentials and assignments."""
    await _store(request).policy.delete_organization(request.match_info["name"])
    return web.Response(status=204)


# Credentials.


@routes.get("/organizations/{org}/credentials")
async def list_credentials(request: web.Request) -> web.Response:
    """The credentials of an organization."""
    creds = await _store(request).policy.list_credentials(request.match_info["org"])
    return web.json_response({"credentials": [credential_view(c) for c in creds]})


@routes.post("/organizations/{org}/credentials")
async def create_credential(request: web.Request) -> web.Response:
    """Create a typed credential; its settings must validate against the type's schema."""
    org = request.match_info["org"]
    body = await parse_body(request, CredentialCreate)
    cred = await _store(request).policy.create_credential(
        org,
        body.name,
        body.type,
        token=body.token,
        audience=body.audience,
        settings=body.settings,
        # The store checks every value's shape and names the key of a bad one.
        bound_claims=cast(BoundClaims, body.bound_claims),
    )
    warn_on_settings(org, cred.name, cred.type, cred.settings)
    return web.json_response(
        credential_view(cred),
        status=201,
        headers={"Location": f"/v1/admin/organizations/{org}/credentials/{cred.name}"},
    )


@routes.get("/organizations/{org}/credentials/{name}")
async def show_credential(request: web.Request) -> web.Response:
    """One credential, its settings without sensitive fields."""
    cred = await _store(request).policy.get_credential(
        request.match_info["org"], request.match_info["name"]
    )
    return web.json_response(credential_view(cred))


@routes.patch("/organizations/{org}/credentials/{name}")
async def update_credential(request: web.Request) -> web.Response:
    """Merge-patch a credential's token mode, audience, settings or bound claims."""
    org, name = request.match_info["org"], request.match_info["name"]
    body = await parse_body(request, CredentialUpdate)
    store = _store(request)
    current = await store.policy.get_credential(org, name)
    settings: Mapping[str, object] | Unset = UNSET
    if body.settings is not None:
        settings = merge_patch(current.settings, body.settings)
    bound_claims: BoundClaims | Unset = UNSET
    if body.bound_claims is not None:
        # The store checks every value's shape and names the key of a bad one.
        bound_claims = cast(BoundClaims, merge_patch(current.bound_claims, body.bound_claims))
    cred = await store.policy.update_credential(
        org,
        name,
        token=UNSET if body.token is None else body.token,
        audience=body.audience if "audience" in body.model_fields_set else UNSET,
        settings=settings,
        bound_claims=bound_claims,
    )
    warn_on_settings(org, cred.name, cred.type, cred.settings)
    return web.json_response(credential_view(cred))


@routes.delete("/organizations/{org}/credentials/{name}")
async def delete_credential(request: web.Request) -> web.Response:
    """Delete a credential and its assignments."""
    await _store(request).policy.delete_credential(
        request.match_info["org"], request.match_info["name"]
    )
    return web.Response(status=204)


# Assignments.


@routes.get("/organizations/{org}/projects/{project}/credentials")
async def list_project_credentials(request: web.Request) -> web.Response:
    """The credentials assigned to one project."""
    store = _store(request)
    org = await store.policy.get_organization(request.match_info["org"])
    project = request.match_info["project"]
    creds = await store.policy.assigned_credentials(org.id, project)
    return web.json_response(
        {
            "organization": org.name,
            "project": project,
            "credentials": [credential_view(c) for c in creds],
        }
    )


@routes.put("/organizations/{org}/projects/{project}/credentials/{credential}")
async def assign(request: web.Request) -> web.Response:
    """Assign a credential to a project (idempotent)."""
    info = request.match_info
    assignment = await _store(request).policy.assign(
        info["org"], info["project"], info["credential"]
    )
    return web.json_response(assignment_view(assignment))


@routes.delete("/organizations/{org}/projects/{project}/credentials/{credential}")
async def unassign(request: web.Request) -> web.Response:
    """Take a credential away from a project."""
    info = request.match_info
    await _store(request).policy.unassign(info["org"], info["project"], info["credential"])
    return web.Response(status=204)


@routes.get("/organizations/{org}/assignments")
async def list_assignments(request: web.Request) -> web.Response:
    """Every assignment of an organization, or of one of its projects."""
    query = parse_query(request, AssignmentQuery)
    found = await _store(request).policy.list_assignments(request.match_info["org"], query.project)
    return web.json_response({"assignments": [assignment_view(a) for a in found]})


# Audit.


@routes.get("/audit")
async def list_audit(request: web.Request) -> web.Response:
    """Audit events, newest first; ``next`` is the ``before`` of the following page."""
    query = parse_query(request, AuditQuery)
    # One more than asked tells whether another page exists without a second query.
    events = await _store(request).audit.events(
        organization=query.organization,
        project=query.project,
        credential=query.credential,
        outcome=query.outcome,
        since=query.since,
        until=query.until,
        limit=query.limit + 1,
        before_id=query.before,
    )
    page = events[: query.limit]
    more = len(events) > query.limit
    return web.json_response(
        {
            "events": [audit_event_view(e) for e in page],
            "next": page[-1].id if more and page else None,
        }
    )
