"""The policy aggregate: organizations, their credentials, which projects may use them, and the
shared revision that tells other instances' caches the policy changed.

Inputs are checked (validation.py) before anything is written; lookups of unknown names raise
NotFound, duplicates Conflict.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final, Literal, cast

from sqlalchemy import CursorResult, Row, Select, and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.errors import Conflict, NotFound
from tokenbroker.policy.models import (
    BoundClaims,
    Credential,
    CredentialAssignment,
    Organization,
    TokenMode,
)
from tokenbroker.policy.rules import MintedAudience
from tokenbroker.store import validation as check
from tokenbroker.store.engine import Connections
from tokenbroker.store.policy_cache import DEFAULT_POLL_SECONDS, PolicyCache
from tokenbroker.store.tables import assignments, credentials, organizations, policy_revision

log = logging.getLogger(__name__)


class _Unset(enum.Enum):
    UNSET = enum.auto()


UNSET: Final = _Unset.UNSET
"""Marks an argument of an update that was not given (``None`` is a value: no audience)."""
Unset = Literal[_Unset.UNSET]


class Policy:
    """Organizations, credentials and assignments; with a ``cache``, the exchange's lookup.

    Each call runs where ``connections`` says: its own transaction (``Store.policy``), or the
    caller's (``UnitOfWork.policy``). The cache (see policy_cache.py for why it stays correct)
    is only ever given to the store's own aggregate, whose writes invalidate it.
    """

    def __init__(
        self,
        connections: Connections,
        types: check.CredentialTypes,
        *,
        cache: PolicyCache | None = None,
        allow_private_backends: bool = False,
    ) -> None:
        self._connections = connections
        self._types = types
        self._cache = cache
        # [security] allow_private_backends: credential URLs may name private addresses.
        self._allow_private_backends = allow_private_backends
        self._poll_failing = False

    # -- organizations ---------------------------------------------------------------------

    async def create_organization(
        self, name: str, issuer: str, platform_org_id: str
    ) -> Organization:
        """Add an organization; Conflict if its name or (issuer, platform org id) is taken."""
        problems = check.Problems()
        check.check_name(problems, "name", name)
        check.check_name(problems, "issuer", issuer)
        check.check_text(problems, "platform_org_id", platform_org_id)
        problems.raise_if_any("invalid_organization", "organization")
        async with self._connections.writing() as conn:
            if await _organization_row(conn, name) is not None:
                raise _organization_exists(name)
            await _require_platform_id_free(conn, issuer, platform_org_id, except_id=None)
            now = _now()
            try:
                result = await conn.execute(
                    insert(organizations).values(
                        name=name,
                        issuer=issuer,
                        platform_org_id=platform_org_id,
                        created_at=now,
                        updated_at=now,
                    )
                )
            except IntegrityError:
                # Lost a race with a concurrent insert of the same organization.
                raise _organization_exists(name) from None
        return Organization(
            id=_inserted_id(result), name=name, issuer=issuer, platform_org_id=platform_org_id
        )

    async def get_organization(self, name: str) -> Organization:
        """The named organization, or NotFound."""
        async with self._connections.reading() as conn:
            return _organization(await _require_organization(conn, name))

    async def list_organizations(self) -> list[Organization]:
        """Every organization, by name."""
        async with self._connections.reading() as conn:
            rows = await conn.execute(select(organizations).order_by(organizations.c.name))
            return [_organization(row) for row in rows]

    async def update_organization(
        self, name: str, *, issuer: str | None = None, platform_org_id: str | None = None
    ) -> Organization:
        """Change an organization's issuer and/or platform org id."""
        problems = check.Problems()
        if issuer is not None:
            check.check_name(problems, "issuer", issuer)
        if platform_org_id is not None:
            check.check_text(problems, "platform_org_id", platform_org_id)
        problems.raise_if_any("invalid_organization", "organization")
        async with self._connections.writing() as conn:
            row = await _require_organization(conn, name)
            new_issuer = row.issuer if issuer is None else issuer
            new_platform_id = row.platform_org_id if platform_org_id is None else platform_org_id
            await _require_platform_id_free(conn, new_issuer, new_platform_id, except_id=row.id)
            try:
                await conn.execute(
                    update(organizations)
                    .where(organizations.c.id == row.id)
                    .values(issuer=new_issuer, platform_org_id=new_platform_id, updated_at=_now())
                )
            except IntegrityError:
                raise _platform_id_taken() from None
        return Organization(
            id=row.id, name=name, issuer=new_issuer, platform_org_id=new_platform_id
        )

    async def delete_organization(self, name: str) -> None:
        """Remove an organization with its credentials and assignments."""
        async with self._connections.writing() as conn:
            row = await _require_organization(conn, name)
            # Explicit rather than relying on ON DELETE CASCADE alone: a SQLite connection
            # opened without the foreign_keys pragma would otherwise leave orphans behind.
            await conn.execute(delete(assignments).where(assignments.c.organization_id == row.id))
            await conn.execute(delete(credentials).where(credentials.c.organization_id == row.id))
            await conn.execute(delete(organizations).where(organizations.c.id == row.id))

    async def find_organization(self, issuer: str, platform_org_id: str) -> Organization | None:
        """The organization signing in with ``issuer`` under ``platform_org_id`` (unique index)."""
        async with self._connections.reading() as conn:
            return await _find_organization(conn, issuer, platform_org_id)

    # -- credentials -----------------------------------------------------------------------

    async def create_credential(
        self,
        organization: str,
        name: str,
        type: str,
        *,
        token: str = "passthrough",  # noqa: S107 -- a token mode, not a secret
        audience: str | None = None,
        settings: Mapping[str, object],
        bound_claims: Mapping[str, str | list[str]] | None = None,
    ) -> Credential:
        """Add a typed credential; invalid settings are a 422 naming ``settings.<field>``."""
        async with self._connections.writing() as conn:
            org = await _require_organization(conn, organization)
            problems = check.Problems()
            check.check_name(problems, "name", name)
            checked = await self._checked_credential(
                conn,
                problems,
                organization,
                name,
                type,
                token,
                audience,
                settings,
                {} if bound_claims is None else bound_claims,
            )
            if await _credential_id(conn, org.id, name) is not None:
                raise _credential_exists(organization, name)
            values = _credential_values(checked)
            try:
                result = await conn.execute(
                    insert(credentials).values(
                        organization_id=org.id,
                        name=name,
                        created_at=values["updated_at"],
                        **values,
                    )
                )
            except IntegrityError:
                raise _credential_exists(organization, name) from None
        return replace(checked, id=_inserted_id(result))

    async def get_credential(self, organization: str, name: str) -> Credential:
        """The named credential of an organization, or NotFound."""
        async with self._connections.reading() as conn:
            return await _get_credential(conn, organization, name)

    async def list_credentials(self, organization: str) -> list[Credential]:
        """Every credential of an organization, by name."""
        async with self._connections.reading() as conn:
            org = await _require_organization(conn, organization)
            rows = await conn.execute(
                _credential_select()
                .where(credentials.c.organization_id == org.id)
                .order_by(credentials.c.name)
            )
            return [_credential(row) for row in rows]

    async def update_credential(
        self,
        organization: str,
        name: str,
        *,
        type: str | Unset = UNSET,
        token: str | Unset = UNSET,
        audience: str | Unset | None = UNSET,
        settings: Mapping[str, object] | Unset = UNSET,
        bound_claims: Mapping[str, str | list[str]] | Unset = UNSET,
    ) -> Credential:
        """Change only the given fields (``settings`` replaced whole); revalidated as a whole."""
        async with self._connections.writing() as conn:
            current = await _get_credential(conn, organization, name)
            checked = await self._checked_credential(
                conn,
                check.Problems(),
                organization,
                name,
                current.type if type is UNSET else type,
                current.token if token is UNSET else token,
                current.audience if audience is UNSET else audience,
                current.settings if settings is UNSET else settings,
                current.bound_claims if bound_claims is UNSET else bound_claims,
            )
            await conn.execute(
                update(credentials)
                .where(credentials.c.id == current.id)
                .values(**_credential_values(checked))
            )
        return replace(checked, id=current.id)

    async def delete_credential(self, organization: str, name: str) -> None:
        """Remove a credential and its assignments."""
        async with self._connections.writing() as conn:
            credential = await _get_credential(conn, organization, name)
            await conn.execute(
                delete(assignments).where(assignments.c.credential_id == credential.id)
            )
            await conn.execute(delete(credentials).where(credentials.c.id == credential.id))

    async def _checked_credential(
        self,
        conn: AsyncConnection,
        problems: check.Problems,
        organization: str,
        name: str,
        type: str,
        token: str,
        audience: str | None,
        settings: Mapping[str, object],
        bound_claims: Mapping[str, str | list[str]],
    ) -> Credential:
        """The credential as it will be stored (id not known yet), or UnprocessableEntity."""
        types = self._types
        check.check_token_mode(problems, types, type, token, audience)
        candidate = check.minted_audience(types, organization, name, type, token, audience)
        if candidate is not None:
            minted = await _minted_audiences(conn, types)
            check.check_audience_unshared(problems, candidate, minted)
        claims = check.check_bound_claims(problems, bound_claims)
        clean_settings = check.check_settings(
            problems, types, type, settings, allow_private_backends=self._allow_private_backends
        )
        problems.raise_if_any("invalid_credential", "credential")
        return Credential(
            id=0,
            organization=organization,
            name=name,
            type=type,
            token=cast(TokenMode, token),
            audience=audience,
            settings=clean_settings,
            bound_claims=claims,
        )

    # -- assignments -----------------------------------------------------------------------

    async def assign(
        self, organization: str, project: str, credential: str
    ) -> CredentialAssignment:
        """Make a credential available to a project; assigning twice is the same as once."""
        problems = check.Problems()
        check.check_text(problems, "project", project)
        problems.raise_if_any("invalid_assignment", "assignment")
        async with self._connections.writing() as conn:
            cred = await _get_credential(conn, organization, credential)
            org_id = await _organization_id(conn, organization)
            if not await _assignment_exists(conn, org_id, project, cred.id):
                try:
                    # A savepoint: losing a race to the same insert must not abort the
                    # transaction.
                    async with conn.begin_nested():
                        await conn.execute(
                            insert(assignments).values(
                                organization_id=org_id,
                                project=project,
                                credential_id=cred.id,
                                created_at=_now(),
                            )
                        )
                except IntegrityError:
                    pass
        return CredentialAssignment(
            organization=organization, project=project, credential=credential
        )

    async def assign_many(self, organization: str, pairs: Iterable[tuple[str, str]]) -> int:
        """Assign many ``(project, credential)`` pairs in one statement; how many were new."""
        async with self._connections.writing() as conn:
            org_id = await _organization_id(conn, organization)
            ids = {
                row.name: row.id
                for row in await conn.execute(
                    select(credentials.c.name, credentials.c.id).where(
                        credentials.c.organization_id == org_id
                    )
                )
            }
            existing = {
                (row.project, row.credential_id)
                for row in await conn.execute(
                    select(assignments.c.project, assignments.c.credential_id).where(
                        assignments.c.organization_id == org_id
                    )
                )
            }
            problems = check.Problems()
            wanted: dict[tuple[str, int], None] = {}
            for index, (project, credential) in enumerate(pairs):
                check.check_text(problems, f"[{index}].project", project)
                credential_id = ids.get(credential)
                if credential_id is None:
                    raise _credential_not_found(organization, credential)
                if (project, credential_id) not in existing:
                    wanted[(project, credential_id)] = None
            problems.raise_if_any("invalid_assignment", "assignments")
            if wanted:
                now = _now()
                await conn.execute(
                    insert(assignments),
                    [
                        {
                            "organization_id": org_id,
                            "project": project,
                            "credential_id": credential_id,
                            "created_at": now,
                        }
                        for project, credential_id in wanted
                    ],
                )
        return len(wanted)

    async def unassign(self, organization: str, project: str, credential: str) -> None:
        """Take a credential away from a project; NotFound if it was not assigned."""
        async with self._connections.writing() as conn:
            cred = await _get_credential(conn, organization, credential)
            removed = 0
            if not _unmatchable(project):
                result = await conn.execute(
                    delete(assignments).where(
                        assignments.c.credential_id == cred.id, assignments.c.project == project
                    )
                )
                removed = result.rowcount
        if removed == 0:
            raise NotFound(
                "assignment_not_found",
                f"credential {credential!r} is not assigned to project {project!r}",
            )

    async def list_assignments(
        self, organization: str, project: str | None = None
    ) -> list[CredentialAssignment]:
        """Assignments of an organization, optionally of one project; by project, credential."""
        async with self._connections.reading() as conn:
            org_id = await _organization_id(conn, organization)
            if project is not None and _unmatchable(project):
                return []
            query = (
                select(assignments.c.project, credentials.c.name)
                .join(credentials, credentials.c.id == assignments.c.credential_id)
                .where(assignments.c.organization_id == org_id)
                .order_by(assignments.c.project, credentials.c.name)
            )
            if project is not None:
                query = query.where(assignments.c.project == project)
            return [
                CredentialAssignment(
                    organization=organization, project=row.project, credential=row.name
                )
                for row in await conn.execute(query)
            ]

    async def assigned_credentials(self, organization_id: int, project: str) -> list[Credential]:
        """Credentials assigned to a project, by name (one indexed query)."""
        if _unmatchable(project):
            return []
        async with self._connections.reading() as conn:
            rows = await conn.execute(assigned_credentials_query(organization_id, project))
            return [_credential(row) for row in rows]

    async def find_organization_assignments(
        self, issuer: str, platform_org_id: str, project: str | None
    ) -> tuple[Organization | None, list[Credential]]:
        """The exchange's lookup: a token's organization and its project's credentials, by name.

        From the policy cache when it has a verified answer; else one query, remembered.
        """
        cache = self._cache
        if cache is None:
            return await self._lookup(issuer, platform_org_id, project)
        key = (issuer, platform_org_id, project)
        hit = cache.get(key)
        if hit is not None:
            return hit[0], list(hit[1])
        generation = cache.generation
        organization, assigned = await self._lookup(issuer, platform_org_id, project)
        cache.put(key, (organization, tuple(assigned)), generation)
        return organization, assigned

    async def _lookup(
        self, issuer: str, platform_org_id: str, project: str | None
    ) -> tuple[Organization | None, list[Credential]]:
        # One statement rather than the organization, then its assignments: the two are read
        # from one snapshot, so an assignment never comes without the organization it names.
        async with self._connections.reading() as conn:
            if project is None or _unmatchable(project):
                return await _find_organization(conn, issuer, platform_org_id), []
            if _unmatchable(issuer, platform_org_id):
                return None, []
            rows = (
                await conn.execute(
                    _ORGANIZATION_ASSIGNMENTS,
                    {"issuer": issuer, "platform_org_id": platform_org_id, "project": project},
                )
            ).all()
        if not rows:
            return None, []
        first = rows[0]
        organization = Organization(
            id=cast(int, first.org_id),
            name=cast(str, first.organization_name),
            issuer=cast(str, first.org_issuer),
            platform_org_id=cast(str, first.org_platform_org_id),
        )
        # An organization without assignments for the project is one row of NULL credentials.
        return organization, [_credential(row) for row in rows if row.id is not None]

    # -- the shared revision ---------------------------------------------------------------

    async def revision(self) -> int | None:
        """The shared policy revision (None if its row is missing)."""
        async with self._connections.reading() as conn:
            value = (await conn.execute(_READ_POLICY_REVISION)).scalar_one_or_none()
        return None if value is None else int(value)

    async def check_revision(self) -> None:
        """Poll the revision once: a change empties the policy cache; success keeps it fresh."""
        cache = self._cache
        if cache is None:
            return
        # Taken before the query: the answer reflects every commit made before this moment.
        started = cache.now()
        revision = await self.revision()
        if revision is not None:
            cache.observe_revision(revision, started)

    async def watch_revision(self, interval_seconds: float = DEFAULT_POLL_SECONDS) -> None:
        """Poll the revision forever (a task beside the server); failures are logged, retried.

        While polls fail the cache goes stale and answers nothing: lookups go to the database.
        """
        while True:
            try:
                await self.check_revision()
            except Exception as exc:
                if not self._poll_failing:
                    # The exception's type only: its text may hold the database URL.
                    log.warning(
                        "policy revision poll failed; policy lookups go to the database",
                        extra={"error": type(exc).__name__},
                    )
                self._poll_failing = True
            else:
                if self._poll_failing:
                    log.info("policy revision poll recovered")
                self._poll_failing = False
            await asyncio.sleep(interval_seconds)


