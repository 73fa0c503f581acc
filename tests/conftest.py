"""Shared fixtures."""

from __future__ import annotations

import pytest

from tokenbroker.config import Settings, parse_settings

pytest_plugins = [
    "tests.support.services",
    # Before openbao, which imports it: a plugin imported first is not assertion-rewritten.
    "tests.support.platform",
    "tests.support.openbao",
    "tests.support.aws",
    "tests.support.gcp",
    "tests.support.entra",
    "tests.support.devstack",
    "tests.support.postgres",
    "tests.support.serve",
]


@pytest.fixture
def settings(tmp_path: object) -> Settings:
    """Minimal valid settings with the data directory in a temp folder.

    Backends in tests listen on loopback, so private backend addresses are allowed.
    """
    return parse_settings(
        {"server": {"data_dir": str(tmp_path)}, "security": {"allow_private_backends": True}}, {}
    )
