"""``tokenbroker exchange --watch`` as a real child process, against a broker and OpenBao dev.

The Vault role issues tokens for 6 seconds, so the watcher re-exchanges every 4: a test sees a
few rounds in seconds, each a real JWT login at OpenBao. The broker and the dev issuer serve on
the test's loop; the watcher runs as its own process, stopped by a real SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import hvac
import pytest
from pytest_aiohttp import AiohttpServer
from tests.client.fakes import CLIENT_VARIABLES
from tests.support.aws import free_port
from tests.support.openbao import OpenBaoDevServer, trust_env0_tokens
from tests.support.platform import ServedDevIssuer

from tokenbroker.client.envfiles import parse_values
from tokenbroker.config import parse_settings
from tokenbroker.web.app import create_app

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
ROLE = "watched"
TOKEN_TTL_SECONDS = 6
# A round comes every 4 s (two thirds of 6); a deadline of two rounds and a bit bounds a hang.
ROUND_DEADLINE_SECONDS = 10.0

pytestmark = pytest.mark.openbao
_T = TypeVar("_T")


@dataclass
class Broker:
    """A broker on the test's loop, trusting the dev env0 issuer, with a short-lived Vault role."""

    url: str
    issuer: ServedDevIssuer
    openbao: OpenBaoDevServer
    job: str = field(default_factory=lambda: str(uuid.uuid4()))

    def token(self, subject: str = "watched-runner") -> str:
        """An env0 token of this test's deployment (its job), with ``subject`` as ``sub``."""
        claims = {"deploymentLogId": self.job, "sub": subject}
        return self.issuer.mint("env0", org=ORG, project=PROJECT, claims=claims)


@pytest.fixture
async def broker(
    tmp_path: Path,
    dev_issuer: ServedDevIssuer,
    openbao: OpenBaoDevServer,
    aiohttp_server: AiohttpServer,
) -> Broker:
    auth_path = f"watch-{uuid.uuid4().hex[:8]}"
    port = free_port()
    issuer = dev_issuer.issuer_settings("env0")
    vault = {"address": openbao.address, "role": ROLE, "auth_path": auth_path}
    settings = parse_settings(
        {
            # The backends and issuers of this test listen on loopback.
            "security": {"allow_private_backends": True},
            "server": {
                "data_dir": str(tmp_path / "broker"),
                "public_url": f"http://127.0.0.1:{port}",
                "port": port,
            },
            # Each round is a new credential, as it is for any lifetime past 1.5 reuse windows.
            "exchange": {"reuse_seconds": 0},
            "issuers": [issuer.model_dump(mode="json")],
            "organizations": [{"name": "acme", "issuer": issuer.name, "platform_org_id": ORG}],
            "credentials": [
                {"organization": "acme", "name": "short-vault", "type": "vault_oidc",
                 "settings": vault},
            ],
            "assignments": [
                {"organization": "acme", "project": PROJECT, "credentials": ["short-vault"]},
            ],
        },
        {},
    )  # fmt: skip
    await aiohttp_server(create_app(settings), port=port)
    await trust_env0_tokens(
        openbao,
        dev_issuer,
        auth_path,
        role=ROLE,
        org=ORG,
        policy="watched-access",
        kv_mount="secrets-for-watch",
        token_ttl=f"{TOKEN_TTL_SECONDS}s",
    )
    return Broker(f"http://127.0.0.1:{port}", dev_issuer, openbao)


def write_token(path: Path, token: str) -> None:
    """Replace the token file the way a platform rotates one (a new file renamed over it)."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(token)
    fresh.replace(path)


@dataclass
class Watcher:
    """A running ``tokenbroker exchange --watch``."""

    process: asyncio.subprocess.Process
    output: Path
    log: Path

    async def stop(self) -> int:
        """SIGTERM, then its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


async def start_watcher(broker: Broker, tmp_path: Path, token_file: Path, *extra: str) -> Watcher:
    output = tmp_path / "out" / "vault.sh"
    output.parent.mkdir(exist_ok=True)
    log = tmp_path / "watcher.log"
    # Nothing of the machine's CI environment reaches the runner's client.
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tokenbroker", "exchange", "--broker", broker.url,
            "--credential", "short-vault", "--format", "shell", "--output", str(output),
            "--token-file", str(token_file), "--watch", *extra,
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )  # fmt: skip
    return Watcher(process, output, log)


@pytest.fixture
async def watchers() -> AsyncIterator[list[Watcher]]:
    """Watchers a test started; any still running at its end are killed."""
    started: list[Watcher] = []
    yield started
    for watcher in started:
        if watcher.process.returncode is None:
            watcher.process.kill()
            await watcher.process.wait()


async def eventually(check: Callable[[], _T | None], what: str, watcher: Watcher) -> _T:
    """Poll ``check`` (off the loop, so the broker keeps serving) until it gives a value."""
    deadline = time.monotonic() + ROUND_DEADLINE_SECONDS
    while True:
        found = await asyncio.to_thread(check)
        if found is not None:
            return found
        if watcher.process.returncode is not None or time.monotonic() > deadline:
            pytest.fail(f"no {what} in {ROUND_DEADLINE_SECONDS:g} s:\n{watcher.stderr()}")
        await asyncio.sleep(0.05)  # polling an observable condition, not standing in for one


