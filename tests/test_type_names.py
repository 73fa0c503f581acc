"""No module outside ``backends/`` names a credential type: each type's file is the one place.

"Names" means in code: identifiers and string literals (comments and docstrings may mention a
type by way of example), as tests/test_platform_names.py reads them.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_platform_names import PACKAGE, code_mentions
from tokenbroker.backends import registry

BACKENDS_DIR = PACKAGE / "backends"
# Data files only: the dev stack's seed list names the type of each seeded credential.
ALLOWED = frozenset({PACKAGE / "devstack" / "seeds.py"})


def type_pattern() -> re.Pattern[str]:
    names = registry.credential_types()
    return re.compile("|".join(re.escape(name) for name in sorted(names, key=len, reverse=True)))


def test_every_installed_type_is_one_file_in_backends() -> None:
    assert {"vault_oidc", "aws_oidc", "gcp_oidc", "azure_oidc", "oidc_token"} <= set(
        registry.credential_types()
    )


def test_no_module_outside_backends_names_a_credential_type() -> None:
    pattern = type_pattern()
    offenders = {
        str(path.relative_to(PACKAGE)): mentions
        for path in sorted(PACKAGE.rglob("*.py"))
        if not path.is_relative_to(BACKENDS_DIR) and path not in ALLOWED
        if (mentions := code_mentions(path, pattern))
    }
    assert offenders == {}


def test_the_scan_finds_a_type_named_in_code(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text('"""Docstrings may say vault_oidc."""\nKIND = "vault_oidc"  # a comment\n')
    assert code_mentions(planted, type_pattern()) == [(2, '"vault_oidc"')]
