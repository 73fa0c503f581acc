"""PostgreSQL connections killed mid-run: every broker connection terminated under a load.

The broker's connections are found by the local ports this test process holds to the server,
so only this broker's backends are terminated, never another test's.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.faults.conftest import (
    RECOVERY_DEADLINE_SECONDS,
    Answer,
    Broker,
    Figures,
    fault_settings,
)
from tests.support.broker import ID_TOKEN
from tests.support.platform import ServedDevIssuer
from tests.support.postgres import fresh_postgres_schema
from tokenbroker.web.app import create_app

pytestmark = pytest.mark.postgres
CONCURRENCY = 4
# Answers wanted on each side of the kill.
ANSWERS_EACH_SIDE = 40


def own_connections_to(port: int) -> set[int]:
    """Local ports of this process's established TCP connections to ``port`` on any host."""
    sockets = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            sockets.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port and inode in sockets:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def terminate_own_backends(database_url: str) -> int:
    """pg_terminate_backend on every server process serving one of this process's connections
    (except the one asking); how many were terminated."""
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            port = make_url(database_url).port or 5432
            ports = sorted(own_connections_to(port))
            result = await connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE client_port = ANY(:ports) AND pid <> pg_backend_pid()"
                ),
                {"ports": ports},
            )
            return int(result.scalar_one())
    finally:
        await engine.dispose()


async def test_killed_postgres_connections_fail_closed_and_the_pool_heals(
    tmp_path: Path, dev_issuer: ServedDevIssuer, aiohttp_client: AiohttpClient, figures: Figures
) -> None:
    async with fresh_postgres_schema() as store_url:
        settings = fault_settings(
            tmp_path,
            dev_issuer.issuer_settings("env0"),
            [ID_TOKEN],
            store={"url": store_url, "encryption_key": "k" * 32},
        )
        broker = Broker(await aiohttp_client(create_app(settings)), dev_issuer)
        assert (await broker.exchange("id-token")).status == 200
        answers: list[tuple[float, Answer]] = []
        stop = asyncio.Event()

        async def runner() -> None:
            while not stop.is_set():
                answers.append((time.perf_counter(), await broker.exchange("id-token")))

        async def answered(count: int) -> None:
            deadline = time.perf_counter() + RECOVERY_DEADLINE_SECONDS
            while len(answers) < count:
                assert time.perf_counter() < deadline, f"only {len(answers)} answers"
                await asyncio.sleep(0.01)

        runners = [asyncio.create_task(runner()) for _ in range(CONCURRENCY)]
        try:
            await answered(ANSWERS_EACH_SIDE)
            database_url = store_url.split("?", 1)[0]
            killed_at = time.perf_counter()
            killed = await terminate_own_backends(database_url)
            await answered(len(answers) + ANSWERS_EACH_SIDE)
        finally:
            stop.set()
            await asyncio.gather(*runners)
        await broker.client.close()  # every pending audit event is written
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                schema = make_url(store_url).query["search_path"]
                audited = (
                    await connection.execute(
                        text(
                            f'SELECT count(*) FROM "{schema}".audit_events '  # noqa: S608
                            "WHERE outcome = 'success'"
                        )
                    )
                ).scalar_one()
        finally:
            await engine.dispose()

    assert killed >= 1
    after = [answer for at, answer in answers if at >= killed_at]
    statuses = Counter(answer.summary() for answer in after)
    refused = [answer for answer in after if answer.status != 200]
    # What a killed connection costs: at most a retryable 503, never a credential unaudited.
    assert all(answer.status == 503 for answer in refused), statuses
    assert {answer.reason for answer in refused} <= {"audit_unavailable", "store_unavailable"}
    assert all(answer.retry_after for answer in refused)
    assert not any(answer.issued_anything for answer in refused)
    served = sum(1 for _, answer in answers if answer.status == 200)
    assert audited == served + 1  # the warm-up, and every 200 of the run, each audited
    first_success = min(
        at + answer.seconds for at, answer in answers if at >= killed_at and answer.status == 200
    )
    worst = max(after, key=lambda answer: (answer.status != 200, answer.seconds))
    figures.record(
        f"PostgreSQL: {killed} broker connections terminated under {CONCURRENCY} runners "
        f"({', '.join(f'{n} x {s}' for s, n in statuses.items())} after the kill)",
        worst,
        first_success - killed_at,
        "nothing unaudited: every 200 has its audit row",
    )
