"""OpenBao hung and down: a real OpenBao dev server of this test's own, stopped or frozen.

Hung is SIGSTOP: the kernel still accepts connections and takes the request, nobody answers.
Down is the process stopped; it comes back on the same port (a dev server keeps nothing, so
its JWT auth is configured again). The figures count Vault tokens created during the fault
that no runner received: a login Vault carried out after the broker gave up on it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from tests.faults.conftest import (
    Figures,
    VaultFault,
    configure_vault,
    start_vault_fault,
    vault_tokens,
)
from tests.support.openbao import OpenBaoDevServer
from tests.support.platform import ServedDevIssuer

pytestmark = pytest.mark.openbao


@pytest.fixture
def own_openbao() -> Iterator[OpenBaoDevServer]:
    """An OpenBao for this test alone: the shared one must never hang or stop."""
    with OpenBaoDevServer() as server:
        yield server


@pytest.fixture
async def fault(
    tmp_path: Path,
    dev_issuer: ServedDevIssuer,
    own_openbao: OpenBaoDevServer,
    aiohttp_client: AiohttpClient,
) -> VaultFault:
    return await start_vault_fault(tmp_path, dev_issuer, own_openbao, aiohttp_client)


async def test_a_hung_openbao_is_a_504_at_the_credentials_timeout_then_heals(
    fault: VaultFault, figures: Figures
) -> None:
    before = await vault_tokens(fault.bao)
    assert fault.bao.pid is not None
    os.kill(fault.bao.pid, signal.SIGSTOP)
    try:
        during = await fault.broker.exchange("vault")
    finally:
        os.kill(fault.bao.pid, signal.SIGCONT)
    assert (during.status, during.body["error"], during.reason) == (
        504,
        "upstream_timeout",
        "backend_timeout",
    )
    assert not during.issued_anything
    assert during.seconds < 2 + 1  # the credential's timeout_seconds, and no retry after it

    recovery = await fault.broker.recovers("vault")
    # The recovery's one token is the runner's; any other is a login of the timed-out request,
    # which Vault carried out once it resumed and the broker revokes when the answer comes.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (orphans := len(await vault_tokens(fault.bao) - before) - 1) > 0:
        assert loop.time() < deadline, f"{orphans} orphaned Vault token(s) still valid"
        await asyncio.sleep(0.1)  # polling OpenBao's token list, bounded by the deadline
    assert orphans == 0
    figures.record(
        "OpenBao hung (SIGSTOP)",
        during,
        recovery,
        "the login Vault made late was revoked when it answered: 0 tokens left",
    )


async def test_a_stopped_openbao_is_a_502_then_heals_once_it_is_back(
    fault: VaultFault, figures: Figures
) -> None:
    fault.bao.port = int(fault.bao.address.rsplit(":", 1)[1])
    fault.bao.stop()
    during = await fault.broker.exchange("vault")
    assert (during.status, during.body["error"], during.reason) == (
        502,
        "upstream_error",
        "backend_unreachable",
    )
    assert not during.issued_anything

    fault.bao.start()
    await configure_vault(fault.bao, fault.broker.issuer, fault.auth_path)
    recovery = await fault.broker.recovers("vault")
    figures.record("OpenBao down (process stopped)", during, recovery, "nothing")
