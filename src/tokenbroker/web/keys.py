"""Every ``web.AppKey`` of the application, in one place."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from tokenbroker.backends.registry import Backends
from tokenbroker.clock import Clock
from tokenbroker.config.models import Settings
from tokenbroker.exchange.floods import ClientGate
from tokenbroker.exchange.service import ExchangeService
from tokenbroker.identity.validator import TokenValidator
from tokenbroker.issuer.keyring import KeyRing
from tokenbroker.metrics import Metrics
from tokenbroker.store import Store
from tokenbroker.web.admin.auth import AdminTokens
from tokenbroker.web.console.sessions import ConsoleSessions, SignInThrottle

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
METRICS = web.AppKey("metrics", Metrics)
KEYRING = web.AppKey("keyring", KeyRing)
STORE = web.AppKey("store", Store)
TOKEN_VALIDATOR = web.AppKey("token_validator", TokenValidator)
BACKENDS = web.AppKey("backends", Backends)
SERVICE = web.AppKey("service", ExchangeService)
CLIENT_GATE = web.AppKey("client_gate", ClientGate)
ADMIN_TOKENS = web.AppKey("admin_tokens", AdminTokens)
CONSOLE_SESSIONS = web.AppKey("console_sessions", ConsoleSessions)
CONSOLE_SIGN_IN_THROTTLE = web.AppKey("console_sign_in_throttle", SignInThrottle)
