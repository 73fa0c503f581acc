"""Every query the broker runs: one Repository per transaction, on one connection.

The only code that writes SQL. Inputs are checked (validation.py) before anything is written;
lookups of unknown names raise NotFound, duplicates Conflict.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal, cast

from sqlalchemy import (
    CursorResult,
    Row,
    Select,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.errors import Conflict, NotFound
from tokenbroker.policy.models import (
    AuditEvent,
    BoundClaims,
    Credential,
    CredentialAssignment,
    Organization,
    Outcome,
    TokenMode,
)
from tokenbroker.store import validation as check
from tokenbroker.store.tables import (
    assignments,
    audit_events,
    credentials,
    organizations,
    policy_revision,
    signing_keys,
)


class _Unset(enum.Enum):
    UNSET = enum.auto()


_AUDIT_TEXT_LENGTHS = {
    column.name: column.type.length
    for column in audit_events.columns
    if isinstance(column.type, String)
}
_SIGNING_KEYS_LOCK_ID = 0x746B6B657973  # "tkkeys"

UNSET: Final = _Unset.UNSET
"""Marks an argument of an update that was not given (``None`` is a value: no audience)."""
Unset = Literal[_Unset.UNSET]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SigningKeyRow:
    """A stored signing key: public data in the clear, the private JWK sealed."""

    kid: str
    alg: str
    state: str
    created_at: datetime
    retired_at: datetime | None
    public_jwk: Mapping[str, object]
    private_jwk_sealed: str = field(repr=False)


class Repository:
    """The store's operations on one connection; the caller owns the transaction."""

    def __init__(
        self, connection: AsyncConnection, *, allow_private_backends: bool = False
    ) -> None:
        self._conn = connection
        # [security] allow_private_backends: credential URLs may name private addresses.
        self._allow_private_backends = allow_private_backends

    @property
    def connection(self) -> AsyncConnection:
        """The connection this repository runs on (for the store's own plumbing)."""
        return self._conn

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
        if await self._organization_row(name) is not None:
            raise Conflict("organization_exists", f"an organization named {name!r} already exists")
        await self._require_platform_id_free(issuer, platform_org_id, except_id=None)
        now = _now()
        try:
            result = await self._conn.execute(
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
            raise Conflict(
                "organization_exists", f"an organization named {name!r} already exists"
            ) from None
        new_id = _inserted_id(result)
        return Organization(id=new_id, name=name, issuer=issuer, platform_org_id=platform_org_id)

    async def get_organization(self, name: str) -> Organization:
        """The named organization, or NotFound."""
        return _organization(await self._require_organization(name))

    async def list_organizations(self) -> list[Organization]:
        """Every organization, by name."""
        rows = await self._conn.execute(select(organizations).order_by(organizations.c.name))
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
        row = await self._require_organization(name)
        new_issuer = row.issuer if issuer is None else issuer
        new_platform_id = row.platform_org_id if platform_org_id is None else platform_org_id
        await self._require_platform_id_free(new_issuer, new_platform_id, except_id=row.id)
        try:
            await self._conn.execute(
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
        row = await self._require_organization(name)
        # Explicit rather than relying on ON DELETE CASCADE alone: a SQLite connection opened
        # without the foreign_keys pragma would otherwise leave orphans behind.
        await self._conn.execute(delete(assignments).where(assignments.c.organization_id == row.id))
        await self._conn.execute(delete(credentials).where(credentials.c.organization_id == row.id))
        await self._conn.execute(delete(organizations).where(organizations.c.id == row.id))

    async def find_organization(self, issuer: str, platform_org_id: str) -> Organization | None:
        """The organization signing in with ``issuer`` under ``platform_org_id`` (unique index)."""
        if _unmatchable(issuer, platform_org_id):
            return None
        row = (
            await self._conn.execute(
                select(organizations).where(
                    organizations.c.issuer == issuer,
                    organizations.c.platform_org_id == platform_org_id,
                )
            )
        ).first()
        return None if row is None else _organization(row)

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
        """Add a typed credential; settings must validate against the type's schema."""
        org = await self._require_organization(organization)
        problems = check.Problems()
        check.check_name(problems, "name", name)
        check.check_token_mode(problems, type, token, audience)
        claims = check.check_bound_claims(problems, {} if bound_claims is None else bound_claims)
        clean_settings = check.check_settings(
            problems, type, settings, allow_private_backends=self._allow_private_backends
        )
        problems.raise_if_any("invalid_credential", "credential")
        if await self._credential_row(org.id, name) is not None:
            raise _credential_exists(organization, name)
        now = _now()
        try:
            result = await self._conn.execute(
                insert(credentials).values(
                    organization_id=org.id,
                    name=name,
                    type=type,
                    token=token,
                    audience=audience,
                    settings=clean_settings,
                    bound_claims=dict(claims),
                    created_at=now,
                    updated_at=now,
                )
            )
        except IntegrityError:
            raise _credential_exists(organization, name) from None
        return Credential(
            id=_inserted_id(result),
            organization=organization,
            name=name,
            type=type,
            token=cast(TokenMode, token),
            audience=audience,
            settings=clean_settings,
            bound_claims=claims,
        )

    async def get_credential(self, organization: str, name: str) -> Credential:
        """The named credential of an organization, or NotFound."""
        org = await self._require_organization(organization)
        if _unmatchable(name):
            raise _credential_not_found(organization, name)
        row = (
            await self._conn.execute(
                _credential_select().where(
                    credentials.c.organization_id == org.id, credentials.c.name == name
                )
            )
        ).first()
        if row is None:
            raise _credential_not_found(organization, name)
        return _credential(row)

    async def list_credentials(self, organization: str) -> list[Credential]:
        """Every credential of an organization, by name."""
        org = await self._require_organization(organization)
        rows = await self._conn.execute(
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
        """Change the given fields (``settings`` is replaced whole); the result is revalidated."""
        current = await self.get_credential(organization, name)
        new_type = current.type if type is UNSET else type
        new_token = current.token if token is UNSET else token
        new_audience = current.audience if audience is UNSET else audience
        new_settings = current.settings if settings is UNSET else settings
        new_claims = current.bound_claims if bound_claims is UNSET else bound_claims
        problems = check.Problems()
        check.check_token_mode(problems, new_type, new_token, new_audience)
        claims = check.check_bound_claims(problems, new_claims)
        clean_settings = check.check_settings(
            problems,
            new_type,
            new_settings,
            allow_private_backends=self._allow_private_backends,
        )
        problems.raise_if_any("invalid_credential", "credential")
        await self._conn.execute(
            update(credentials)
            .where(credentials.c.id == current.id)
            .values(
                type=new_type,
                token=new_token,
                audience=new_audience,
                settings=clean_settings,
                bound_claims=dict(claims),
                updated_at=_now(),
            )
        )
        return Credential(
            id=current.id,
            organization=organization,
            name=name,
            type=new_type,
            token=cast(TokenMode, new_token),
            audience=new_audience,
            settings=clean_settings,
            bound_claims=claims,
        )

    async def delete_credential(self, organization: str, name: str) -> None:
        """Remove a credential and its assignments."""
        credential = await self.get_credential(organization, name)
        await self._conn.execute(
            delete(assignments).where(assignments.c.credential_id == credential.id)
        )
        await self._conn.execute(delete(credentials).where(credentials.c.id == credential.id))

    # -- assignments -----------------------------------------------------------------------

    async def assign(
        self, organization: str, project: str, credential: str
    ) -> CredentialAssignment:
        """Make a credential available to a project; assigning twice is the same as once."""
        problems = check.Problems()
        check.check_text(problems, "project", project)
        problems.raise_if_any("invalid_assignment", "assignment")
        cred = await self.get_credential(organization, credential)
        org_id = await self._organization_id(organization)
        if not await self._assignment_exists(org_id, project, cred.id):
            try:
                # A savepoint: losing a race to the same insert must not abort the transaction.
                async with self._conn.begin_nested():
                    await self._conn.execute(
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
        org_id = await self._organization_id(organization)
        ids = {
            row.name: row.id
            for row in await self._conn.execute(
                select(credentials.c.name, credentials.c.id).where(
                    credentials.c.organization_id == org_id
                )
            )
        }
        existing = {
            (row.project, row.credential_id)
            for row in await self._conn.execute(
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
            await self._conn.execute(
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
        cred = await self.get_credential(organization, credential)
        removed = 0
        if not _unmatchable(project):
            result = await self._conn.execute(
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
        org_id = await self._organization_id(organization)
        query = (
            select(assignments.c.project, credentials.c.name)
            .join(credentials, credentials.c.id == assignments.c.credential_id)
            .where(assignments.c.organization_id == org_id)
            .order_by(assignments.c.project, credentials.c.name)
        )
        if project is not None:
            if _unmatchable(project):
                return []
            query = query.where(assignments.c.project == project)
        return [
            CredentialAssignment(
                organization=organization, project=row.project, credential=row.name
            )
            for row in await self._conn.execute(query)
        ]

    async def assigned_credentials(self, organization_id: int, project: str) -> list[Credential]:
        """Credentials assigned to a project, by name: the exchange hot path, one indexed query."""
        if _unmatchable(project):
            return []
        rows = await self._conn.execute(assigned_credentials_query(organization_id, project))
        return [_credential(row) for row in rows]

    async def find_organization_assignments(
        self, issuer: str, platform_org_id: str, project: str | None
    ) -> tuple[Organization | None, list[Credential]]:
        """The exchange's lookup: a token's organization and its project's credentials, by name.

        One statement instead of ``find_organization`` then ``assigned_credentials``: on the
        hot path every statement is several trips through the driver (aiosqlite's thread).
        """
        if project is None or _unmatchable(project):
            return await self.find_organization(issuer, platform_org_id), []
        if _unmatchable(issuer, platform_org_id):
            return None, []
        rows = (
            await self._conn.execute(
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

    # -- audit -----------------------------------------------------------------------------

    async def list_audit(
        self,
        *,
        organization: str | None = None,
        project: str | None = None,
        credential: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[AuditEvent]:
        """Audit events matching every given filter, newest first; page on with ``before_id``."""
        check.check_audit_query(
            outcome=outcome,
            since=since,
            until=until,
            limit=limit,
            before_id=before_id,
            filters={"organization": organization, "project": project, "credential": credential},
        )
        conditions = []
        for column, value in (
            (audit_events.c.organization, organization),
            (audit_events.c.project, project),
            (audit_events.c.credential, credential),
            (audit_events.c.outcome, outcome),
        ):
            if value is not None:
                conditions.append(column == value)
        if since is not None:
            conditions.append(audit_events.c.time >= since)
        if until is not None:
            conditions.append(audit_events.c.time < until)
        if before_id is not None:
            conditions.append(audit_events.c.id < before_id)
        query = (
            select(audit_events)
            .where(and_(True, *conditions))
            .order_by(audit_events.c.id.desc())
            .limit(limit)
        )
        return [_audit_event(row) for row in await self._conn.execute(query)]

    # -- policy revision -------------------------------------------------------------------

    async def bump_policy_revision(self) -> None:
        """Increment the shared policy revision (in the caller's write transaction)."""
        await self._conn.execute(_BUMP_POLICY_REVISION)

    async def policy_revision(self) -> int | None:
        """The shared policy revision, or None if its row is missing."""
        value = (await self._conn.execute(_READ_POLICY_REVISION)).scalar_one_or_none()
        return None if value is None else int(value)

    # -- signing keys ----------------------------------------------------------------------

    async def signing_key_rows(self) -> list[SigningKeyRow]:
        """Every stored signing key, oldest first."""
        rows = await self._conn.execute(
            select(signing_keys).order_by(signing_keys.c.created_at, signing_keys.c.kid)
        )
        return [
            SigningKeyRow(
                kid=row.kid,
                alg=row.alg,
                state=row.state,
                created_at=row.created_at,
                retired_at=row.retired_at,
                public_jwk=dict(row.public_jwk),
                private_jwk_sealed=row.private_jwk_sealed,
            )
            for row in rows
        ]

    async def lock_signing_keys(self) -> None:
        """Keep other writers of the signing keys out until this transaction ends.

        Take it before reading keys you mean to change. PostgreSQL: a transaction-scoped
        advisory lock. SQLite: the write transaction (BEGIN IMMEDIATE) already holds the
        database's single write lock, so there is nothing more to take.
        """
        if self._conn.dialect.name == "postgresql":
            await self._conn.execute(select(func.pg_advisory_xact_lock(_SIGNING_KEYS_LOCK_ID)))

    async def replace_signing_key_rows(self, rows: Iterable[SigningKeyRow]) -> None:
        """Make the stored set exactly ``rows`` (taking :meth:`lock_signing_keys` if not held)."""
        # Instances saving at once take turns; otherwise both could delete, then collide.
        # Taking the advisory lock again in one transaction is allowed and costs nothing.
        await self.lock_signing_keys()
        await self._conn.execute(delete(signing_keys))
        values = [
            {
                "kid": row.kid,
                "alg": row.alg,
                "state": row.state,
                "created_at": row.created_at,
                "retired_at": row.retired_at,
                "public_jwk": dict(row.public_jwk),
                "private_jwk_sealed": row.private_jwk_sealed,
            }
            for row in rows
        ]
        if values:
            await self._conn.execute(insert(signing_keys), values)

    async def count(self, table: str) -> int:
        """Rows in one of the store's tables (for tests, benchmarks and diagnostics)."""
        tables = {t.name: t for t in (organizations, credentials, assignments, audit_events)}
        result = await self._conn.execute(select(func.count()).select_from(tables[table]))
        return int(result.scalar_one())

    # -- helpers ---------------------------------------------------------------------------

    async def _organization_row(self, name: str) -> Row[tuple[object, ...]] | None:
        if _unmatchable(name):
            return None
        result = await self._conn.execute(select(organizations).where(organizations.c.name == name))
        return result.first()

    async def _require_organization(self, name: str) -> Row[tuple[object, ...]]:
        row = await self._organization_row(name)
        if row is None:
            raise NotFound("organization_not_found", f"no organization named {name!r}")
        return row

    async def _organization_id(self, name: str) -> int:
        return cast(int, (await self._require_organization(name)).id)

    async def _require_platform_id_free(
        self, issuer: str, platform_org_id: str, *, except_id: int | None
    ) -> None:
        taken = await self.find_organization(issuer, platform_org_id)
        if taken is not None and taken.id != except_id:
            raise _platform_id_taken()

    async def _credential_row(
        self, organization_id: int, name: str
    ) -> Row[tuple[object, ...]] | None:
        result = await self._conn.execute(
            select(credentials.c.id).where(
                credentials.c.organization_id == organization_id, credentials.c.name == name
            )
        )
        return result.first()

    async def _assignment_exists(
        self, organization_id: int, project: str, credential_id: int
    ) -> bool:
        result = await self._conn.execute(
            select(assignments.c.id).where(
                assignments.c.organization_id == organization_id,
                assignments.c.project == project,
                assignments.c.credential_id == credential_id,
            )
        )
        return result.first() is not None


def _unmatchable(*values: str) -> bool:
    # Stored text never holds NUL (PostgreSQL refuses it in text, with an error rather than
    # "no match"), so a lookup with one — say from a token claim — can answer at once.
    return any("\x00" in value for value in values)


def _fitted(value: str | None, length: int | None) -> str | None:
    if value is None:
        return None
    value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        # A lone surrogate (JSON's "\ud800") has no UTF-8 form: neither driver can send it, and
        # the whole batch of events would fail with it. Kept visible, backslash-escaped.
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value if length is None else value[:length]


def _credential_select() -> Select[tuple[object, ...]]:
    return select(
        credentials.c.id,
        organizations.c.name.label("organization_name"),
        credentials.c.name,
        credentials.c.type,
        credentials.c.token,
        credentials.c.audience,
        credentials.c.settings,
        credentials.c.bound_claims,
    ).join(organizations, organizations.c.id == credentials.c.organization_id)


def assigned_credentials_query(organization_id: int, project: str) -> Select[tuple[object, ...]]:
    """The hot-path query, on its own so a test can check its plan uses the indexes."""
    return (
        _credential_select()
        .join(assignments, assignments.c.credential_id == credentials.c.id)
        .where(assignments.c.organization_id == organization_id, assignments.c.project == project)
        .order_by(credentials.c.name)
    )


# Built once: constructing a statement and its cache key costs more than running it.
_ORGANIZATION_ASSIGNMENTS: Final[Select[tuple[object, ...]]] = (
    select(
        organizations.c.id.label("org_id"),
        organizations.c.name.label("organization_name"),
        organizations.c.issuer.label("org_issuer"),
        organizations.c.platform_org_id.label("org_platform_org_id"),
        credentials.c.id,
        credentials.c.name,
        credentials.c.type,
        credentials.c.token,
        credentials.c.audience,
        credentials.c.settings,
        credentials.c.bound_claims,
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
_AUDIT_COLUMNS: Final = tuple(c for c in audit_events.columns if c.name != "id")


class AuditAppender:
    """Appends audit events in ONE trip through the driver, bypassing SQLAlchemy's cursor.

    Hand-written because of the trip count (bench/README.md): through SQLAlchemy an INSERT on
    aiosqlite is a cursor, an execute, a close and a commit, each a hand-off to aiosqlite's
    thread (40-250 us each on the bench machine, 5 per audit write with the pool's reset).
    Here: SQLite, one ``execute_fetchall`` of a multi-row INSERT (the connection is in
    autocommit outside ``Store.transaction()``: one statement is atomic and committed by itself);
    PostgreSQL, one asyncpg ``executemany`` (atomic since asyncpg 0.22, autocommitted).
    """

    def __init__(self, dialect: Dialect) -> None:
        self._dialect_name = dialect.name
        quote = dialect.identifier_preparer.quote
        names = ", ".join(quote(c.name) for c in _AUDIT_COLUMNS)
        self._table = quote(audit_events.name)
        self._names = names
        # Per column, in table order: the AuditEvent field of the same name, whether it is text
        # (text comes from tokens: NUL replaced, cut to the column's length), and the column
        # type's processing for this dialect as SQLAlchemy would apply it (SQLite keeps
        # timestamps as text in its own format). Planned once: rows are built per request.
        self._plan = [
            (
                c.name,
                c.name in _AUDIT_TEXT_LENGTHS,
                _AUDIT_TEXT_LENGTHS.get(c.name),
                c.type.dialect_impl(dialect).bind_processor(dialect),
            )
            for c in _AUDIT_COLUMNS
        ]
        width = len(_AUDIT_COLUMNS)
        # Identifiers from tables.py, quoted; every value is a bound parameter.
        self._pg_insert = (
            f"INSERT INTO {self._table} ({names}) "  # noqa: S608
            f"VALUES ({', '.join(f'${i}' for i in range(1, width + 1))})"
        )
        self._sqlite_row = f"({', '.join('?' * width)})"

    def rows(self, events: Sequence[AuditEvent]) -> list[tuple[object, ...]]:
        """Each event's column values in table order, as the driver takes them."""
        out: list[tuple[object, ...]] = []
        for event in events:
            row: list[object] = []
            for name, is_text, length, process in self._plan:
                value = getattr(event, name)
                if is_text:
                    value = _fitted(value, length)
                row.append(value if process is None else process(value))
            out.append(tuple(row))
        return out

    def sqlite_insert(self, events: Sequence[AuditEvent]) -> tuple[str, list[object]]:
        """SQLite's one multi-row INSERT of ``events`` (at least one) and its flat parameters."""
        rows = self.rows(events)
        placeholders = ", ".join([self._sqlite_row] * len(rows))
        sql = f"INSERT INTO {self._table} ({self._names}) VALUES {placeholders}"  # noqa: S608
        return sql, [value for row in rows for value in row]

    async def append(self, connection: AsyncConnection, events: Sequence[AuditEvent]) -> None:
        """Write ``events`` on ``connection`` (outside any transaction): all of them or none."""
        if not events:
            return
        driver = (await connection.get_raw_connection()).driver_connection
        if driver is None:
            raise RuntimeError("the pooled connection has no driver connection")
        if self._dialect_name == "sqlite":
            await driver.execute_fetchall(*self.sqlite_insert(events))
        else:
            await driver.executemany(self._pg_insert, self.rows(events))


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


def _audit_event(row: Row[tuple[object, ...]]) -> AuditEvent:
    m = row._mapping
    return AuditEvent(
        id=cast(int, m["id"]),
        time=cast(datetime, m["time"]),
        request_id=cast(str, m["request_id"]),
        outcome=cast(Outcome, m["outcome"]),
        reason=cast(str, m["reason"]),
        latency_ms=float(cast(float, m["latency_ms"])),
        issuer=cast(str | None, m["issuer"]),
        organization=cast(str | None, m["organization"]),
        project=cast(str | None, m["project"]),
        subject=cast(str | None, m["subject"]),
        credential=cast(str | None, m["credential"]),
        credential_type=cast(str | None, m["credential_type"]),
        token_fingerprint=cast(str | None, m["token_fingerprint"]),
        client_address=cast(str | None, m["client_address"]),
    )


def _inserted_id(result: CursorResult[tuple[object, ...]]) -> int:
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the database returned no primary key for an insert")
    return cast(int, key[0])


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
