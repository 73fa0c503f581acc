"""Serving one application until SIGTERM (web/serving.py)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Iterator

import pytest
from aiohttp import web

from tokenbroker.web.serving import SERVING_STATE, ServingState, serve_until_stopped


@pytest.fixture
def restored_process_state() -> Iterator[None]:
    """Give the test process back its SIGTERM and an unfrozen collector afterwards."""
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


async def test_what_start_up_made_is_frozen_out_of_the_collector_before_serving(
    restored_process_state: None,
) -> None:
    app = web.Application()
    app[SERVING_STATE] = ServingState()
    frozen_when_listening: list[int] = []

    def listening(host: str, port: int) -> None:
        frozen_when_listening.append(gc.get_freeze_count())
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)

    assert gc.get_freeze_count() == 0
    await serve_until_stopped(
        app,
        host="127.0.0.1",
        port=0,
        reuse_port=False,
        grace_seconds=1.0,
        on_listening=listening,
    )
    (frozen,) = frozen_when_listening
    assert frozen > 0
