"""Shared fixtures."""

from __future__ import annotations

import pytest

from tokenbroker.config import Settings, parse_settings


@pytest.fixture
def settings(tmp_path: object) -> Settings:
    """Minimal valid settings with the data directory in a temp folder."""
    return parse_settings({"server": {"data_dir": str(tmp_path)}}, {})
