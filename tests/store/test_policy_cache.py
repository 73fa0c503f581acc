"""The exchange's policy lookup from memory: hits, local and cross-instance invalidation, bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from alembic import command
from sqlalchemy import Connection, text

from tests.store.helpers import VAULT_SETTINGS
from tokenbroker.backends.registry import INSTALLED
from tokenbroker.clock import FrozenClock
from tokenbroker.config.loader import parse_settings
from tokenbroker.policy.models import Credential, Organization
from tokenbroker.store import Store
from tokenbroker.store.declarative import apply_declarative
from tokenbroker.store.engine import alembic_config, create_engine
from tokenbroker.store.policy_cache import PolicyCache

ACME = Organization(id=1, name="acme", issuer="env0", platform_org_id="org-1")
VAULT = Credential(
    id=1,
    organization="acme",
    name="vault",
    type="vault_oidc",
    token="passthrough",
    audience=None,
    settings=VAULT_SETTINGS,
)
KEY = ("env0", "org-1", "p1")


# -- the cache on its own ------------------------------------------------------------------


def test_nothing_is_served_before_the_revision_was_ever_verified() -> None:
    cache = PolicyCache(monotonic=FrozenClock(100).now)
    cache.put(KEY, (ACME, (VAULT,)), cache.generation)
    assert cache.get(KEY) is None
    assert len(cache) == 0


def test_an_entry_is_served_while_the_last_poll_is_recent_and_never_after() -> None:
    clock = FrozenClock(100)
    cache = PolicyCache(max_staleness_seconds=1.0, monotonic=clock.now)
    cache.observe_revision(7, clock.now())
    cache.put(KEY, (ACME, (VAULT,)), cache.generation)
    clock.advance(1.0)
    assert cache.get(KEY) == (ACME, (VAULT,))
    clock.advance(0.01)
    assert cache.get(KEY) is None  # no poll for longer than the bound: not served
    cache.observe_revision(7, clock.now())  # same revision: verified again, entry kept
    assert cache.get(KEY) == (ACME, (VAULT,))


def test_a_new_revision_empties_the_cache() -> None:
    clock = FrozenClock(100)
    cache = PolicyCache(monotonic=clock.now)
    cache.observe_revision(7, clock.now())
    cache.put(KEY, (ACME, (VAULT,)), cache.generation)
    cache.observe_revision(8, clock.now())
    assert cache.get(KEY) is None


def test_an_answer_read_before_an_invalidation_is_not_remembered() -> None:
    clock = FrozenClock(100)
    cache = PolicyCache(monotonic=clock.now)
    cache.observe_revision(1, clock.now())
    generation = cache.generation  # a lookup starts...
    cache.invalidate()  # ...a mutation ends while it reads...
    cache.put(KEY, (ACME, (VAULT,)), generation)  # ...its possibly old answer is dropped
    assert cache.get(KEY) is None
    generation = cache.generation
    cache.observe_revision(2, clock.now())  # a poll seeing a new revision does the same
    cache.put(KEY, (ACME, (VAULT,)), generation)
    assert cache.get(KEY) is None


def test_the_cache_holds_at_most_max_entries_dropping_the_least_recently_used() -> None:
    clock = FrozenClock(100)
    cache = PolicyCache(max_entries=3, monotonic=clock.now)
    cache.observe_revision(1, clock.now())
    for project in ("a", "b", "c"):
        cache.put(("env0", "org-1", project), (ACME, ()), cache.generation)
    assert cache.get(("env0", "org-1", "a")) is not None  # a is now the most recent
    cache.put(("env0", "org-1", "d"), (ACME, ()), cache.generation)
    assert len(cache) == 3
    assert cache.get(("env0", "org-1", "b")) is None
    assert all(cache.get(("env0", "org-1", p)) is not None for p in ("a", "c", "d"))


# -- the store with a cache ------------------------------------------------------------------


@pytest.fixture
def clock() -> FrozenClock:
    """The policy caches' monotonic time."""
    return FrozenClock(1000)


@pytest.fixture
async def cached(store: Store, store_url: str, clock: FrozenClock) -> AsyncIterator[Store]:
    """A second store on the same database, with a policy cache whose revision is verified."""
    opened = await Store.open(
        store_url, policy_cache=PolicyCache(monotonic=clock.now), credential_types=INSTALLED
    )
    await opened.policy.check_revision()
    yield opened
    await opened.close()