async def bump_revision(conn: AsyncConnection) -> None:
    """Increment the shared policy revision (in the caller's write transaction)."""
    await conn.execute(_BUMP_POLICY_REVISION)


def assigned_credentials_query(organization_id: int, project: str) -> Select[tuple[object, ...]]:
    """The indexed query of a project's credentials, on its own so a test can check its plan."""
    return (
        _credential_select()
        .join(assignments, assignments.c.credential_id == credentials.c.id)
        .where(assignments.c.organization_id == organization_id, assignments.c.project == project)
        .order_by(credentials.c.name)
    )


# -- statements on a connection ------------------------------------------------------------


async def _organization_row(conn: AsyncConnection, name: str) -> Row[tuple[object, ...]] | None:
    if _unmatchable(name):
        return None
    result = await conn.execute(select(organizations).where(organizations.c.name == name))
    return result.first()


async def _require_organization(conn: AsyncConnection, name: str) -> Row[tuple[object, ...]]:
    row = await _organization_row(conn, name)
    if row is None:
        raise NotFound("organization_not_found", f"no organization named {name!r}")
    return row


async def _organization_id(conn: AsyncConnection, name: str) -> int:
    return cast(int, (await _require_organization(conn, name)).id)


async def _find_organization(
    conn: AsyncConnection, issuer: str, platform_org_id: str
) -> Organization | None:
    if _unmatchable(issuer, platform_org_id):
        return None
    row = (
        await conn.execute(
            select(organizations).where(
                organizations.c.issuer == issuer,
                organizations.c.platform_org_id == platform_org_id,
            )
        )
    ).first()
    return None if row is None else _organization(row)


