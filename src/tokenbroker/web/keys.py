"""Every ``web.AppKey`` of the application, in one place."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from tokenbroker.clock import Clock
from tokenbroker.config.models import Settings
from tokenbroker.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
METRICS = web.AppKey("metrics", Metrics)
