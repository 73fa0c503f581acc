"""No module outside ``identity/profiles/`` names a platform: the profiles are the one place.

"Names" means in code: identifiers and string literals. Comments and docstrings may mention a
platform by way of example. A platform's names are its profile's name and the environment
variables its runners hold the token in; ``generic`` is no platform (and an English word).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

from tokenbroker.identity.profiles import PROFILES

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tokenbroker"
PROFILES_DIR = PACKAGE / "identity" / "profiles"
# Data files only: one line per seeded platform and the fixed ids of the dev stack.
ALLOWED = frozenset({PACKAGE / "devstack" / "seeds.py"})


def platform_names() -> list[str]:
    """Every name that identifies a platform: profile names and runner token variables."""
    names: set[str] = set()
    for profile in PROFILES.values():
        if profile.name == "generic":
            continue
        names.add(profile.name)
        names.update(profile.runner.variables)
        if profile.runner.request is not None:
            names.update(
                {profile.runner.request.url_variable, profile.runner.request.bearer_variable}
            )
    return sorted(names)


def _docstring_starts(tree: ast.Module) -> set[tuple[int, int]]:
    starts: set[tuple[int, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            first = body[0] if body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                starts.add((first.lineno, first.col_offset))
    return starts


def code_mentions(path: Path, pattern: re.Pattern[str]) -> list[tuple[int, str]]:
    """(line, token) for each identifier or string literal of the file naming a platform."""
    source = path.read_text(encoding="utf-8")
    docstrings = _docstring_starts(ast.parse(source))
    return [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type in (tokenize.NAME, tokenize.STRING)
        and token.start not in docstrings
        and pattern.search(token.string)
    ]


def _pattern() -> re.Pattern[str]:
    return re.compile("|".join(map(re.escape, platform_names())), re.IGNORECASE)


def test_the_check_sees_a_platform_named_in_code(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Like env0 does."""\n'
        "# circleci in a comment\n"
        'VARIABLE = "CIRCLE_OIDC_TOKEN"\n'
        "def github_thing() -> None:\n"
        '    """GitHub in a docstring."""\n'
    )
    assert code_mentions(sample, _pattern()) == [(3, '"CIRCLE_OIDC_TOKEN"'), (4, "github_thing")]


def test_no_module_outside_the_profiles_names_a_platform() -> None:
    mentions = [
        f"{path.relative_to(PACKAGE)}:{line}: {text[:80]}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if PROFILES_DIR not in path.parents and path not in ALLOWED
        for line, text in code_mentions(path, _pattern())
    ]
    assert mentions == []