async def _require_platform_id_free(
    conn: AsyncConnection, issuer: str, platform_org_id: str, *, except_id: int | None
) -> None:
    taken = await _find_organization(conn, issuer, platform_org_id)
    if taken is not None and taken.id != except_id:
        raise _platform_id_taken()


async def _get_credential(conn: AsyncConnection, organization: str, name: str) -> Credential:
    org = await _require_organization(conn, organization)
    if _unmatchable(name):
        raise _credential_not_found(organization, name)
    row = (
        await conn.execute(
            _credential_select().where(
                credentials.c.organization_id == org.id, credentials.c.name == name
            )
        )
    ).first()
    if row is None:
        raise _credential_not_found(organization, name)
    return _credential(row)


async def _credential_id(conn: AsyncConnection, organization_id: int, name: str) -> int | None:
    result = await conn.execute(
        select(credentials.c.id).where(
            credentials.c.organization_id == organization_id, credentials.c.name == name
        )
    )
    return cast(int | None, result.scalar_one_or_none())


async def _assignment_exists(
    conn: AsyncConnection, organization_id: int, project: str, credential_id: int
) -> bool:
    result = await conn.execute(
        select(assignments.c.id).where(
            assignments.c.organization_id == organization_id,
            assignments.c.project == project,
            assignments.c.credential_id == credential_id,
        )
    )
    return result.first() is not None


