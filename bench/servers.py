"""Small servers the benchmark runs in their own processes.

``python -m bench.servers hello --port N``: the aiohttp hello-world, the ceiling to compare with.
``python -m bench.servers issuer --port N --keys-dir D``: the dev platform issuer's discovery and
JWKS (OpenBao and the broker fetch keys from it), kept off the broker's and the loader's CPU loop.
``python -m bench.servers moto --port N``: moto's server (STS, IAM), also in a process of its own.
``python -m bench.servers floor --port N --login-url U --role R [--jwks-url J --issuer I
--audience A --database F [--sqlite3]]``: the floor of a proxied login, the least a broker must
do for one (receive the request; verify the RS256 platform token against the cached JWKS key;
one outbound POST of it to OpenBao's JWT login; one row written to SQLite through the broker's
engine, or with ``--sqlite3`` through the standard library's driver on the loop's thread);
without ``--jwks-url`` and ``--database`` only the request and the outbound call.
``python -m bench.servers retry-floor --port N --database F``: the floors of a retry and of a
refusal. ``POST /``: less than a retry must do (the request and its JSON body, the token's
SHA-256 looked up in memory, one read of a lease's state through ``sqlite3``, a JSON answer; no
audit row). ``POST /audited``: the same and the one audit event every decision commits before
it answers, in the broker's audit table, written in rounds of what arrived while one ran (the
broker's batching core), one ``sqlite3`` transaction each. ``POST /refused``: a refused token
(the request and its body, the token not three segments, its audit event as above, a 401).
``python -m bench.servers busy --port N --cpu-ms X [--processes P]``: a server whose every request
costs X ms of CPU and nothing else, served by P processes on one port (SO_REUSEPORT, as the
broker's workers): what this machine gives a second process of a server of the broker's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import multiprocessing
import secrets
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path

import aiohttp
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.batching import Batched
from tokenbroker.devstack.platform_issuer import DevPlatformIssuer, create_issuer_app
from tokenbroker.store.engine import create_engine
from tokenbroker.store.tables import audit_events
from tokenbroker.web.loop import EventLoopChoice, new_event_loop


def hello_app() -> web.Application:
    """The smallest useful aiohttp app: POST and GET / answer a short text."""

    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_route("*", "/", hello)
    return app


@dataclass(frozen=True)
class FloorSettings:
    """What the floor does per request: always the outbound login; the rest when set."""

    login_url: str
    role: str
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    database: Path | None = None
    # The row through sqlite3 itself (WAL, synchronous=NORMAL), not SQLAlchemy async.
    plain_sqlite: bool = False


_ROWS = Table(
    "exchanges",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("subject", String, nullable=False),
    Column("status", Integer, nullable=False),
    Column("at", Integer, nullable=False),
)
_SESSION = web.AppKey("session", aiohttp.ClientSession)
_KEYS = web.AppKey("keys", KeySet)
_ENGINE = web.AppKey("engine", AsyncEngine)
_PLAIN = web.AppKey("plain", sqlite3.Connection)
_PLAIN_INSERT = "INSERT INTO exchanges (subject, status, at) VALUES (?, ?, ?)"


def floor_app(settings: FloorSettings) -> web.Application:
    """A proxied login's irreducible work, as aiohttp, joserfc and the broker's SQLite engine
    do it: what the broker's CPU per proxied login is to be weighed against."""
    claims = JWTClaimsRegistry(
        iss={"essential": True, "value": settings.issuer or ""},
        aud={"essential": True, "values": [settings.audience or ""]},
        exp={"essential": True},
    )

    async def start(app: web.Application) -> None:
        app[_SESSION] = aiohttp.ClientSession()
        if settings.jwks_url is not None:
            async with app[_SESSION].get(settings.jwks_url) as response:
                app[_KEYS] = KeySet.import_key_set(await response.json())
        if settings.database is not None and settings.plain_sqlite:
            plain = sqlite3.connect(settings.database, isolation_level=None)
            plain.execute("PRAGMA journal_mode=WAL")
            plain.execute("PRAGMA synchronous=NORMAL")
            plain.execute(
                "CREATE TABLE IF NOT EXISTS exchanges (id INTEGER PRIMARY KEY, "
                "subject TEXT NOT NULL, status INTEGER NOT NULL, at INTEGER NOT NULL)"
            )
            app[_PLAIN] = plain
        elif settings.database is not None:
            app[_ENGINE] = create_engine(f"sqlite+aiosqlite:///{settings.database}")
            async with app[_ENGINE].begin() as connection:
                await connection.run_sync(_ROWS.metadata.create_all)

    async def stop(app: web.Application) -> None:
        await app[_SESSION].close()
        if _ENGINE in app:
            await app[_ENGINE].dispose()
        if _PLAIN in app:
            app[_PLAIN].close()

    async def login(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        await request.read()
        subject = ""
        if _KEYS in request.app:
            decoded = jwt.decode(token, request.app[_KEYS], algorithms=["RS256"])
            claims.validate(decoded.claims)
            subject = str(decoded.claims.get("sub", ""))
        async with request.app[_SESSION].post(
            settings.login_url, json={"role": settings.role, "jwt": token}
        ) as response:
            body, status = await response.read(), response.status
        if _PLAIN in request.app:
            # Autocommit: the INSERT is its own transaction.
            request.app[_PLAIN].execute(_PLAIN_INSERT, (subject, status, int(time.time())))
        if _ENGINE in request.app:
            async with request.app[_ENGINE].begin() as connection:
                await connection.execute(
                    insert(_ROWS).values(subject=subject, status=status, at=int(time.time()))
                )
        return web.Response(body=body, status=status, content_type="application/json")

    return _floor_server(start, stop, login)


_LEASES = web.AppKey("leases", sqlite3.Connection)
_REMEMBERED = web.AppKey("remembered", dict[bytes, str])
_AUDIT = web.AppKey("audit", Batched[tuple[object, ...], None])
# The columns a runner's decision fills in the broker's audit table (the rest stay NULL), in
# the table's order: the statement is SQLAlchemy's, compiled for SQLite's qmark style.
_AUDIT_KEYS = [c.name for c in audit_events.columns if c.name not in ("id", "actor", "detail")]
_AUDIT_INSERT = str(insert(audit_events).compile(dialect=sqlite_dialect(), column_keys=_AUDIT_KEYS))
_REFUSAL = json.dumps(
    {"error": "invalid_token", "error_description": "the token is not three segments"}
)


def _audit_rounds(connection: sqlite3.Connection) -> Batched[tuple[object, ...], None]:
    """Audit rows written as the broker's group commit writes them on SQLite: the rows that
    arrived while a round ran share the next, one transaction each."""

    async def write(rows: Sequence[tuple[object, ...]]) -> list[None]:
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(_AUDIT_INSERT, rows)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return [None] * len(rows)

    return Batched(write)


def _audit_values(
    request: web.Request, digest: bytes, outcome: str, reason: str, started: float, lease: str
) -> tuple[object, ...]:
    # A retry's event as the broker fills it, with values of the same lengths.
    now = time.time()
    return (
        time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(now)),
        secrets.token_hex(8),
        outcome,
        reason,
        round((time.perf_counter() - started) * 1000, 3),
        "dev-env0",
        "acme",
        "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c",
        "auth0|5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c",
        "vault-passthrough",
        "vault_oidc",
        digest.hex(),
        request.remote,
        "exchange",
        lease,
    )


