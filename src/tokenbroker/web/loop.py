"""The event loop the server runs on: uvloop where installed, else asyncio's own."""

from __future__ import annotations

import asyncio
from typing import Literal

from tokenbroker.errors import ConfigError

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]


def new_event_loop(choice: EventLoopChoice) -> asyncio.AbstractEventLoop:
    """A new event loop of the kind ``server.event_loop`` names.

    ``auto`` takes uvloop when it can be imported and falls back to asyncio's loop quietly;
    ``uvloop`` asked for by name and missing is a configuration error, not a silent fallback.
    """
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ConfigError(
                    ["server.event_loop: uvloop is not installed (pip install uvloop)"]
                ) from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which loop a server runs on, for its start-up log line."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