def _credential_values(credential: Credential) -> dict[str, object]:
    """The columns a create and an update both write."""
    return {
        "type": credential.type,
        "token": credential.token,
        "audience": credential.audience,
        "settings": dict(credential.settings),
        "bound_claims": dict(credential.bound_claims),
        "updated_at": _now(),
    }


def _unmatchable(*values: str) -> bool:
    # Stored text never holds NUL (PostgreSQL refuses it in text, with an error rather than
    # "no match"), so a lookup with one — say from a token claim — can answer at once.
    return any("\x00" in value for value in values)


def _now() -> datetime:
    return datetime.now(UTC)


# What _credential() reads from a row, beside the organization's name.
_CREDENTIAL_COLUMNS: Final = (
    credentials.c.id,
    credentials.c.name,
    credentials.c.type,
    credentials.c.token,
    credentials.c.audience,
    credentials.c.settings,
    credentials.c.bound_claims,
)


def _credential_select() -> Select[tuple[object, ...]]:
    return select(organizations.c.name.label("organization_name"), *_CREDENTIAL_COLUMNS).join(
        organizations, organizations.c.id == credentials.c.organization_id
    )


# Built once: the lookup runs on every exchange, and its statement never changes.
_ORGANIZATION_ASSIGNMENTS: Final[Select[tuple[object, ...]]] = (
    select(
        organizations.c.id.label("org_id"),
        organizations.c.name.label("organization_name"),
        organizations.c.issuer.label("org_issuer"),
        organizations.c.platform_org_id.label("org_platform_org_id"),
        *_CREDENTIAL_COLUMNS,
    )
    .select_from(organizations)
    .outerjoin(
        assignments,
        and_(
            assignments.c.organization_id == organizations.c.id,
            assignments.c.project == bindparam("project"),
        ),
    )
    .outerjoin(
        credentials,
        and_(
            credentials.c.id == assignments.c.credential_id,
            credentials.c.organization_id == organizations.c.id,
        ),
    )
    .where(
        organizations.c.issuer == bindparam("issuer"),
        organizations.c.platform_org_id == bindparam("platform_org_id"),
    )
    .order_by(credentials.c.name)
)
_BUMP_POLICY_REVISION: Final = (
    update(policy_revision)
    .where(policy_revision.c.id == 1)
    .values(revision=policy_revision.c.revision + 1)
)
_READ_POLICY_REVISION: Final = select(policy_revision.c.revision).where(policy_revision.c.id == 1)


