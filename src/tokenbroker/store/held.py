"""A pooled connection held for calls that run one at a time, while they keep coming."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbroker.store.engine import LoopThreadConnection, set_up, sqlite_driver


@dataclass(frozen=True, slots=True)
class Held:
    """The held connection, and on SQLite its driver's side (found once)."""

    connection: AsyncConnection
    sqlite: LoopThreadConnection | None


class HeldConnection:
    """One connection for calls that run one at a time (a ``Batched``'s rounds, a reader's
    turns), kept while they keep coming rather than taken from the pool and given back for
    each: no checkout, and on PostgreSQL no pre-ping, per call.

    It goes back to the pool once idle for ``idle_seconds``, so that the pool's check on
    checkout finds one a PostgreSQL server dropped while the broker was quiet; it is dropped
    when a call found it dead or was cut off in it. ``busy`` says whether a call is running or
    due, so that the idle check never takes the connection from under one.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        write: bool,
        busy: Callable[[], bool],
        idle_seconds: float = 1.0,
    ) -> None:
        self._engine = engine
        self._write = write
        self._busy = busy
        self._idle_seconds = idle_seconds
        self._held: Held | None = None
        self._used_at = 0.0
        self._release_check: asyncio.TimerHandle | None = None
        self._releasing: asyncio.Task[None] | None = None

    async def get(self) -> Held:
        """The held connection, checked out (and set up for writes or reads) when none is."""
        if self._held is None:
            connection = await self._engine.connect()
            await set_up(connection, write=self._write)
            self._held = Held(connection, await sqlite_driver(connection))
        return self._held

    def used(self) -> None:
        """A call on it ended well: its idle time counts from now."""
        self._used_at = time.monotonic()
        if self._release_check is None:
            self._release_check = asyncio.get_running_loop().call_later(
                self._idle_seconds, self._release_when_idle
            )

    async def forget_if_broken(self, exc: BaseException) -> None:
        """A call on it raised ``exc``: drop the connection unless the database only refused a
        statement (a unique key taken), which leaves it as good as before."""
        if isinstance(exc, DBAPIError) and not exc.connection_invalidated:
            return
        await self.release()

    async def release(self) -> None:
        """Give the connection back to the pool now (at close, before the engine's dispose)."""
        if self._release_check is not None:
            self._release_check.cancel()
            self._release_check = None
        held, self._held = self._held, None
        if held is not None:
            await held.connection.close()
        releasing, self._releasing = self._releasing, None
        if releasing is not None:
            await releasing

    def _release_when_idle(self) -> None:
        self._release_check = None
        if self._held is None:
            return
        idle = time.monotonic() - self._used_at
        if idle < self._idle_seconds or self._busy():
            self._release_check = asyncio.get_running_loop().call_later(
                max(self._idle_seconds - idle, 0), self._release_when_idle
            )
            return
        # Taken here, not in the task: a call that starts meanwhile checks out another.
        held, self._held = self._held, None
        self._releasing = asyncio.create_task(held.connection.close())