def vault_token_in(path: Path) -> str | None:
    try:
        return parse_values(path.read_text()).get("VAULT_TOKEN")
    except FileNotFoundError:
        return None


def vault_lookup(openbao: OpenBaoDevServer, token: str) -> dict[str, object] | None:
    """``bao token lookup`` of ``token``: its data, or None once it is revoked or expired."""
    try:
        data: dict[str, object] = openbao.client().auth.token.lookup(token)["data"]
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
        return None
    return data


@dataclass
class Reads:
    """What a reader saw of the file while it changed: each version with its inode."""

    versions: dict[str, int] = field(default_factory=dict)
    torn: list[str] = field(default_factory=list)


@contextmanager
def reading_continuously(path: Path) -> Iterator[Reads]:
    """Read ``path`` in a loop in a thread for the block's duration, as a job would."""
    reads = Reads()
    done = threading.Event()

    def read_loop() -> None:
        while not done.is_set():
            try:
                with path.open() as handle:
                    text, inode = handle.read(), os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                continue
            values = parse_values(text)
            if not (text.endswith("\n") and {"VAULT_TOKEN", "TOKENBROKER_LEASE_ID"} <= set(values)):
                reads.torn.append(text)
            else:
                reads.versions.setdefault(text, inode)
            time.sleep(0.0005)  # pacing the reader, so the broker's process keeps its CPU

    thread = threading.Thread(target=read_loop, daemon=True)
    thread.start()
    try:
        yield reads
    finally:
        done.set()
        thread.join()


async def test_watch_keeps_the_file_valid_rereads_the_token_file_and_revokes_at_sigterm(
    broker: Broker, tmp_path: Path, watchers: list[Watcher]
) -> None:
    token_file = tmp_path / "platform-token"
    write_token(token_file, broker.token("runner-before-rotation"))
    watcher = await start_watcher(broker, tmp_path, token_file)
    watchers.append(watcher)
    first = await eventually(lambda: vault_token_in(watcher.output), "first credential", watcher)
    with reading_continuously(watcher.output) as reads:
        second = await eventually(
            lambda: t if (t := vault_token_in(watcher.output)) != first else None,
            "re-exchanged credential",
            watcher,
        )
        # The platform rotates its token; the next round logs in to Vault with the new one.
        write_token(token_file, broker.token("runner-after-rotation"))

        def logged_in_after_rotation() -> tuple[str, dict[str, object]] | None:
            token = vault_token_in(watcher.output)
            data = vault_lookup(broker.openbao, token) if token not in (None, second) else None
            return (token, data) if token and data else None

        last, lookup = await eventually(
            logged_in_after_rotation, "credential from the new token", watcher
        )
    assert "runner-after-rotation" in str(lookup["display_name"])
    assert vault_lookup(broker.openbao, second) is not None
    stopped_at, ttl = time.monotonic(), lookup["ttl"]
    assert isinstance(ttl, int)
    assert ttl >= 2

    code = await watcher.stop()

    assert code == 0, watcher.stderr()
    # Revoked, not expired: the last token had seconds left when the watcher was stopped.
    assert time.monotonic() - stopped_at < ttl - 1
    assert vault_lookup(broker.openbao, last) is None
    assert "the broker revoked short-vault" in watcher.stderr()

    # Replaced by rename: every version is a new file, and no reader saw an empty or part one.
    assert reads.torn == []
    assert len(reads.versions) >= 2
    assert len(set(reads.versions.values())) == len(reads.versions)
    assert [p.name for p in watcher.output.parent.iterdir()] == ["vault.sh"]
    assert watcher.output.stat().st_mode & 0o777 == 0o600


async def test_watch_with_keep_leaves_the_credential_valid_after_sigterm(
    broker: Broker, tmp_path: Path, watchers: list[Watcher]
) -> None:
    token_file = tmp_path / "platform-token"
    write_token(token_file, broker.token())
    watcher = await start_watcher(broker, tmp_path, token_file, "--keep")
    watchers.append(watcher)
    held = await eventually(lambda: vault_token_in(watcher.output), "first credential", watcher)

    code = await watcher.stop()

    assert code == 0, watcher.stderr()
    assert vault_lookup(broker.openbao, held) is not None
    assert "left to expire" in watcher.stderr()


async def test_a_refused_refresh_ends_the_watch_with_exit_4_and_leaves_the_file(
    broker: Broker, tmp_path: Path, watchers: list[Watcher]
) -> None:
    token_file = tmp_path / "platform-token"
    write_token(token_file, broker.token())
    watcher = await start_watcher(broker, tmp_path, token_file)
    watchers.append(watcher)
    held = await eventually(lambda: vault_token_in(watcher.output), "first credential", watcher)
    # A platform token the broker refuses (its issuer's key does not sign it).
    header, claims, _ = broker.token().split(".")
    write_token(token_file, f"{header}.{claims}.c2lnbmF0dXJl")

    code = await asyncio.wait_for(watcher.process.wait(), ROUND_DEADLINE_SECONDS)

    assert code == 4, watcher.stderr()
    assert "signature_invalid" in watcher.stderr()
    assert vault_token_in(watcher.output) == held
    assert vault_lookup(broker.openbao, held) is not None