def _organization(row: Row[tuple[object, ...]]) -> Organization:
    return Organization(
        id=cast(int, row.id),
        name=cast(str, row.name),
        issuer=cast(str, row.issuer),
        platform_org_id=cast(str, row.platform_org_id),
    )


def _credential(row: Row[tuple[object, ...]]) -> Credential:
    settings = cast(Mapping[str, object], row.settings)
    bound = cast(Mapping[str, str | list[str]], row.bound_claims)
    return Credential(
        id=cast(int, row.id),
        organization=cast(str, row.organization_name),
        name=cast(str, row.name),
        type=cast(str, row.type),
        token=cast(TokenMode, row.token),
        audience=cast(str | None, row.audience),
        settings=dict(settings),
        bound_claims=cast(BoundClaims, dict(bound)),
    )


def _inserted_id(result: CursorResult[tuple[object, ...]]) -> int:
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the database returned no primary key for an insert")
    return cast(int, key[0])


def _organization_exists(name: str) -> Conflict:
    return Conflict("organization_exists", f"an organization named {name!r} already exists")


def _platform_id_taken() -> Conflict:
    return Conflict(
        "organization_exists",
        "another organization already signs in with this issuer and platform org id",
    )


def _credential_exists(organization: str, name: str) -> Conflict:
    return Conflict(
        "credential_exists", f"organization {organization!r} already has a credential {name!r}"
    )


def _credential_not_found(organization: str, name: str) -> NotFound:
    return NotFound(
        "credential_not_found", f"organization {organization!r} has no credential named {name!r}"
    )


async def _minted_audiences(
    conn: AsyncConnection, types: check.CredentialTypes
) -> list[MintedAudience]:
    """Every stored mint credential's audience, across organizations."""
    rows = await conn.execute(
        select(organizations.c.name, credentials.c.name, credentials.c.type, credentials.c.audience)
        .join(organizations, organizations.c.id == credentials.c.organization_id)
        .where(credentials.c.token == "mint")
    )
    found = []
    for org, name, type_name, audience in rows:
        minted = check.minted_audience(types, org, name, type_name, "mint", audience)
        if minted is not None:
            found.append(minted)
    return found