@pytest.fixture
async def assigned(store: Store) -> None:
    """acme (env0, org-1) with vault and other-vault; vault assigned to p1."""
    await store.policy.create_organization("acme", "env0", "org-1")
    for name in ("vault", "other-vault"):
        await store.policy.create_credential("acme", name, "vault_oidc", settings=VAULT_SETTINGS)
    await store.policy.assign("acme", "p1", "vault")


async def names(store: Store) -> tuple[str | None, list[str]]:
    """What the exchange's lookup answers for acme's p1: organization and credential names."""
    organization, credentials = await store.policy.find_organization_assignments(
        "env0", "org-1", "p1"
    )
    return (None if organization is None else organization.name), [c.name for c in credentials]


async def delete_behind_the_stores_back(store_url: str) -> None:
    """Remove p1's assignments with plain SQL: no store, no revision bump."""
    engine = create_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM assignments WHERE project = 'p1'"))
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("assigned")
async def test_a_repeated_lookup_is_answered_from_memory(cached: Store, store_url: str) -> None:
    assert await names(cached) == ("acme", ["vault"])
    await delete_behind_the_stores_back(store_url)
    await cached.policy.check_revision()  # the revision did not move: the entry stays
    assert await names(cached) == ("acme", ["vault"])


@pytest.mark.usefixtures("assigned")
async def test_a_store_without_a_cache_always_reads_the_database(
    store: Store, store_url: str
) -> None:
    assert await names(store) == ("acme", ["vault"])
    await delete_behind_the_stores_back(store_url)
    assert await names(store) == ("acme", [])


Mutation = Callable[[Store], Awaitable[object]]
MUTATIONS: dict[str, tuple[Mutation, tuple[str | None, list[str]]]] = {
    "update organization": (
        lambda s: s.policy.update_organization("acme", platform_org_id="org-2"),
        (None, []),
    ),
    "delete organization": (lambda s: s.policy.delete_organization("acme"), (None, [])),
    "create credential": (
        lambda s: s.policy.create_credential("acme", "new", "vault_oidc", settings=VAULT_SETTINGS),
        ("acme", ["vault"]),  # created, not yet assigned: the lookup still re-reads
    ),
    "update credential": (
        lambda s: s.policy.update_credential("acme", "vault", token="mint", audience="vault"),
        ("acme", ["vault"]),
    ),
    "delete credential": (lambda s: s.policy.delete_credential("acme", "vault"), ("acme", [])),
    "assign": (
        lambda s: s.policy.assign("acme", "p1", "other-vault"),
        ("acme", ["other-vault", "vault"]),
    ),
    "assign many": (
        lambda s: s.policy.assign_many("acme", [("p1", "other-vault")]),
        ("acme", ["other-vault", "vault"]),
    ),
    "unassign": (lambda s: s.policy.unassign("acme", "p1", "vault"), ("acme", [])),
}


@pytest.mark.usefixtures("assigned")
@pytest.mark.parametrize("kind", list(MUTATIONS))
async def test_every_local_mutation_applies_to_the_very_next_lookup(
    cached: Store, kind: str
) -> None:
    mutate, expected = MUTATIONS[kind]
    assert await names(cached) == ("acme", ["vault"])
    generation = cached_generation(cached)
    await mutate(cached)
    assert cached_generation(cached) != generation
    assert await names(cached) == expected
    if kind == "update credential":
        (credential,) = (await cached.policy.find_organization_assignments("env0", "org-1", "p1"))[
            1
        ]
        assert (credential.token, credential.audience) == ("mint", "vault")


def cached_generation(store: Store) -> int:
    """The generation of the store's policy cache (it changes on every invalidation)."""
    cache = store._policy_cache
    assert cache is not None
    return cache.generation


@pytest.mark.usefixtures("assigned")
async def test_declarative_config_applied_here_applies_to_the_next_lookup(cached: Store) -> None:
    assert await names(cached) == ("acme", ["vault"])
    settings = parse_settings(
        {
            "issuers": [
                {
                    "name": "env0",
                    "issuer": "https://login.app.env0.com/",
                    "audiences": ["https://prod.env0.com"],
                    "profile": "env0",
                }
            ],
            "organizations": [{"name": "acme", "issuer": "env0", "platform_org_id": "org-1"}],
            "credentials": [
                {
                    "organization": "acme",
                    "name": "other-vault",
                    "type": "vault_oidc",
                    "settings": dict(VAULT_SETTINGS),
                }
            ],
            "assignments": [
                {"organization": "acme", "project": "p1", "credentials": ["other-vault"]}
            ],
        },
        {},
    )
    await apply_declarative(cached, settings)
    assert await names(cached) == ("acme", ["other-vault", "vault"])


