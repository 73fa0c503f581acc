"""The application factory: builds the app, no I/O; resources open in cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp import web

from tokenbroker import __version__
from tokenbroker.backends import registry
from tokenbroker.backends.base import BackendContext
from tokenbroker.backends.registry import Backends
from tokenbroker.clock import Clock, SystemClock
from tokenbroker.config.models import Settings
from tokenbroker.config.urls import PRIVATE_ADDRESS_HINT, is_private_address
from tokenbroker.exchange.floods import ClientGate
from tokenbroker.exchange.reuse import ReuseWindow
from tokenbroker.exchange.service import ExchangeService
from tokenbroker.identity.jwks import JwksCache
from tokenbroker.identity.validator import TokenValidator
from tokenbroker.issuer.keyring import KeyRing
from tokenbroker.metrics import Metrics
from tokenbroker.ratelimit import open_rate_limiter
from tokenbroker.store import Store
from tokenbroker.store.declarative import apply_declarative
from tokenbroker.store.keystore import open_key_store, store_encryption_key
from tokenbroker.store.policy_cache import PolicyCache
from tokenbroker.web import keys
from tokenbroker.web.admin import create_admin_app
from tokenbroker.web.console.app import console_root, console_state, create_console_app
from tokenbroker.web.errors import request_context_middleware
from tokenbroker.web.routes import exchange, health, leases, metrics, oauth, openapi, wellknown
from tokenbroker.web.serving import SERVING_STATE, ServingState, serving_state_middleware

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """Build the broker's application from validated settings."""
    app = web.Application(
        # Outermost: a drain waits for every request, whatever the inner middlewares answer.
        middlewares=[serving_state_middleware, request_context_middleware],
        client_max_size=settings.server.max_body_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock or SystemClock()
    app[keys.METRICS] = Metrics()
    app[health.READINESS_CHECKS] = {}
    app[SERVING_STATE] = ServingState()
    # Order matters: each resource may use the ones opened before it.
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(_token_validator)
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_client_gate)
    app.cleanup_ctx.append(_keyring)
    app.cleanup_ctx.append(_exchange_service)
    health.add_routes(app)
    wellknown.add_routes(app)
    exchange.add_routes(app)
    leases.add_routes(app)
    oauth.add_routes(app)
    metrics.add_routes(app)
    openapi.add_routes(app)
    console_state(app, settings)
    app.add_subapp("/v1/admin", create_admin_app(app[keys.ADMIN_TOKENS]))
    app.router.add_get("/console", console_root)
    app.add_subapp("/console", create_console_app(settings))
    return app


def refuse_private_addresses(addr_info: AddrInfoType) -> socket.socket:
    """The outbound session's socket factory: no connection to a non-public address.

    It sees the address actually connected to, after DNS, so a URL that passed the
    configuration checks but resolves to a private address (DNS rebinding) is refused too.
    """
    family, type_, proto, _, sockaddr = addr_info
    # An IPv6 sockaddr may carry a zone ("fe80::1%eth0"); the address is what comes before.
    address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
    if is_private_address(address):
        # With an errno, aiohttp's ClientConnectorError shows the text (else it says "None").
        raise OSError(errno.EACCES, f"refused to connect to {address}: {PRIVATE_ADDRESS_HINT}")
    return socket.socket(family=family, type=type_, proto=proto)


def outbound_session(settings: Settings) -> aiohttp.ClientSession:
    """The one client session for every outbound call (JWKS fetches and backends share it)."""
    timeout = aiohttp.ClientTimeout(total=settings.server.client_timeout_seconds)
    guard = None if settings.security.allow_private_backends else refuse_private_addresses
    # No cookie jar: the session serves every organization, so a cookie one backend sets
    # must not ride along on another tenant's call.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(socket_factory=guard),
        timeout=timeout,
        headers={"User-Agent": f"tokenbroker/{__version__}"},
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@asynccontextmanager
async def _http_client(app: web.Application) -> AsyncIterator[None]:
    async with outbound_session(app[keys.SETTINGS]) as session:
        app[keys.HTTP_CLIENT] = session
        yield


# A readiness probe waits this long for an issuer's first JWKS fetch before reporting it.
_JWKS_READINESS_WAIT_SECONDS = 2.0


