"""server.event_loop: which loop ``tokenbroker serve`` runs on."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from tokenbroker.config.models import ServerSettings
from tokenbroker.errors import ConfigError
from tokenbroker.web.loop import loop_name, new_event_loop


def test_auto_is_the_default_and_takes_uvloop_where_installed() -> None:
    assert ServerSettings().event_loop == "auto"
    loop = new_event_loop("auto")
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop_name(loop) == "uvloop"
    finally:
        loop.close()


def test_asyncio_asked_for_is_asyncio_s_own_loop() -> None:
    loop = new_event_loop("asyncio")
    try:
        assert not isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert loop_name(loop) == "asyncio"
    finally:
        loop.close()


def test_auto_without_uvloop_falls_back_to_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    loop = new_event_loop("auto")
    try:
        assert loop_name(loop) == "asyncio"
    finally:
        loop.close()


def test_uvloop_asked_for_by_name_and_missing_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(ConfigError) as raised:
        new_event_loop("uvloop")
    assert raised.value.problems == [
        "server.event_loop: uvloop is not installed (pip install uvloop)"
    ]


def test_an_unknown_event_loop_is_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match="event_loop"):
        ServerSettings.model_validate({"event_loop": "trio"})


def test_a_loop_runs_the_broker_s_coroutines() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    for choice in ("auto", "asyncio"):
        loop = new_event_loop(choice)
        try:
            assert loop.run_until_complete(answer()) == 42
        finally:
            loop.close()
