"""The exchange's policy lookup from memory: (issuer, platform org, project) -> organization and
the project's credentials, with a hard bound on how stale an entry can be.

Why: the lookup runs on every exchange, and its answer changes only when an administrator
changes the policy; without the cache every exchange would read it from the database.

How it stays correct:
- Every write transaction of the store that owns the cache invalidates it when the transaction
  ends (committed, rolled back or failed alike), before the writer's caller gets its answer, so
  a change made on this instance applies to the very next exchange here.
- Every write transaction also increments the ``policy_revision`` row. The store polls it
  (``Store.policy.watch_revision``, policy.py); a changed revision invalidates the cache.
- An entry is served only while the last successful poll *started* at most
  ``max_staleness_seconds`` ago. A change committed elsewhere at time T is seen by every poll
  that starts after T, so it is served stale for at most that long, even when polls fail or
  stop: then the cache simply answers nothing and every lookup goes to the database.
- A lookup that was running while the cache was invalidated does not store its (possibly old)
  answer: entries are stored only under the generation they were read in.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from tokenbroker.policy.models import Credential, Organization

PolicyKey = tuple[str, str, str | None]
"""(issuer name, platform org id, project or None)."""
PolicyEntry = tuple[Organization | None, tuple[Credential, ...]]
"""The lookup's answer: the organization (None if unknown) and the project's credentials."""

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_STALENESS_SECONDS = 1.0
# Two polls per staleness bound: one late poll does not empty the cache.
DEFAULT_POLL_SECONDS = DEFAULT_MAX_STALENESS_SECONDS / 2


class PolicyCache:
    """A bounded LRU of policy lookups, invalidated locally and by the shared revision."""

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_staleness_seconds: float = DEFAULT_MAX_STALENESS_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._max_staleness = max_staleness_seconds
        self._monotonic = monotonic
        self._entries: OrderedDict[PolicyKey, PolicyEntry] = OrderedDict()
        self._generation = 0
        self._revision: int | None = None
        self._verified_at: float | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def generation(self) -> int:
        """Changes on every invalidation; read it before a lookup, pass it to :meth:`put`."""
        return self._generation

    @property
    def max_staleness_seconds(self) -> float:
        """How long a change made elsewhere may go unseen here, at most."""
        return self._max_staleness

    def now(self) -> float:
        """The cache's monotonic time (a poll records when it started with this)."""
        return self._monotonic()

    def get(self, key: PolicyKey) -> PolicyEntry | None:
        """The cached answer, or None when absent or when the revision is not recently verified."""
        if not self._fresh():
            return None
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: PolicyKey, entry: PolicyEntry, generation: int) -> None:
        """Remember an answer read while :attr:`generation` was ``generation``, if it still is."""
        if generation != self._generation or not self._fresh():
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def invalidate(self) -> None:
        """Forget every entry, and refuse answers of lookups running now."""
        self._generation += 1
        self._entries.clear()

    def observe_revision(self, revision: int, poll_started_at: float) -> None:
        """Record a poll's result: a new revision invalidates; the poll's start is verified."""
        if revision != self._revision:
            self._revision = revision
            self.invalidate()
        if self._verified_at is None or poll_started_at > self._verified_at:
            self._verified_at = poll_started_at

    def _fresh(self) -> bool:
        verified_at = self._verified_at
        return verified_at is not None and self._monotonic() - verified_at <= self._max_staleness
