"""The runner's client imports no server code: read from the source, and followed transitively.

``tokenbroker exchange`` and ``revoke`` run on CI runners, often once per credential refresh;
they must start without the server's packages (the database, migrations, metrics, the web app).
The end-to-end proof, a run with those packages made unimportable, is in
``tests/cli/test_exchange_end_to_end.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import tokenbroker

SOURCE_ROOT = Path(tokenbroker.__file__).parent

# The server's own packages and modules, and the libraries only the server needs. Of identity/
# only the validator and the JWKS cache are the server's: the platform profiles and the Identity
# they read are pure (standard library only), and the runner shares them to find its token.
SERVER_MODULES = (
    "tokenbroker.backends",
    "tokenbroker.store",
    "tokenbroker.web",
    "tokenbroker.exchange",
    "tokenbroker.identity.validator",
    "tokenbroker.identity.jwks",
    "tokenbroker.issuer",
    "tokenbroker.devstack",
    "tokenbroker.metrics",
    "tokenbroker.output",
    "tokenbroker.ratelimit",
    "sqlalchemy",
    "alembic",
    "prometheus_client",
    "aiosqlite",
    "asyncpg",
    "redis",
    "aiohttp.web",
)
# What the runner's CLI loads: the entry point (it imports only the verb it runs) and the verbs.
CLIENT_ENTRY_POINTS = ("tokenbroker.cli.main", "tokenbroker.cli.exchange", "tokenbroker.cli.revoke")


def client_files() -> list[Path]:
    """The client package's modules and the two CLI verbs that wire it."""
    return [
        *sorted((SOURCE_ROOT / "client").glob("*.py")),
        SOURCE_ROOT / "cli" / "exchange.py",
        SOURCE_ROOT / "cli" / "revoke.py",
    ]


def is_server_module(name: str) -> bool:
    """Whether ``name`` is one of SERVER_MODULES or inside one."""
    return any(name == server or name.startswith(server + ".") for server in SERVER_MODULES)


def source_of(module: str, root: Path = SOURCE_ROOT) -> Path | None:
    """The file of a ``tokenbroker`` module or package under ``root``; None for anything else."""
    parts = module.split(".")
    if parts[0] != "tokenbroker":
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking_guard(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, *, at_import_time: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement; with ``at_import_time``, only those that run on import.

    Those skip function bodies (they run when called) and ``if TYPE_CHECKING:`` blocks.
    """
    pending = list(ast.iter_child_nodes(tree))
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if at_import_time:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(node, ast.If) and _is_type_checking_guard(node):
                pending.extend(node.orelse)
                continue
        pending.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path, *, at_import_time: bool, root: Path = SOURCE_ROOT) -> set[str]:
    """The modules ``path`` imports, with the packages whose ``__init__`` each import runs."""
    names: set[str] = set()
    for node in _import_nodes(
        ast.parse(path.read_text(), str(path)), at_import_time=at_import_time
    ):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            assert node.level == 0, f"{path}: relative import"  # the codebase imports absolutely
            assert node.module is not None
            # ``from package import name`` may name a submodule: importing it runs that too.
            targets = [node.module] + [
                f"{node.module}.{alias.name}"
                for alias in node.names
                if source_of(f"{node.module}.{alias.name}", root) is not None
            ]
        for target in targets:
            parts = target.split(".")
            names.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    return names


def server_imports_reached(entry_points: tuple[str, ...], root: Path = SOURCE_ROOT) -> list[str]:
    """Import chains from the entry points to a server module, following what runs on import."""
    chains: dict[str, str] = {entry: entry for entry in entry_points}
    pending = list(entry_points)
    found: list[str] = []
    while pending:
        module = pending.pop()
        path = source_of(module, root)
        if path is None:
            continue
        for imported in sorted(imported_modules(path, at_import_time=True, root=root)):
            if imported in chains:
                continue
            chains[imported] = f"{chains[module]} -> {imported}"
            if is_server_module(imported):
                found.append(chains[imported])
            elif imported.startswith("tokenbroker"):
                pending.append(imported)
    return sorted(found)


@pytest.mark.parametrize("path", client_files(), ids=lambda path: path.name)
def test_no_client_module_imports_a_server_module_anywhere_in_it(path: Path) -> None:
    # Function bodies and type-checking blocks included: the client names no server module.
    server = sorted(
        name for name in imported_modules(path, at_import_time=False) if is_server_module(name)
    )
    assert server == []


def test_nothing_the_runners_cli_loads_imports_a_server_module() -> None:
    assert server_imports_reached(CLIENT_ENTRY_POINTS) == []


def test_the_walk_follows_what_runs_on_import_to_a_server_module(tmp_path: Path) -> None:
    # The checks above must be able to fail: a made-up tree with one chain that runs on import,
    # beside imports that do not run (a function body, a type-checking block).
    files = {
        "cli/verb.py": "from tokenbroker.client import helper\n",
        "client/__init__.py": "",
        "client/helper.py": "import json\nimport tokenbroker.config\n",
        "config/__init__.py": (
            "from typing import TYPE_CHECKING\n"
            "from tokenbroker.metrics import REGISTRY\n"
            "if TYPE_CHECKING:\n    import sqlalchemy\n"
            "def load() -> None:\n    from tokenbroker.store import Store\n"
        ),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    assert server_imports_reached(("tokenbroker.cli.verb",), tmp_path) == [
        "tokenbroker.cli.verb -> tokenbroker.client.helper -> tokenbroker.config "
        "-> tokenbroker.metrics"
    ]
    everywhere = imported_modules(tmp_path / "config/__init__.py", at_import_time=False)
    assert {"sqlalchemy", "tokenbroker.store", "tokenbroker.metrics"} <= everywhere
