"""``make test`` finds the local PostgreSQL and Redis by itself, and says what it could not find."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.services import (
    POSTGRES_ENV,
    REDIS_ENV,
    postgres_problem,
    redis_problem,
)

REPO = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except OSError:
        return False
    return True


def run_pytest(
    *arguments: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in (POSTGRES_ENV, REDIS_ENV)}
    environment.update(env or {})
    environment["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_closed_postgres_port_is_reported_unreachable() -> None:
    url = f"postgresql://127.0.0.1:{closed_port()}/test"
    problem = postgres_problem(url)
    assert problem is not None
    assert problem.startswith(f"not reachable at {url}")


def test_a_closed_redis_port_is_reported_unreachable() -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    problem = redis_problem(url)
    assert problem is not None
    assert problem.startswith(f"not reachable at {url}")


def test_without_variables_the_local_servers_are_found_and_their_suites_run() -> None:
    if not (answers(5432) and answers(6379)):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 or Redis on 127.0.0.1:6379 to find")
    run = run_pytest(
        "tests/store/test_organizations.py",
        "tests/test_ratelimit.py",
        "-k",
        "postgresql or redis or shared",
    )
    assert run.returncode == 0, run.stdout[-3000:]
    header = next(line for line in run.stdout.splitlines() if line.startswith("real services:"))
    assert header == (
        "real services: PostgreSQL at postgresql://127.0.0.1:5432/test (probed); "
        "Redis at redis://127.0.0.1:6379/0 (probed)"
    )
    assert "skipped" not in run.stdout.splitlines()[-1]
    assert "unreachable" not in run.stdout


def test_an_unreachable_service_skips_its_tests_and_the_summary_counts_them(
    tmp_path: Path,
) -> None:
    port = closed_port()
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            f"""
            from tests.support import services as found

            found._services = found.Services(
                found.Service(
                    "PostgreSQL", found.POSTGRES_ENV, None, "probed",
                    "not reachable at postgresql://127.0.0.1:{port}/test (ConnectionRefusedError)",
                ),
                found.Service("Redis", found.REDIS_ENV, "redis://127.0.0.1:6379/0", "probed"),
            )
            pytest_plugins = ["tests.support.services"]
            """
        )
    )
    (tmp_path / "test_needs.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from tests.support.services import postgres_url

            @pytest.mark.parametrize("n", [1, 2, 3])
            def test_on_postgres(n):
                postgres_url()

            def test_without_services():
                pass
            """
        )
    )
    run = run_pytest("-rs", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 0, run.stdout
    assert "real services: PostgreSQL: not reachable at" in run.stdout
    assert (
        f"PostgreSQL unreachable: 3 tests skipped (not reachable at postgresql://127.0.0.1:{port}"
        f"/test (ConnectionRefusedError); set {POSTGRES_ENV} to name another server)"
    ) in run.stdout
    assert "Redis unreachable" not in run.stdout
    assert "1 passed, 3 skipped" in run.stdout
