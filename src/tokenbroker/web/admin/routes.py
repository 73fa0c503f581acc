"""The admin API's handlers: organizations, credentials, assignments, audit events.

Each handler parses its request and hands it to ``AdminActions`` (actions.py), which scopes,
audits and logs what the admin does; the console goes through the same actions.
"""

from __future__ import annotations

from aiohttp import web

from tokenbroker.store import UNSET
from tokenbroker.web.admin.actions import CredentialChange, admin_actions
from tokenbroker.web.admin.schemas import (
    AssignmentQuery,
    AuditQuery,
    CredentialCreate,
    CredentialUpdate,
    LeaseQuery,
    OrganizationCreate,
    OrganizationUpdate,
    parse_body,
    parse_query,
)
from tokenbroker.web.admin.views import (
    assignment_view,
    audit_event_view,
    credential_view,
    organization_view,
)

routes = web.RouteTableDef()


# Organizations.


@routes.get("/organizations")
async def list_organizations(request: web.Request) -> web.Response:
    """The organizations this admin may see, by name."""
    orgs = await admin_actions(request).organizations()
    return web.json_response({"organizations": [organization_view(o) for o in orgs]})


@routes.post("/organizations")
async def create_organization(request: web.Request) -> web.Response:
    """Create an organization (409 when the name or the issuer + platform id is taken)."""
    body = await parse_body(request, OrganizationCreate)
    org = await admin_actions(request).create_organization(
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
    org = await admin_actions(request).organization(request.match_info["name"])
    return web.json_response(organization_view(org))


@routes.patch("/organizations/{name}")
async def update_organization(request: web.Request) -> web.Response:
    """Change an organization's issuer or platform org id."""
    body = await parse_body(request, OrganizationUpdate)
    org = await admin_actions(request).update_organization(
        request.match_info["name"], issuer=body.issuer, platform_org_id=body.platform_org_id
    )
    return web.json_response(organization_view(org))


@routes.delete("/organizations/{name}")
async def delete_organization(request: web.Request) -> web.Response:
    """Delete an organization with its credentials and assignments."""
    await admin_actions(request).delete_organization(request.match_info["name"])
    return web.Response(status=204)


# Credentials.


@routes.get("/organizations/{org}/credentials")
async def list_credentials(request: web.Request) -> web.Response:
    """The credentials of an organization."""
    creds = await admin_actions(request).credentials(request.match_info["org"])
    return web.json_response({"credentials": [credential_view(c) for c in creds]})


@routes.post("/organizations/{org}/credentials")
async def create_credential(request: web.Request) -> web.Response:
    """Create a typed credential; its settings must validate against the type's schema."""
    org = request.match_info["org"]
    body = await parse_body(request, CredentialCreate)
    cred = await admin_actions(request).create_credential(
        org,
        body.name,
        body.type,
        token=body.token,
        audience=body.audience,
        settings=body.settings,
        bound_claims=body.bound_claims,
    )
    return web.json_response(
        credential_view(cred),
        status=201,
        headers={"Location": f"/v1/admin/organizations/{org}/credentials/{cred.name}"},
    )


@routes.get("/organizations/{org}/credentials/{name}")
async def show_credential(request: web.Request) -> web.Response:
    """One credential, its settings without sensitive fields."""
    cred = await admin_actions(request).credential(
        request.match_info["org"], request.match_info["name"]
    )
    return web.json_response(credential_view(cred))


@routes.patch("/organizations/{org}/credentials/{name}")
async def update_credential(request: web.Request) -> web.Response:
    """Merge-patch a credential's token mode, audience, settings or bound claims."""
    body = await parse_body(request, CredentialUpdate)
    change = CredentialChange(
        token=UNSET if body.token is None else body.token,
        audience=body.audience if "audience" in body.model_fields_set else UNSET,
        settings=body.settings,
        bound_claims=body.bound_claims,
    )
    cred = await admin_actions(request).update_credential(
        request.match_info["org"], request.match_info["name"], change
    )
    return web.json_response(credential_view(cred))


@routes.delete("/organizations/{org}/credentials/{name}")
async def delete_credential(request: web.Request) -> web.Response:
    """Delete a credential and its assignments."""
    await admin_actions(request).delete_credential(
        request.match_info["org"], request.match_info["name"]
    )
    return web.Response(status=204)


# Assignments.


@routes.get("/organizations/{org}/projects/{project}/credentials")
async def list_project_credentials(request: web.Request) -> web.Response:
    """The credentials assigned to one project."""
    project = request.match_info["project"]
    org, creds = await admin_actions(request).project_credentials(
        request.match_info["org"], project
    )
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
    assignment = await admin_actions(request).assign(
        info["org"], info["project"], info["credential"]
    )
    return web.json_response(assignment_view(assignment))


@routes.delete("/organizations/{org}/projects/{project}/credentials/{credential}")
async def unassign(request: web.Request) -> web.Response:
    """Take a credential away from a project."""
    info = request.match_info
    await admin_actions(request).unassign(info["org"], info["project"], info["credential"])
    return web.Response(status=204)


@routes.get("/organizations/{org}/assignments")
async def list_assignments(request: web.Request) -> web.Response:
    """Every assignment of an organization, or of one of its projects."""
    query = parse_query(request, AssignmentQuery)
    found = await admin_actions(request).assignments(request.match_info["org"], query.project)
    return web.json_response({"assignments": [assignment_view(a) for a in found]})


# Audit.


@routes.get("/audit")
async def list_audit(request: web.Request) -> web.Response:
    """Audit events, newest first; ``next`` is the ``before`` of the following page."""
    page = await admin_actions(request).audit_events(parse_query(request, AuditQuery))
    return web.json_response(
        {"events": [audit_event_view(e) for e in page.events], "next": page.next}
    )


# Leases.


@routes.get("/leases")
async def list_leases(request: web.Request) -> web.Response:
    """Leases, newest first (filters organization, project, credential, state, job); ``next``
    is the ``before`` of the following page."""
    page = await admin_actions(request).leases(parse_query(request, LeaseQuery))
    return web.json_response(
        {"leases": [lease.as_public() for lease in page.leases], "next": page.next}
    )


@routes.post("/leases/{id}/revoke")
async def revoke_lease(request: web.Request) -> web.Response:
    """Revoke one lease at its backend where its type allows it; it is never handed out again."""
    result = await admin_actions(request).revoke_lease(request.match_info["id"])
    return web.json_response({"revoked": result.revoked, "not_revocable": result.not_revocable})
