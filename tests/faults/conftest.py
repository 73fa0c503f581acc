"""The fault suite's broker, how it is measured, and the table the measurements add up to.

Each test breaks one dependency of a real broker (a real app on a real store, tokens really
signed by the dev platform issuer), records what an exchange answers during the fault and how
long the first successful exchange takes once the fault is cleared, and adds a row to the
figures. They are printed at the end of the session (``pytest -s`` shows them) and written to
``build/fault-figures.md``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.support.broker import one_org_settings
from tests.support.openbao import OpenBaoDevServer, trust_env0_tokens
from tests.support.platform import ServedDevIssuer
from tokenbroker.config import IssuerSettings, Settings
from tokenbroker.web.app import create_app

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
RESULTS = Path(__file__).resolve().parents[2] / "build" / "fault-figures.md"
# Generous: a loaded machine may be slow, and a recovery that takes this long has failed.
RECOVERY_DEADLINE_SECONDS = 60.0
# Outbound calls (JWKS fetches) give up after this; a fault then costs an exchange about this.
CLIENT_TIMEOUT_SECONDS = 3.0

Client = TestClient[web.Request, web.Application]


@dataclass(frozen=True, slots=True)
class Answer:
    """One exchange as the runner saw it: status, error and reason, how long it took."""

    status: int
    body: dict[str, object]
    seconds: float
    retry_after: str | None

    @property
    def reason(self) -> str | None:
        """The error's reason; None for a success."""
        reason = self.body.get("reason")
        return reason if isinstance(reason, str) else None

    @property
    def issued_anything(self) -> bool:
        """Whether the answer carries a credential."""
        return "values" in self.body

    def summary(self) -> str:
        """``504 upstream_timeout (backend_timeout), Retry-After 5`` or ``200``."""
        if self.status == 200:
            return "200"
        text = f"{self.status} {self.body.get('error')} ({self.reason})"
        return text + (f", Retry-After {self.retry_after}" if self.retry_after else "")


@dataclass(frozen=True, slots=True)
class Figure:
    """One row of the fault table."""

    fault: str
    during: str
    answer_seconds: float
    # None: the runner saw no outage, so there was nothing to recover from.
    recovery_seconds: float | None
    issued: str


@dataclass
class Figures:
    """The rows recorded by the session's fault tests."""

    rows: list[Figure] = field(default_factory=list)

    def record(
        self, fault: str, during: Answer, recovery_seconds: float | None, issued: str
    ) -> None:
        """Add the row of one fault."""
        self.rows.append(Figure(fault, during.summary(), during.seconds, recovery_seconds, issued))

    def table(self) -> str:
        """The rows as a markdown table."""
        lines = [
            "| fault | the runner gets | answered in | first success after the fault clears "
            "| issued during the fault |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {row.fault} | {row.during} | {row.answer_seconds:.2f} s "
            f"| {_seconds(row.recovery_seconds)} | {row.issued} |"
            for row in self.rows
        ]
        return "\n".join(lines) + "\n"


def _seconds(value: float | None) -> str:
    return "no outage seen" if value is None else f"{value:.2f} s"


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    """The session's fault figures, printed and written to build/ once the tests are done."""
    collected = Figures()
    yield collected
    if collected.rows:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(collected.table())
        print(f"\n\nfault figures ({RESULTS}):\n\n{collected.table()}")


@dataclass
class Broker:
    """A broker under test and the platform issuer whose tokens it trusts."""

    client: Client
    issuer: ServedDevIssuer

    @property
    def app(self) -> web.Application:
        """The broker's application."""
        return self.client.server.app

    def token(self) -> str:
        """A fresh env0 token (its own jti), so no exchange is a retry of another."""
        return self.issuer.mint("env0", org=ORG, project=PROJECT, claims={"jti": uuid.uuid4().hex})

    async def exchange(self, credential: str) -> Answer:
        """One exchange of a fresh token for ``credential``, timed."""
        return await timed(
            self.client.post(
                "/v1/exchange",
                json={"credential": credential},
                headers={"Authorization": f"Bearer {self.token()}"},
            )
        )

    async def recovers(self, credential: str) -> float:
        """Seconds until an exchange of ``credential`` succeeds, polling with a deadline."""
        return await seconds_until_success(lambda: self.exchange(credential))