@asynccontextmanager
async def _token_validator(app: web.Application) -> AsyncIterator[None]:
    # One JWKS cache per application, shared by every request (never process-global).
    settings = app[keys.SETTINGS]
    jwks = JwksCache(
        app[keys.HTTP_CLIENT],
        app[keys.CLOCK],
        app[keys.METRICS],
        allow_private_backends=settings.security.allow_private_backends,
    )
    issuers = settings.issuers
    app[keys.TOKEN_VALIDATOR] = TokenValidator(issuers, jwks, app[keys.CLOCK])
    # One entry per issuer, so /readyz names the issuers whose keys were never fetched (their
    # exchanges would all be 503). A probe starts the first fetch and waits for it briefly.
    for issuer in issuers:
        app[health.READINESS_CHECKS][f"jwks:{issuer.name}"] = functools.partial(
            jwks.require_fetched, issuer, _JWKS_READINESS_WAIT_SECONDS
        )
    yield
    await jwks.aclose()


@asynccontextmanager
async def _store(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    settings.server.data_dir.mkdir(parents=True, exist_ok=True)
    # The exchange's policy lookup from memory; changes made elsewhere show within 1 s.
    store = await Store.open(
        settings.store.resolved_url(settings.server.data_dir),
        credential_types=registry.INSTALLED,
        policy_cache=PolicyCache(),
        allow_private_backends=settings.security.allow_private_backends,
    )
    watcher: asyncio.Task[None] | None = None
    try:
        if settings.store.migrate_on_start:
            await store.upgrade()
        await apply_declarative(store, settings)
        app[keys.STORE] = store
        app[health.READINESS_CHECKS]["store"] = store.ping
        app[health.READINESS_CHECKS]["audit"] = store.audit.check_writable
        watcher = asyncio.create_task(store.policy.watch_revision())
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await store.close()


@asynccontextmanager
async def _client_gate(app: web.Application) -> AsyncIterator[None]:
    # Closed before the store: the summaries of floods still open are written at shutdown.
    gate = ClientGate(app[keys.SETTINGS].rate_limit, app[keys.CLOCK], app[keys.STORE].audit.record)
    app[keys.CLIENT_GATE] = gate
    sweeper = asyncio.create_task(gate.sweep_forever())
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    await gate.aclose()


# Other processes (`tokenbroker keys rotate`, other instances) save keys; pick them up this often.
_KEY_RELOAD_SECONDS = 60.0


@asynccontextmanager
async def _keyring(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    # The keys live in the store, so every instance sharing it signs with the same key.
    key_store = await open_key_store(settings, app[keys.STORE])
    ring = await KeyRing.open(key_store, settings.signing, app[keys.CLOCK])
    app[keys.KEYRING] = ring
    app[health.READINESS_CHECKS]["keys"] = ring.check
    refresher = asyncio.create_task(ring.refresh_forever(_KEY_RELOAD_SECONDS))
    yield
    refresher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await refresher


@asynccontextmanager
async def _exchange_service(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    clock = app[keys.CLOCK]
    backends = Backends(BackendContext(http=app[keys.HTTP_CLIENT], clock=clock))
    app[keys.BACKENDS] = backends
    rate_limiter = open_rate_limiter(settings.rate_limit, clock)
    reuse = ReuseWindow(
        app[keys.STORE].leases,
        app[keys.STORE].audit,
        clock,
        encryption_key=await store_encryption_key(settings, app[keys.STORE]),
        reuse_seconds=settings.exchange.reuse_seconds,
        wait_seconds=settings.server.client_timeout_seconds * 2,
    )
    app[keys.SERVICE] = ExchangeService(
        validator=app[keys.TOKEN_VALIDATOR],
        store=app[keys.STORE],
        keyring=app[keys.KEYRING],
        backends=backends,
        metrics=app[keys.METRICS],
        clock=clock,
        issuer_url=settings.server.issuer_url,
        signing=settings.signing,
        reuse=reuse,
        rate_limit=settings.rate_limit,
        rate_limiter=rate_limiter,
    )
    sweeper = asyncio.create_task(_sweep_leases(app[keys.STORE], clock))
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    # Orphans of runners that hung up are revoked before the backends close.
    await reuse.drain()
    await backends.close()
    if rate_limiter is not None:
        await rate_limiter.close()


# Expired leases are marked, and sealed material past its time dropped, this often.
_SWEEP_SECONDS = 60.0


async def _sweep_leases(store: Store, clock: Clock) -> None:
    while True:
        try:
            await store.leases.sweep(datetime.fromtimestamp(clock.now(), UTC))
        except Exception as exc:  # a failed sweep is retried; it must not end the task
            log.warning("lease sweep failed", extra={"exception": type(exc).__name__})
        await asyncio.sleep(_SWEEP_SECONDS)
