"""The local stack the benchmark measures against, every server in its own process.

A dev platform issuer (its JWKS, for OpenBao and the broker), a real OpenBao dev server, moto's
STS, brokers run as ``python -m tokenbroker serve --config <generated toml>``, and an aiohttp
hello-world. Tokens are env0-shaped and really signed; they are minted before any timing.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import boto3

from bench.postgres import schema_of_its_own
from bench.procs import ServerProcess, free_port
from bench.tomlconfig import dump_toml
from tokenbroker.devstack.openbao import OpenBaoDevServer, configure_jwt_auth
from tokenbroker.devstack.platform_issuer import DevPlatformIssuer
from tokenbroker.identity.profiles.env0 import AUDIENCE as ENV0_AUDIENCE

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
ROLE = "bench-deployer"
POLICY = "bench-access"
KV_MOUNT = "bench-kv"
PASSTHROUGH_PATH = "env0-bench"
MINT_PATH = "broker-bench"
MINT_AUDIENCE = "vault-via-broker"
ROLE_ARN = f"arn:aws:iam::123456789012:role/{ROLE}"
VAULT_PASSTHROUGH = "vault-passthrough"
VAULT_MINT = "vault-mint"
AWS = "aws"
# This machine's PostgreSQL (trust auth on loopback); --postgres-url names another.
DEFAULT_POSTGRES_URL = "postgresql://127.0.0.1:5432/test"
# This machine's Redis, a database number of the bench's own; --redis-url names another.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
REPO = Path(__file__).resolve().parent.parent
# Run in a revision's tree: every config table and key that revision's Settings knows.
_KNOWN_KEYS = """
import json, typing
from pydantic import BaseModel
from tokenbroker.config.models import Settings

def fields(model):
    known = {}
    for name, info in model.model_fields.items():
        types = typing.get_args(info.annotation) or (info.annotation,)
        inner = [t for t in types if isinstance(t, type) and issubclass(t, BaseModel)]
        known[name] = fields(inner[0]) if inner else None
    return known

print(json.dumps(fields(Settings)))
"""
# moto accepts any key pair; placeholders, not credentials.
_MOTO_KEY = "testing"


def _store_section(url: str | None, encryption_key: str) -> dict[str, object]:
    if not url:
        return {}
    if url.startswith("postgresql"):
        # Required on a shared store, and the same for every broker sharing it (they unseal
        # each other's keys and leases); a throwaway key, the bench's keys live for one run.
        return {"url": url, "encryption_key": encryption_key}
    return {"url": url}


def _known_only(value: object, known: object) -> object:
    """``value`` without the tables and keys a revision's Settings does not know."""
    if not isinstance(known, dict):
        return value
    if isinstance(value, list):
        return [_known_only(item, known) for item in value]
    if isinstance(value, Mapping):
        return {k: _known_only(v, known[k]) for k, v in value.items() if k in known}
    return value


def _mint_batch(keys_dir: str, base_url: str, count: int) -> list[str]:
    issuer = DevPlatformIssuer(Path(keys_dir), base_url)
    return [issuer.mint("env0", org=ORG, project=PROJECT) for _ in range(count)]


