"""The real PostgreSQL and Redis the suites run against: found by themselves, or named.

``TOKENBROKER_TEST_POSTGRES_URL`` / ``TOKENBROKER_TEST_REDIS_URL`` name a server that must
answer (a test using an unreachable named server fails). Without them, the default local
addresses are probed once at start-up (PostgreSQL 127.0.0.1:5432 database ``test``, Redis
127.0.0.1:6379) and used when they answer, so a plain ``make test`` runs those suites wherever
they can run. One header line says what was found; the terminal summary names each service
that was not, with the number of tests it skipped.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

POSTGRES_ENV = "TOKENBROKER_TEST_POSTGRES_URL"
REDIS_ENV = "TOKENBROKER_TEST_REDIS_URL"
DEFAULT_POSTGRES_URL = "postgresql://127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PROBE_TIMEOUT_SECONDS = 2.0
# Every skip for a missing service starts so, which is how the summary counts them.
_SKIP_PREFIX = "needs {name}: "


@dataclass(frozen=True)
class Service:
    """A real server a suite needs: where, whether it answered, and how that was learnt."""

    name: str
    env: str
    url: str | None
    source: str
    problem: str | None = None

    def describe(self) -> str:
        """``PostgreSQL at URL (probed)`` or ``PostgreSQL: not reachable at ... (probed)``."""
        if self.url is not None:
            return f"{self.name} at {self.url} ({self.source})"
        return f"{self.name}: {self.problem} ({self.source})"

    def skip_reason(self) -> str:
        """Why a test needing this service is skipped, and how to run it."""
        return (
            _SKIP_PREFIX.format(name=self.name)
            + f"{self.problem}; start it there or set {self.env}"
        )


def postgres_problem(url: str) -> str | None:
    """Why the PostgreSQL at ``url`` cannot be used, or None when a connection opens."""
    import asyncpg

    async def connect() -> None:
        connection = await asyncpg.connect(url, timeout=PROBE_TIMEOUT_SECONDS)
        await connection.close()

    try:
        asyncio.run(connect())
    except (OSError, TimeoutError) as exc:
        return f"not reachable at {url} ({type(exc).__name__})"
    except Exception as exc:  # it answered, but refused: no database `test`, auth, ...
        return f"answers at {url} but refused the connection: {type(exc).__name__}: {exc}"
    return None


def redis_problem(url: str) -> str | None:
    """Why the Redis at ``url`` cannot be used, or None when it answers PING."""
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    client = Redis.from_url(
        url, socket_timeout=PROBE_TIMEOUT_SECONDS, socket_connect_timeout=PROBE_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        return f"not reachable at {url} ({type(exc).__name__})"
    except RedisError as exc:
        return f"answers at {url} but refused: {type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def _find(name: str, env: str, default: str, problem_of: Callable[[str], str | None]) -> Service:
    named = os.environ.get(env)
    if named:
        # Named: used as given; a test on it fails if it does not answer, never skips.
        return Service(name, env, named, f"from {env}")
    problem = problem_of(default)
    if problem is not None:
        return Service(name, env, None, "probed", problem)
    os.environ[env] = default  # for anything reading the variable itself
    return Service(name, env, default, "probed")


class Services:
    """The probed services of this session, and the skips each one caused."""

    def __init__(self, postgres: Service, redis: Service) -> None:
        self.postgres = postgres
        self.redis = redis
        self.skipped: Counter[str] = Counter()

    @classmethod
    def probe(cls) -> Services:
        """Named by the environment, else probed at the default local addresses."""
        return cls(
            _find("PostgreSQL", POSTGRES_ENV, DEFAULT_POSTGRES_URL, postgres_problem),
            _find("Redis", REDIS_ENV, DEFAULT_REDIS_URL, redis_problem),
        )

    def all(self) -> tuple[Service, ...]:
        """Every service, in the order they are reported."""
        return (self.postgres, self.redis)


_services: Services | None = None


def services() -> Services:
    """This session's services (probed on first use)."""
    global _services
    if _services is None:
        _services = Services.probe()
    return _services


def postgres_url() -> str:
    """The test PostgreSQL's URL, or skip the test naming why there is none."""
    found = services().postgres
    if found.url is None:
        pytest.skip(found.skip_reason())
    return found.url


def redis_url() -> str:
    """The test Redis's URL, or skip the test naming why there is none."""
    found = services().redis
    if found.url is None:
        pytest.skip(found.skip_reason())
    return found.url


def pytest_configure(config: pytest.Config) -> None:
    """Probe before collection, so the header and every test see the same answer."""
    services()


def pytest_report_header(config: pytest.Config) -> str:
    """One line: which real services this run uses, and which it could not find."""
    return "real services: " + "; ".join(service.describe() for service in services().all())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count the skips each missing service caused."""
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return
    message = str(report.longrepr[2]).removeprefix("Skipped: ")
    for service in services().all():
        if message.startswith(_SKIP_PREFIX.format(name=service.name)):
            services().skipped[service.name] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A line per unreachable service, with how many tests it skipped."""
    for service in services().all():
        if service.url is None:
            count = services().skipped[service.name]
            terminalreporter.write_line(
                f"{service.name} unreachable: {count} tests skipped ({service.problem}; "
                f"set {service.env} to name another server)",
                yellow=True,
            )
