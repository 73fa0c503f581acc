"""Fixtures for the broker's own issuer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbroker.clock import FrozenClock
from tokenbroker.config.models import SigningSettings
from tokenbroker.issuer.keys import FileKeyStore

# 2027-01-15T08:00:00Z: a fixed instant, so expiry arithmetic in tests is exact.
T0 = 1_800_000_000.0


@pytest.fixture
def clock() -> FrozenClock:
    """A frozen clock at T0."""
    return FrozenClock(T0)


@pytest.fixture
def store(tmp_path: Path) -> FileKeyStore:
    """A key store in a fresh temp directory that does not exist yet."""
    return FileKeyStore(tmp_path / "data" / "keys")


@pytest.fixture
def signing() -> SigningSettings:
    """Default signing settings (ES256, keys retire after 3900 s)."""
    return SigningSettings()