async def _unassign_then_fail(store: Store) -> None:
    async with store.transaction() as repo:
        await repo.policy.unassign("acme", "p1", "vault")
        raise RuntimeError("boom")


@pytest.mark.usefixtures("assigned")
async def test_a_rolled_back_mutation_leaves_no_stale_entry(cached: Store) -> None:
    assert await names(cached) == ("acme", ["vault"])
    with pytest.raises(RuntimeError):
        await _unassign_then_fail(cached)
    # Nothing was written, and the cache was emptied anyway: the answer is the database's.
    assert await names(cached) == ("acme", ["vault"])
    with pytest.raises(Exception, match="credential"):
        await cached.policy.create_credential("acme", "bad", "vault_oidc", settings={})
    assert await names(cached) == ("acme", ["vault"])


@pytest.mark.usefixtures("assigned")
async def test_another_instances_change_is_seen_at_the_next_poll(
    store: Store, cached: Store
) -> None:
    assert await names(cached) == ("acme", ["vault"])
    await store.policy.unassign("acme", "p1", "vault")  # another instance: no cache here
    assert await names(cached) == ("acme", ["vault"])  # until this instance polls
    await cached.policy.check_revision()
    assert await names(cached) == ("acme", [])


@pytest.mark.usefixtures("assigned")
async def test_without_polls_another_instances_change_is_served_stale_at_most_the_bound(
    store: Store, cached: Store, clock: FrozenClock
) -> None:
    assert await names(cached) == ("acme", ["vault"])
    await store.policy.unassign("acme", "p1", "vault")
    clock.advance(1.0)
    assert await names(cached) == ("acme", ["vault"])
    clock.advance(0.01)  # the last poll is older than the bound: straight to the database
    assert await names(cached) == ("acme", [])


@pytest.mark.usefixtures("assigned")
async def test_two_cached_instances_see_each_others_changes(
    store_url: str, cached: Store, clock: FrozenClock
) -> None:
    other = await Store.open(
        store_url, policy_cache=PolicyCache(monotonic=clock.now), credential_types=INSTALLED
    )
    try:
        await other.policy.check_revision()
        assert await names(other) == await names(cached) == ("acme", ["vault"])
        await other.policy.assign("acme", "p1", "other-vault")
        assert await names(other) == ("acme", ["other-vault", "vault"])
        await cached.policy.check_revision()
        assert await names(cached) == ("acme", ["other-vault", "vault"])
        await cached.policy.unassign("acme", "p1", "vault")
        await other.policy.check_revision()
        assert await names(other) == ("acme", ["other-vault"])
    finally:
        await other.close()


async def test_every_write_transaction_moves_the_revision(store: Store) -> None:
    before = await store.policy.revision()
    assert before is not None
    await store.policy.create_organization("acme", "env0", "org-1")
    await store.policy.create_credential("acme", "vault", "vault_oidc", settings=VAULT_SETTINGS)
    assert await store.policy.revision() == before + 2


def _upgrade_to_0001(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "0001")


async def test_a_database_at_0001_gets_the_revision_row_on_upgrade(store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_to_0001)
    finally:
        await engine.dispose()
    store = await Store.open(store_url, credential_types=INSTALLED)
    try:
        assert await store.revision() == "0001"
        await store.upgrade()
        assert await store.policy.revision() == 0
        await store.policy.create_organization("acme", "env0", "org-1")
        assert await store.policy.revision() == 1
    finally:
        await store.close()


@pytest.mark.usefixtures("assigned")
async def test_without_a_verified_revision_every_lookup_reads_the_database(
    store_url: str, clock: FrozenClock
) -> None:
    store = await Store.open(
        store_url, policy_cache=PolicyCache(monotonic=clock.now), credential_types=INSTALLED
    )
    try:
        engine = create_engine(store_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text("DELETE FROM policy_revision"))
        finally:
            await engine.dispose()
        await store.policy.check_revision()  # finds no revision: verifies nothing
        assert await names(store) == ("acme", ["vault"])
        await delete_behind_the_stores_back(store_url)
        assert await names(store) == ("acme", [])
    finally:
        await store.close()
