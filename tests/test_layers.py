"""The layers import downwards only: read from the source, every import (function bodies and
``if TYPE_CHECKING:`` blocks too).

- ``store/`` imports no backends: what a credential type is reaches it as the
  ``CredentialTypes`` its builder passes (``backends.registry.INSTALLED``).
- ``policy/`` imports no backends: config load and the store apply its rules too.
- ``config/`` imports no identity and no backends: it sits below both.

The client's rule (it imports no server code) is tests/client/test_imports.py's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.client.test_imports import SOURCE_ROOT, imported_modules

# (package under src/tokenbroker, the modules it must not import)
RULES = (
    ("store", ("tokenbroker.backends",)),
    ("policy", ("tokenbroker.backends",)),
    ("config", ("tokenbroker.identity", "tokenbroker.backends")),
)


def forbidden_imports(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    """The modules ``path`` imports that are, or are inside, one of ``forbidden``."""
    return sorted(
        name
        for name in imported_modules(path, at_import_time=False)
        if any(name == banned or name.startswith(banned + ".") for banned in forbidden)
    )


@pytest.mark.parametrize(("package", "forbidden"), RULES, ids=[rule[0] for rule in RULES])
def test_a_layer_imports_nothing_above_it(package: str, forbidden: tuple[str, ...]) -> None:
    modules = sorted((SOURCE_ROOT / package).rglob("*.py"))
    assert modules
    offenders = {
        str(path.relative_to(SOURCE_ROOT)): found
        for path in modules
        if (found := forbidden_imports(path, forbidden))
    }
    assert offenders == {}


def test_the_scan_finds_imports_that_only_type_checking_or_a_call_runs(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from tokenbroker.backends.base import CredentialTraits\n"
        "def load() -> None:\n"
        "    import tokenbroker.identity.profiles\n"
    )
    assert forbidden_imports(planted, ("tokenbroker.backends", "tokenbroker.identity")) == [
        "tokenbroker.backends",
        "tokenbroker.backends.base",
        "tokenbroker.identity",
        "tokenbroker.identity.profiles",
    ]