class Stack:
    """Every server of the benchmark, started on ``__enter__`` and stopped on ``__exit__``."""

    def __init__(
        self,
        log_dir: Path | None = None,
        store_url: str | None = None,
        event_loop: str = "auto",
        postgres_url: str = DEFAULT_POSTGRES_URL,
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="tb-bench-"))
        self.log_dir = log_dir or self.workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._stack = contextlib.ExitStack()
        issuer_port = free_port()
        self.issuer = DevPlatformIssuer(
            self.workdir / "issuer-keys", f"http://127.0.0.1:{issuer_port}"
        )
        self._issuer_port = issuer_port
        self.openbao = OpenBaoDevServer(die_with_parent=True)
        self.moto_url = ""
        self.moto: ServerProcess | None = None
        self.hello_url = ""
        self.hello: ServerProcess | None = None
        self.brokers: dict[str, Broker] = {}
        # The main broker's store; None: SQLite in its data directory (the default config).
        self.store_url = store_url
        # server.event_loop of every broker, and the hello-world's loop: the same on both sides.
        self.event_loop = event_loop
        # Where brokers of several workers keep their store: a schema of this run's own.
        self.postgres_url = postgres_url
        self._postgres_store_url: str | None = None
        self._encryption_key = secrets.token_urlsafe(32)

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every server and remove the working directory."""
        self._stack.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _start(self) -> None:
        self.issuer.signing_key("env0")  # the key file, before the issuer process reads it
        self.serve(
            "issuer",
            [
                "bench.servers",
                "issuer",
                "--port",
                str(self._issuer_port),
                "--keys-dir",
                str(self.issuer.keys_dir),
            ],
            f"{self.issuer.base_url}/",
        )
        self.openbao.start()
        self._stack.callback(self.openbao.stop)
        moto_port = free_port()
        self.moto_url = f"http://127.0.0.1:{moto_port}"
        self.moto = self.serve(
            "moto",
            ["bench.servers", "moto", "--port", str(moto_port)],
            f"{self.moto_url}/moto-api/",
        )
        boto3.client(
            "iam",
            endpoint_url=self.moto_url,
            region_name="us-east-1",
            aws_access_key_id=_MOTO_KEY,
            aws_secret_access_key=_MOTO_KEY,
        ).create_role(
            RoleName=ROLE,
            AssumeRolePolicyDocument=(
                '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
                '"Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/bench"}, '
                '"Action": "sts:AssumeRoleWithWebIdentity"}]}'
            ),
        )
        hello_port = free_port()
        self.hello_url = f"http://127.0.0.1:{hello_port}/"
        self.hello = self.serve(
            "hello",
            ["bench.servers", "hello", "--port", str(hello_port), "--event-loop", self.event_loop],
            self.hello_url,
        )
        policy = self.main_policy()
        main = self.start_broker(
            "main",
            [self.env0_issuer()],
            store_url=self.store_url,
            organizations=policy["organizations"],
            credentials=policy["credentials"],
            assignments=policy["assignments"],
        )
        admin = self.openbao.client()
        configure_jwt_auth(
            admin,
            path=PASSTHROUGH_PATH,
            jwks_url=self.issuer.jwks_url("env0"),
            bound_issuer=self.issuer.issuer_url("env0"),
            role=ROLE,
            bound_audiences=[ENV0_AUDIENCE],
            bound_claims={"organizationId": ORG, "apiKeyType": "oidc"},
            policies=[POLICY],
            kv_mount=KV_MOUNT,
        )
        configure_jwt_auth(
            admin,
            path=MINT_PATH,
            jwks_url=f"{main.url}/.well-known/jwks.json",
            bound_issuer=main.url,
            role=ROLE,
            bound_audiences=[MINT_AUDIENCE],
            bound_claims={"organizationId": ORG},
            policies=[POLICY],
            kv_mount=KV_MOUNT,
        )

    def postgres_store_url(self) -> str:
        """The store URL of a schema of this run's own in ``postgres_url`` (made on first use,
        dropped with the stack): workers share a PostgreSQL store, SQLite serves one worker."""
        if self._postgres_store_url is None:
            self._postgres_store_url = self._stack.enter_context(
                schema_of_its_own(self.postgres_url)
            )
        return self._postgres_store_url

    def new_postgres_schema(self) -> str:
        """The store URL of one more schema of this run's own (dropped with the stack)."""
        return self._stack.enter_context(schema_of_its_own(self.postgres_url))

    def serve(
        self,
        name: str,
        module_args: Sequence[str],
        ready_url: str,
        env: Mapping[str, str] | None = None,
    ) -> ServerProcess:
        """Start ``python -m <module_args>`` as a server of the stack, stopped with it."""
        server = ServerProcess.python(
            name, module_args, ready_url, self.log_dir / f"{name}.log", env
        )
        server.start()
        self._stack.callback(server.stop)
        return server

    # -- brokers ---------------------------------------------------------------------------

    def env0_issuer(self, name: str = "dev-env0") -> dict[str, object]:
        """The ``[[issuers]]`` entry trusting the dev env0 issuer."""
        return self.issuer.issuer_settings("env0", name=name).model_dump(
            mode="json", exclude_defaults=True
        )

    def main_policy(self) -> dict[str, list[dict[str, object]]]:
        """Organization, credentials and assignment of the main broker."""
        vault = {"address": self.openbao.address, "role": ROLE}
        return {
            "organizations": [{"name": "acme", "issuer": "dev-env0", "platform_org_id": ORG}],
            "credentials": [
                {
                    "organization": "acme",
                    "name": VAULT_PASSTHROUGH,
                    "type": "vault_oidc",
                    "settings": {**vault, "auth_path": PASSTHROUGH_PATH},
                },
                {
                    "organization": "acme",
                    "name": VAULT_MINT,
                    "type": "vault_oidc",
                    "token": "mint",
                    "audience": MINT_AUDIENCE,
                    "settings": {**vault, "auth_path": MINT_PATH},
                },
                {
                    "organization": "acme",
                    "name": AWS,
                    "type": "aws_oidc",
                    "settings": {"role_arn": ROLE_ARN, "sts_endpoint": self.moto_url},
                },
            ],
            "assignments": [
                {
                    "organization": "acme",
                    "project": PROJECT,
                    "credentials": [VAULT_PASSTHROUGH, VAULT_MINT, AWS],
                }
            ],
        }

    def start_broker(
        self,
        name: str,
        issuers: Sequence[Mapping[str, object]],
        *,
        store_url: str | None = None,
        organizations: Sequence[Mapping[str, object]] = (),
        credentials: Sequence[Mapping[str, object]] = (),
        assignments: Sequence[Mapping[str, object]] = (),
        workers: int = 1,
        rate_limit: Mapping[str, object] | None = None,
        exchange: Mapping[str, object] | None = None,
        source: Path | None = None,
    ) -> Broker:
        """Run ``tokenbroker serve`` with a generated config in its own process (and ``workers``
        processes under it when more than one).

        ``rate_limit``: the ``[rate_limit]`` table (default: off). ``exchange``: the
        ``[exchange]`` table (default: the broker's defaults). ``source``: a ``src`` tree
        of another revision (``extract_revision``) to run instead of this checkout's, with
        the config cut down to the keys that revision knows.
        """
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        data_dir = self.workdir / f"broker-{name}"
        config: dict[str, object] = {
            "server": {
                "host": "127.0.0.1",
                "port": port,
                "public_url": url,
                "data_dir": str(data_dir),
                "event_loop": self.event_loop,
                "workers": workers,
            },
            "store": _store_section(store_url, self._encryption_key),
            # The bench drives one organization far past any sane per-organization limit.
            "rate_limit": dict(rate_limit) if rate_limit is not None else {"enabled": False},
            "exchange": dict(exchange or {}),
            # The issuer, OpenBao and moto listen on loopback.
            "security": {"allow_private_backends": True},
            "issuers": list(issuers),
            "organizations": list(organizations),
            "credentials": list(credentials),
            "assignments": list(assignments),
        }
        env: dict[str, str] | None = None
        if source is not None:
            env = {**os.environ, "PYTHONPATH": str(source)}
            known = json.loads(
                subprocess.run(
                    [sys.executable, "-c", _KNOWN_KEYS],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            config = {k: _known_only(v, known[k]) for k, v in config.items() if k in known}
        path = self.workdir / f"broker-{name}.toml"
        path.write_text(dump_toml({k: v for k, v in config.items() if v}))
        # Up, not ready: readiness waits for every issuer's keys, and the growth brokers trust
        # issuers that exist only on paper. The app has started once /healthz answers.
        server = self.serve(
            f"broker-{name}",
            ["tokenbroker", "serve", "--config", str(path)],
            f"{url}/healthz",
            env,
        )
        broker = Broker(name, url, server)
        self.brokers[name] = broker
        return broker

    def extract_revision(self, revision: str) -> Path:
        """``src`` of ``revision`` of this repository, extracted into the working directory."""
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", revision, "src"],
            capture_output=True,
            check=True,
        ).stdout
        target = self.workdir / f"revision-{revision}"
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
        return target / "src"

    def start_floor(
        self, name: str, *, verify: bool = True, write: bool = True, plain_sqlite: bool = False
    ) -> tuple[str, ServerProcess]:
        """A floor server (``bench.servers floor``): its URL and process. It always makes the
        outbound login; ``verify``: it checks the token first; ``write``: it writes a row
        (``plain_sqlite``: through sqlite3 rather than the broker's engine)."""
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        args = [
            "bench.servers",
            "floor",
            "--port",
            str(port),
            "--event-loop",
            self.event_loop,
            "--login-url",
            f"{self.openbao.address}/v1/auth/{PASSTHROUGH_PATH}/login",
            "--role",
            ROLE,
        ]
        if verify:
            args += [
                "--jwks-url",
                self.issuer.jwks_url("env0"),
                "--issuer",
                self.issuer.issuer_url("env0"),
                "--audience",
                ENV0_AUDIENCE,
            ]
        if write:
            args += ["--database", str(self.workdir / f"{name}.db")]
        if plain_sqlite:
            args.append("--sqlite3")
        return url, self.serve(name, args, url)

    def start_retry_floor(self, name: str) -> tuple[str, ServerProcess]:
        """The retry path's floor (``bench.servers retry-floor``): its URL and process."""
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        database = str(self.workdir / f"{name}.db")
        args = ["bench.servers", "retry-floor", "--port", str(port), "--database", database]
        return url, self.serve(name, [*args, "--event-loop", self.event_loop], url)

    def start_busy(self, name: str, cpu_ms: float, processes: int) -> tuple[str, ServerProcess]:
        """A server spending ``cpu_ms`` of CPU per request (``bench.servers busy``), served by
        ``processes`` processes on one port: its URL and (parent) process."""
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        args = ["bench.servers", "busy", "--port", str(port), "--cpu-ms", f"{cpu_ms:.4f}"]
        args += ["--processes", str(processes), "--event-loop", self.event_loop]
        return url, self.serve(name, args, url)

    # -- tokens ----------------------------------------------------------------------------

    def mint_tokens(self, count: int, workers: int = 2) -> list[str]:
        """``count`` distinct env0 tokens for the main organization and project, in parallel."""
        batches = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [
                pool.submit(_mint_batch, str(self.issuer.keys_dir), self.issuer.base_url, n)
                for n in batches
                if n
            ]
            return [token for future in futures for token in future.result()]


class Broker:
    """A running broker process."""

    def __init__(self, name: str, url: str, server: ServerProcess) -> None:
        self.name = name
        self.url = url
        self.server = server

    @property
    def exchange_url(self) -> str:
        """``POST /v1/exchange``."""
        return f"{self.url}/v1/exchange"

    @property
    def pid(self) -> int:
        """The broker's process id."""
        return self.server.pid