def retry_floor_app(database: Path) -> web.Application:
    """A retry's irreducible work (without and with its audit row) and a refusal's: what the
    retry path and the refused token are weighed against."""

    async def start(app: web.Application) -> None:
        # The broker's own audit table and indexes, made by SQLAlchemy once, before serving.
        tables = create_sync_engine(f"sqlite:///{database}")
        audit_events.create(tables, checkfirst=True)
        tables.dispose()
        connection = sqlite3.connect(database, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, state TEXT NOT NULL)"
        )
        connection.execute("INSERT OR REPLACE INTO leases VALUES ('lease-1', 'active')")
        app[_LEASES] = connection
        app[_REMEMBERED] = {}
        app[_AUDIT] = _audit_rounds(connection)

    async def stop(app: web.Application) -> None:
        await app[_AUDIT].flush()
        app[_LEASES].close()

    async def retry(request: web.Request, *, audited: bool) -> web.Response:
        started = time.perf_counter()
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        body = json.loads(await request.read())
        digest = hashlib.sha256(token.encode()).digest()
        lease = request.app[_REMEMBERED].setdefault(digest, "lease-1")
        (state,) = (
            request.app[_LEASES]
            .execute("SELECT state FROM leases WHERE id = ?", (lease,))
            .fetchone()
        )
        if audited:
            await request.app[_AUDIT](
                _audit_values(request, digest, "success", "reused", started, lease)
            )
        answer = {"credential": body.get("credential"), "lease_id": lease, "state": state}
        return web.Response(text=json.dumps(answer), content_type="application/json")

    async def refused(request: web.Request) -> web.Response:
        started = time.perf_counter()
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        json.loads(await request.read())
        if len(token.split(".")) == 3:
            raise web.HTTPBadRequest(text="this floor answers tokens that are not JWTs")
        digest = hashlib.sha256(token.encode()).digest()
        await request.app[_AUDIT](
            _audit_values(request, digest, "denied", "token_malformed", started, "")
        )
        return web.Response(
            status=401,
            text=_REFUSAL,
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    app = _floor_server(start, stop, functools.partial(retry, audited=False))
    app.router.add_post("/audited", functools.partial(retry, audited=True))
    app.router.add_post("/refused", refused)
    return app


# How long a busy server's other processes get to start listening.
_START_SECONDS = 30.0


def busy_app(cpu_ms: float) -> web.Application:
    """A server whose every request spends ``cpu_ms`` of its thread's CPU, and nothing else."""
    budget = cpu_ms / 1000

    async def busy(request: web.Request) -> web.Response:
        await request.read()
        until = time.thread_time() + budget
        while time.thread_time() < until:
            pass
        return web.Response(text="busy")

    app = web.Application()
    app.router.add_post("/", busy)
    app.router.add_get("/", _ok)
    return app


def _serve_busy(
    port: int, cpu_ms: float, event_loop: EventLoopChoice, listening: Event | None = None
) -> None:
    """Serve ``busy_app`` on ``port`` (shared with the other processes) until SIGTERM."""

    async def serve() -> None:
        runner = web.AppRunner(busy_app(cpu_ms), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
        if listening is not None:
            listening.set()
        stopped = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
        await stopped.wait()
        await runner.cleanup()

    loop = new_event_loop(event_loop)
    loop.run_until_complete(serve())
    loop.close()


def serve_busy(port: int, cpu_ms: float, processes: int, event_loop: EventLoopChoice) -> int:
    """``processes`` of ``busy_app`` on one port. This process listens last, once the others
    do, so a readiness check it answers means all of them serve; the others are its daemonic
    children and end with it."""
    context = multiprocessing.get_context("spawn")
    for _ in range(processes - 1):
        listening = context.Event()
        context.Process(
            target=_serve_busy, args=(port, cpu_ms, event_loop, listening), daemon=True
        ).start()
        if not listening.wait(_START_SECONDS):
            raise SystemExit("a busy server process did not start")
    _serve_busy(port, cpu_ms, event_loop)
    return 0


def _floor_server(
    start: Callable[[web.Application], Awaitable[None]],
    stop: Callable[[web.Application], Awaitable[None]],
    handle: Callable[[web.Request], Awaitable[web.Response]],
) -> web.Application:
    """A floor's app: ``handle`` answers ``POST /``, ``GET /`` says it is up."""
    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/", handle)
    app.router.add_get("/", _ok)
    return app


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _serve_moto(port: int) -> int:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    threading.Event().wait()  # until terminated
    return 0


def main(argv: list[str] | None = None) -> int:
    """Serve one of the benchmark's servers on loopback until terminated."""
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=["hello", "issuer", "moto", "floor", "retry-floor", "busy"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keys-dir", type=Path, help="the dev issuer's key directory")
    parser.add_argument("--login-url", help="floor: OpenBao's JWT login URL")
    parser.add_argument("--role", default="", help="floor: the JWT role")
    parser.add_argument("--jwks-url", help="floor: verify tokens with this JWKS's keys")
    parser.add_argument("--issuer", help="floor: the tokens' iss")
    parser.add_argument("--audience", help="floor: the tokens' aud")
    parser.add_argument("--database", type=Path, help="floor: write a row per request here")
    parser.add_argument("--sqlite3", action="store_true", help="floor: the row through sqlite3")
    parser.add_argument("--cpu-ms", type=float, default=0.0, help="busy: CPU per request")
    parser.add_argument("--processes", type=int, default=1, help="busy: processes on the port")
    # The hello-world is the broker's ceiling: it runs on the loop the broker runs on.
    parser.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    args = parser.parse_args(argv)
    if args.kind == "moto":
        return _serve_moto(args.port)
    if args.kind == "busy":
        return serve_busy(args.port, args.cpu_ms, args.processes, args.event_loop)
    if args.kind == "hello":
        app = hello_app()
    elif args.kind == "retry-floor":
        if args.database is None:
            parser.error("retry-floor needs --database")
        app = retry_floor_app(args.database)
    elif args.kind == "floor":
        if args.login_url is None:
            parser.error("floor needs --login-url")
        app = floor_app(
            FloorSettings(
                args.login_url,
                args.role,
                args.jwks_url,
                args.issuer,
                args.audience,
                args.database,
                args.sqlite3,
            )
        )
    else:
        if args.keys_dir is None:
            parser.error("issuer needs --keys-dir")
        issuer = DevPlatformIssuer(args.keys_dir, f"http://127.0.0.1:{args.port}")
        app = create_issuer_app(issuer)
        app.router.add_get("/", _ok)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=new_event_loop(args.event_loop),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
