"""What the backend tests share: a frozen clock, recorded backoff sleeps, one client session."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tokenbroker.clock import FrozenClock


class SleepRecorder:
    """Stands in for asyncio.sleep between retries; records each backoff delay."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def clock() -> FrozenClock:
    """One frozen clock for the issuer, the stand-in and the backend."""
    return FrozenClock(float(int(time.time())))


@pytest.fixture
def sleeps() -> SleepRecorder:
    """The backoff delays the backend waited, without waiting."""
    return SleepRecorder()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The shared client session a backend is built with (the system trust store)."""
    async with aiohttp.ClientSession() as session:
        yield session
