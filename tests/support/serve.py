"""``tokenbroker serve`` as a real child process, and the dev env0 issuer it trusts in another.

The issuer runs in its own process (``python -m bench.servers issuer``), so a test may block on
the broker (synchronous HTTP, ``process.wait``) without starving the issuer's JWKS endpoint.
Configs are written as TOML, the way operators write them.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from bench.procs import ServerProcess, free_port
from bench.tomlconfig import dump_toml

from tokenbroker.devstack.platform_issuer import DevPlatformIssuer
from tokenbroker.devstack.processes import log_tail
from tokenbroker.web.errors import REQUEST_ID_HEADER

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
ORGANIZATION = "acme"
_T = TypeVar("_T")


@dataclass
class IssuerProcess:
    """The dev platform issuer served by its own process; ``mint`` signs env0 tokens."""

    issuer: DevPlatformIssuer
    server: ServerProcess

    def mint(self) -> str:
        """A signed env0 token of the test organization and project."""
        return self.issuer.mint("env0", org=ORG, project=PROJECT)

    def issuer_entry(self) -> dict[str, object]:
        """The ``[[issuers]]`` entry trusting it."""
        return self.issuer.issuer_settings("env0", name="dev-env0").model_dump(
            mode="json", exclude_defaults=True
        )


@contextmanager
def serving_issuer(directory: Path) -> Iterator[IssuerProcess]:
    """The dev env0 issuer, its keys and log in ``directory``, served until the block ends."""
    port = free_port()
    keys_dir = directory / "issuer-keys"
    issuer = DevPlatformIssuer(keys_dir, f"http://127.0.0.1:{port}")
    issuer.signing_key("env0")  # the key file, before the issuer process reads it
    argv = ["bench.servers", "issuer", "--port", str(port), "--keys-dir", str(keys_dir)]
    server = ServerProcess.python(
        "issuer", argv, f"http://127.0.0.1:{port}/", directory / "issuer.log"
    )
    with server:
        yield IssuerProcess(issuer, server)


@pytest.fixture
def issuer_process(tmp_path: Path) -> Iterator[IssuerProcess]:
    """The dev env0 issuer, started for the test and stopped after it."""
    with serving_issuer(tmp_path) as issuer:
        yield issuer


def policy(issuer: IssuerProcess, credentials: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """Issuer, organization, ``credentials`` and one assignment of them all, as config sections."""
    return {
        # The issuer and the backends of these tests listen on loopback.
        "security": {"allow_private_backends": True},
        "issuers": [issuer.issuer_entry()],
        "organizations": [{"name": ORGANIZATION, "issuer": "dev-env0", "platform_org_id": ORG}],
        "credentials": [{"organization": ORGANIZATION, **c} for c in credentials],
        "assignments": [
            {
                "organization": ORGANIZATION,
                "project": PROJECT,
                "credentials": [str(c["name"]) for c in credentials],
            }
        ],
    }


@dataclass
class BrokerProcess:
    """A running ``tokenbroker serve``."""

    server: ServerProcess
    port: int
    config_path: Path

    @property
    def url(self) -> str:
        """Its base URL on loopback."""
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything it logged so far."""
        return self.server.log_path.read_text(errors="replace")


def start_broker(
    tmp_path: Path,
    stack: ExitStack,
    sections: Mapping[str, object],
    *,
    server: Mapping[str, object] | None = None,
    name: str = "broker",
    argv: Sequence[str] = (),
) -> BrokerProcess:
    """Write a config of ``sections`` (plus ``[server]`` on a free port), serve it until ready."""
    port = free_port()
    config = {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "data_dir": str(tmp_path / f"{name}-data"),
            **(server or {}),
        },
        **sections,
    }
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_toml(config))
    process = ServerProcess.python(
        name,
        ["tokenbroker", "serve", "--config", str(path), *argv],
        f"http://127.0.0.1:{port}/readyz",
        tmp_path / f"{name}.log",
    )
    process.start()
    stack.callback(process.stop)
    return BrokerProcess(process, port, path)


@dataclass(frozen=True)
class ExchangeAnswer:
    """What ``POST /v1/exchange`` answered."""

    status: int
    body: dict[str, Any]
    request_id: str


def exchange(url: str, token: str, credential: str, *, timeout: float = 30) -> ExchangeAnswer:
    """``POST /v1/exchange`` on a connection of its own."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(
            "POST",
            "/v1/exchange",
            body=json.dumps({"credential": credential}),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = json.loads(response.read())
        return ExchangeAnswer(response.status, body, response.getheader(REQUEST_ID_HEADER, ""))
    finally:
        connection.close()


def eventually(check: Callable[[], _T | None], timeout: float, what: str) -> _T:
    """Poll ``check`` until it returns something other than None; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)  # polling an observable condition, not standing in for one


# Generous: a starting broker answers within a few seconds; this only bounds a hang.
START_TIMEOUT_SECONDS = 60


def write_config(path: Path, config: Mapping[str, object]) -> Path:
    """Write settings as TOML, the way operators write them."""
    path.write_text(dump_toml(config), encoding="utf-8")
    return path


def start_serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``tokenbroker serve --config config`` with stdout and stderr going to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tokenbroker", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Return once ``/readyz`` answers 200; fail with the log's tail if it never does."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)  # polling a starting process, not papering over a race
    raise AssertionError(f"the broker did not become ready:\n{log_tail(log, 4000)}")