async def timed(request: Awaitable[aiohttp.ClientResponse]) -> Answer:
    """Send ``request`` and read its answer, with the time both took."""
    started = time.perf_counter()
    async with await request as response:
        body = await response.json()
        seconds = time.perf_counter() - started
        return Answer(response.status, body, seconds, response.headers.get("Retry-After"))


async def seconds_until_success(attempt: Callable[[], Awaitable[Answer]]) -> float:
    """Repeat ``attempt`` until it answers 200; the seconds that took. Fails at the deadline."""
    started = time.perf_counter()
    while True:
        answer = await attempt()
        elapsed = time.perf_counter() - started
        if answer.status == 200:
            return elapsed
        assert elapsed < RECOVERY_DEADLINE_SECONDS, f"not recovered: {answer.summary()}"


def fault_settings(
    data_dir: Path,
    issuer: IssuerSettings,
    credentials: list[dict[str, object]],
    **sections: dict[str, object],
) -> Settings:
    """One organization of ``issuer`` with ``credentials`` assigned to PROJECT; loopback
    backends allowed; ``sections`` added (``store``, ``rate_limit``...)."""
    server: dict[str, object] = {"client_timeout_seconds": CLIENT_TIMEOUT_SECONDS}
    server.update(sections.pop("server", {}))
    # Limits high enough that no rate limit answers for the fault under test.
    rate_limit: dict[str, object] = {"requests_per_minute": 1_000_000, "burst": 100_000}
    rate_limit.update(sections.pop("rate_limit", {}))
    return one_org_settings(
        data_dir,
        issuer,
        credentials,
        org=ORG,
        project=PROJECT,
        server=server,
        rate_limit=rate_limit,
        **sections,
    )


VAULT_ROLE = "fault-runner"


def vault_credential(address: str, auth_path: str) -> dict[str, object]:
    """A vault_oidc credential ("vault") logging in at ``auth_path`` with the platform token."""
    return {
        "organization": "acme",
        "name": "vault",
        "type": "vault_oidc",
        "settings": {
            "address": address,
            "role": VAULT_ROLE,
            "auth_path": auth_path,
            "timeout_seconds": 2,
        },
    }


async def configure_vault(bao: OpenBaoDevServer, issuer: ServedDevIssuer, auth_path: str) -> None:
    """JWT auth at ``auth_path`` trusting the dev issuer's env0 tokens of ORG.

    In a thread: OpenBao fetches the JWKS, served on this event loop, while it takes the write.
    """
    await trust_env0_tokens(
        bao, issuer, auth_path, role=VAULT_ROLE, org=ORG, policy="fault-runner", kv_mount="fault-kv"
    )


async def vault_tokens(bao: OpenBaoDevServer) -> set[str]:
    """The accessor of every token OpenBao holds."""
    listed = await asyncio.to_thread(bao.client().auth.token.list_accessors)
    return set(listed["data"]["keys"])


@dataclass
class VaultFault:
    """The broker, the OpenBao its one credential logs in at, and that JWT auth path."""

    broker: Broker
    bao: OpenBaoDevServer
    auth_path: str


async def start_vault_fault(
    data_dir: Path, issuer: ServedDevIssuer, bao: OpenBaoDevServer, aiohttp_client: AiohttpClient
) -> VaultFault:
    """A broker whose credential ``vault`` logs in at ``bao``, checked with one exchange."""
    auth_path = f"fault-{uuid.uuid4().hex[:8]}"
    await configure_vault(bao, issuer, auth_path)
    credentials = [vault_credential(bao.address, auth_path)]
    settings = fault_settings(data_dir, issuer.issuer_settings("env0"), credentials)
    broker = Broker(await aiohttp_client(create_app(settings)), issuer)
    assert (await broker.exchange("vault")).status == 200
    return VaultFault(broker, bao, auth_path)
