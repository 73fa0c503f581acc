"""The whole local stack of ``tokenbroker dev``, real parts on loopback, on one event loop.

OpenBao dev (a child process), moto (a thread), the dev platform issuer, the GCP STS and Entra
ID stand-ins (Entra's over https, with a CA made at start) and the broker on SQLite (aiohttp
apps on the caller's loop). ``dev_stack(...)`` starts them in order, configures OpenBao and
moto, seeds the broker with an organization, a project and credentials for every dev platform
profile (``SEEDS``), writes a state file holding them and a fresh admin token, and stops
everything (child process waited for) when the block is left.

The ids, names and settings are plain data built by pure functions, so tests and the demo can
read what the stack serves without starting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shlex
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from aiohttp import web

from tokenbroker.config import Settings, parse_settings
from tokenbroker.devstack.entra import (
    DevCertificateAuthority,
    EntraApplication,
    EntraConfig,
    EntraServer,
    EntraTenant,
    FederatedIdentityCredential,
)
from tokenbroker.devstack.gcp_sts import GcpStsConfig, GcpStsServer, parse_gcp_sts_config
from tokenbroker.devstack.openbao import OpenBaoDevServer, configure_jwt_auth
from tokenbroker.devstack.platform_issuer import (
    DEV_PROFILES,
    DEV_SHAPES,
    DevPlatformIssuer,
    create_issuer_app,
)
from tokenbroker.devstack.seeds import (
    AWS_AUDIENCE,
    AWS_DURATION_SECONDS,
    AWS_REGION,
    AWS_ROLE_NAME,
    AZURE_CLIENT_ID,
    AZURE_FEDERATED_SUBJECT,
    AZURE_SUBSCRIPTION_ID,
    AZURE_TENANT_ID,
    CREDENTIALS,
    DEMO_ORG_ID,
    DEMO_SEED,
    DENIED_CREDENTIAL,
    ENTRA_CA_FILE,
    GCP_ATTRIBUTE_CLAIMS,
    GCP_POOL,
    GCP_PROVIDER,
    GCP_SERVICE_ACCOUNT,
    KV_MOUNT,
    MINT_AUTH_PATH,
    PROD_ENVIRONMENT_ID,
    PROJECT_ID,
    SEEDS,
    VAULT_MINT_AUDIENCE,
    VAULT_POLICY,
    VAULT_ROLE,
    VAULT_TOKEN_TTL,
    DevSeed,
    oidc_audience,
)
from tokenbroker.identity.profiles import PROFILES
from tokenbroker.web.admin.auth import admin_token_digest
from tokenbroker.web.server import BrokerAppRunner


def seeded_organizations() -> list[dict[str, object]]:
    """What the state file and ``tokenbroker dev`` tell about each seeded organization."""
    return [
        {
            "profile": seed.profile,
            "organization": seed.organization,
            "org_id": seed.platform_org_id,
            "project": seed.project,
            "credentials": list(seed.credentials),
        }
        for seed in SEEDS
    ]


STATE_FILE: Final = "dev-stack.json"
DEFAULT_PORT: Final = 8400
# moto's default account: every role it creates lives there.
_MOTO_ACCOUNT: Final = "123456789012"
# moto accepts any key pair; these are placeholders, not credentials.
_MOTO_PLACEHOLDER_KEY: Final = "testing"
_SHUTDOWN_TIMEOUT_SECONDS: Final = 5.0

Progress = Callable[[str], None]


class DevStackError(RuntimeError):
    """A part of the stack could not start; the message says which and why."""


@dataclass(frozen=True)
class DevStackPorts:
    """Ports of each part; 0 means a free one (OpenBao: ``None``, a free pair)."""

    broker: int
    issuer: int
    gcp_sts: int
    moto: int
    openbao: int | None
    entra: int = 0

    @classmethod
    def from_base(cls, base: int) -> DevStackPorts:
        """``base`` for the broker and the next ones for the rest; 0 picks free ports for all."""
        if base == 0:
            return cls(broker=0, issuer=0, gcp_sts=0, moto=0, openbao=None)
        # OpenBao also binds base + 5 (its cluster port), so Entra comes after that.
        if not 1 <= base <= 65535 - 6:
            raise ValueError(f"port {base} leaves no room for the six ports after it")
        return cls(base, base + 1, base + 2, base + 3, base + 4, base + 6)


@dataclass(frozen=True)
class DevStackState:
    """Where each part of a running stack listens and what it holds (the state file)."""

    pid: int
    data_dir: str
    keys_dir: str
    broker_url: str
    issuer_base_url: str
    gcp_sts_url: str
    moto_url: str
    openbao_address: str
    # The dev server's root token, for poking at OpenBao by hand; the file is 0600.
    openbao_root_token: str
    openbao_pid: int
    # A global admin token of this run's broker (its sha256 is in [admin] tokens).
    admin_token: str
    entra_url: str = ""
    # The CA the Entra stand-in's certificate chains to (REQUESTS_CA_BUNDLE for azure-identity).
    entra_ca_file: str = ""
    org_id: str = DEMO_ORG_ID
    project_id: str = PROJECT_ID
    prod_environment_id: str = PROD_ENVIRONMENT_ID
    kv_mount: str = KV_MOUNT
    aws_region: str = AWS_REGION
    credentials: dict[str, str] = field(default_factory=lambda: dict(CREDENTIALS))
    organizations: list[dict[str, object]] = field(default_factory=seeded_organizations)

    def as_json(self) -> str:
        """The state file's text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DevStackState:
        """Read a state file's text; ValueError when it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the dev stack state is not a JSON object")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"not a dev stack state: {exc}") from None

    def __repr__(self) -> str:
        # Never show the root or admin token, wherever the state ends up printed.
        return f"DevStackState(pid={self.pid}, broker_url={self.broker_url!r})"


def state_path(data_dir: Path) -> Path:
    """Where ``tokenbroker dev`` writes its state in a data directory."""
    return data_dir / STATE_FILE


def read_state(data_dir: Path) -> DevStackState | None:
    """The state of the stack serving ``data_dir``, or None when none is (fully) up."""
    try:
        return DevStackState.from_json(state_path(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_state(data_dir: Path, state: DevStackState) -> Path:
    """Write the state file atomically, readable by its owner only."""
    path = state_path(data_dir)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(state.as_json())
    os.replace(temporary, path)
    return path


# --- what the stack serves (pure) -------------------------------------------------------------


def aws_role_arn(name: str = AWS_ROLE_NAME) -> str:
    """The ARN moto gives a role of this name."""
    return f"arn:aws:iam::{_MOTO_ACCOUNT}:role/{name}"


def build_settings(
    *,
    data_dir: Path,
    broker_port: int,
    issuer: DevPlatformIssuer,
    openbao_address: str,
    moto_url: str,
    gcp_sts_url: str,
    entra_url: str,
    entra_ca_pem: str,
    admin_token_digests: list[str] | None = None,
) -> Settings:
    """The broker's settings: a dev issuer, an organization and its credentials per ``SEEDS``."""
    issuers = {
        seed.organization: issuer.issuer_settings(seed.profile, org=seed.platform_org_id)
        for seed in SEEDS
    }

    def vault(path: str) -> dict[str, object]:
        return {"address": openbao_address, "role": VAULT_ROLE, "auth_path": path}

    def credentials(seed: DevSeed) -> list[dict[str, object]]:
        # Each credential's type is its seed's (seeds.CREDENTIALS).
        every: dict[str, dict[str, object]] = {
            "dev-vault": {"settings": vault(seed.vault_auth_path)},
            "dev-vault-mint": {
                "token": "mint",
                "audience": VAULT_MINT_AUDIENCE,
                "settings": vault(MINT_AUTH_PATH),
            },
            "dev-aws": {
                # Minted, so the token carries the identity as AWS session tags.
                "token": "mint",
                "audience": AWS_AUDIENCE,
                "settings": {
                    "role_arn": aws_role_arn(),
                    "region": AWS_REGION,
                    "sts_endpoint": moto_url,
                    "duration_seconds": AWS_DURATION_SECONDS,
                },
            },
            "dev-gcp": {
                "settings": {
                    "audience": GCP_PROVIDER,
                    "service_account": GCP_SERVICE_ACCOUNT,
                    "token_url": f"{gcp_sts_url}/v1/token",
                    "iam_endpoint": gcp_sts_url,
                },
            },
            "dev-azure": {
                # Minted for Entra's default audience; the app trusts the broker as issuer.
                "token": "mint",
                "settings": {
                    "tenant_id": AZURE_TENANT_ID,
                    "client_id": AZURE_CLIENT_ID,
                    "subscription_id": AZURE_SUBSCRIPTION_ID,
                    "authority_host": entra_url,
                    "ca_cert": entra_ca_pem,
                },
            },
            "dev-oidc": {"token": "mint", "audience": oidc_audience(seed)},
            DENIED_CREDENTIAL: {
                "settings": vault(seed.vault_auth_path),
                "bound_claims": {"environmentId": PROD_ENVIRONMENT_ID},
            },
        }
        return [
            {
                "organization": seed.organization,
                "name": name,
                "type": CREDENTIALS[name],
                **every[name],
            }
            for name in seed.credentials
        ]

    return parse_settings(
        {
            "server": {
                "host": "127.0.0.1",
                "port": broker_port,
                "public_url": f"http://127.0.0.1:{broker_port}",
                "data_dir": str(data_dir),
            },
            "admin": {"tokens": list(admin_token_digests or [])},
            # Every part of the local stack listens on loopback.
            "security": {"allow_private_backends": True},
            "issuers": [entry.model_dump(mode="json") for entry in issuers.values()],
            "organizations": [
                {
                    "name": seed.organization,
                    "issuer": issuers[seed.organization].name,
                    "platform_org_id": seed.platform_org_id,
                }
                for seed in SEEDS
            ],
            "credentials": [entry for seed in SEEDS for entry in credentials(seed)],
            "assignments": [
                {
                    "organization": seed.organization,
                    "project": seed.project,
                    "credentials": list(seed.credentials),
                }
                for seed in SEEDS
            ],
        },
        # Built in code: TOKENBROKER_* variables of the developer's shell do not apply.
        {},
    )


def gcp_sts_config(issuer: DevPlatformIssuer) -> GcpStsConfig:
    """One pool provider trusting the demo platform's issuer, and a service account for its
    project."""
    profile, org_claim = DEMO_SEED.profile, GCP_ATTRIBUTE_CLAIMS["org"]
    return parse_gcp_sts_config(
        {
            "providers": [
                {
                    "audience": GCP_PROVIDER,
                    "issuer": issuer.issuer_url(profile, org=DEMO_ORG_ID),
                    "jwks_uri": issuer.jwks_url(profile, org=DEMO_ORG_ID),
                    "allowed_audiences": [issuer.default_audience(profile, org=DEMO_ORG_ID)],
                    "attribute_mapping": {
                        "google.subject": "assertion.sub",
                        **{
                            f"attribute.{name}": f"assertion.{claim}"
                            for name, claim in GCP_ATTRIBUTE_CLAIMS.items()
                        },
                    },
                    "attribute_condition": {org_claim: DEMO_ORG_ID},
                }
            ],
            "service_accounts": [
                {
                    "email": GCP_SERVICE_ACCOUNT,
                    "members": [
                        f"principalSet://iam.googleapis.com/{GCP_POOL}/attribute.project/"
                        f"{PROJECT_ID}"
                    ],
                }
            ],
        }
    )


def entra_config(broker_url: str) -> EntraConfig:
    """One tenant whose application trusts the broker's minted tokens of the demo subject."""
    federated = FederatedIdentityCredential(
        name="tokenbroker-dev", issuer=broker_url, subject=AZURE_FEDERATED_SUBJECT
    )
    application = EntraApplication(AZURE_CLIENT_ID, (federated,))
    return EntraConfig([EntraTenant(AZURE_TENANT_ID, (application,))])


def runner_commands(state: DevStackState) -> list[str]:
    """The shell lines a runner would run against this stack, comments included."""
    broker = state.broker_url
    platform = PROFILES[DEMO_SEED.profile]
    variable = platform.runner.variables[0]
    mint = shlex.join(
        [
            "tokenbroker",
            "token",
            "mint",
            "--profile",
            platform.name,
            "--org",
            state.org_id,
            "--project",
            state.project_id,
            "--keys-dir",
            state.keys_dir,
            "--issuer-base",
            state.issuer_base_url,
        ]
    )
    exchange = f"tokenbroker exchange --broker {shlex.quote(broker)} --credential"
    body = json.dumps({"credential": "dev-vault"})
    denied = json.dumps({"credential": DENIED_CREDENTIAL})
    return [
        f"# the runner's platform token ({platform.title}-shaped, signed by the dev issuer):",
        f'export {variable}="$({mint})"',
        f"# Vault: OpenBao checks the {platform.title} token itself (passthrough), "
        "or the broker's (mint):",
        f'eval "$({exchange} dev-vault --format shell)"',
        f'eval "$({exchange} dev-vault-mint --format shell)"',
        "# AWS STS credentials (moto), and a GCP access token (the STS stand-in):",
        f'eval "$({exchange} dev-aws --format shell)"',
        f'eval "$({exchange} dev-gcp --format shell)"',
        "# a broker-signed OIDC token for any audience:",
        f"{exchange} dev-oidc --format json",
        "# the same exchange without the client:",
        f'curl -s -X POST "{broker}/v1/exchange?format=env" '
        f'-H "Authorization: Bearer ${variable}" -d {shlex.quote(body)}',
        f"# why {DENIED_CREDENTIAL} is refused (it is bound to one environment):",
        f'curl -s -X POST "{broker}/v1/exchange?dry_run=true" '
        f'-H "Authorization: Bearer ${variable}" -d {shlex.quote(denied)}',
    ]


def _listed(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def organization_lines(state: DevStackState) -> list[str]:
    """One line per seeded organization: platform, name, org id, project, credentials."""
    return [
        f"{entry['profile']:<9} organization {entry['organization']:<13} "
        f"org id {entry['org_id']}  project {entry['project']}  "
        f"credentials {', '.join(map(str, _listed(entry.get('credentials'))))}"
        for entry in state.organizations
    ]


def platform_token_commands(state: DevStackState) -> list[str]:
    """A ``tokenbroker token mint`` line per seeded platform, as a runner of it would hold."""
    return [
        shlex.join(
            [
                "tokenbroker",
                "token",
                "mint",
                "--profile",
                str(entry["profile"]),
                "--org",
                str(entry["org_id"]),
                "--project",
                str(entry["project"]),
                "--keys-dir",
                state.keys_dir,
                "--issuer-base",
                state.issuer_base_url,
            ]
        )
        for entry in state.organizations
    ]


def admin_commands(state: DevStackState) -> list[str]:
    """How to reach this stack's admin API; the lines hold the admin token."""
    return [
        "# the admin CLI against this stack (or: tokenbroker admin --dev-stack DATA_DIR ...):",
        f"export TOKENBROKER_URL={shlex.quote(state.broker_url)}",
        f"export TOKENBROKER_ADMIN_TOKEN={shlex.quote(state.admin_token)}",
        "tokenbroker admin orgs list",
    ]


# --- running it -------------------------------------------------------------------------------


def _listening_socket(port: int) -> socket.socket:
    """A bound loopback socket, so a port is known (and a taken one reported) before serving."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise DevStackError(f"port {port} on 127.0.0.1 is taken ({exc.strerror})") from None
    return sock


def _port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


async def _serve(
    exits: contextlib.AsyncExitStack,
    app: web.Application,
    sock: socket.socket,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    runner = BrokerAppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_SECONDS)
    await runner.setup()
    exits.push_async_callback(runner.cleanup)
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()


def _create_aws_role(moto_url: str) -> str:
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=moto_url,
        region_name=AWS_REGION,
        aws_access_key_id=_MOTO_PLACEHOLDER_KEY,
        aws_secret_access_key=_MOTO_PLACEHOLDER_KEY,
    )
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {
                    "Federated": f"arn:aws:iam::{_MOTO_ACCOUNT}:oidc-provider/tokenbroker-dev"
                },
                "Action": ["sts:AssumeRoleWithWebIdentity", "sts:TagSession"],
            }
        ],
    }
    try:
        role = iam.create_role(RoleName=AWS_ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
    except iam.exceptions.EntityAlreadyExistsException:
        # moto's state is per process: a second stack in the same process finds the role.
        role = iam.get_role(RoleName=AWS_ROLE_NAME)
    arn: str = role["Role"]["Arn"]
    return arn


@contextlib.contextmanager
def _reported_as(part: str) -> Iterator[None]:
    """Turn a part's failure into one DevStackError line naming the part."""
    try:
        yield
    except DevStackError:
        raise
    except Exception as exc:  # the part's own message: about ports, files, OpenBao, no secret
        raise DevStackError(f"{part} failed: {type(exc).__name__}: {exc}") from None


@contextlib.contextmanager
def _moto_server(port: int) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    if port:
        # ThreadedMotoServer.start() waits forever when its thread cannot bind: check first.
        _listening_socket(port).close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        host, bound = server.get_host_and_port()
        yield f"http://{host}:{bound}"
    finally:
        server.stop()


class _Steps:
    """Numbered progress lines, each with the time its step took."""

    def __init__(self, progress: Progress, total: int) -> None:
        self._progress = progress
        self._total = total
        self._done = 0
        self._started = time.monotonic()

    def done(self, what: str, where: str) -> None:
        self._done += 1
        took = time.monotonic() - self._started
        self._progress(f"[{self._done}/{self._total}] {what:<28} {where}  ({took:.1f}s)")
        self._started = time.monotonic()


def _prepare_data_dir(data_dir: Path) -> Path:
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # A state file left by a killed stack must not pass for this one.
    state_path(data_dir).unlink(missing_ok=True)
    return data_dir


@contextlib.asynccontextmanager
async def dev_stack(
    data_dir: Path, *, port: int = DEFAULT_PORT, progress: Progress = print
) -> AsyncIterator[DevStackState]:
    """Start the whole stack, yield its state once everything is configured, stop it all.

    OpenBao is started from the calling thread (it runs the event loop: the main thread under
    ``tokenbroker dev``), so that on Linux it is also stopped if this process is killed.
    """
    with _reported_as("preparing the data directory"):
        data_dir = _prepare_data_dir(data_dir)
    ports = DevStackPorts.from_base(port)
    steps = _Steps(progress, total=8)
    async with contextlib.AsyncExitStack() as exits:
        sockets: dict[str, socket.socket] = {}
        for name, number in (
            ("broker", ports.broker),
            ("issuer", ports.issuer),
            ("gcp_sts", ports.gcp_sts),
            ("entra", ports.entra),
        ):
            sockets[name] = _listening_socket(number)
            exits.callback(sockets[name].close)
        broker_url = f"http://127.0.0.1:{_port_of(sockets['broker'])}"
        issuer_base = f"http://127.0.0.1:{_port_of(sockets['issuer'])}"
        gcp_sts_url = f"http://127.0.0.1:{_port_of(sockets['gcp_sts'])}"
        entra_url = f"https://127.0.0.1:{_port_of(sockets['entra'])}"

        openbao = OpenBaoDevServer(port=ports.openbao, die_with_parent=True, home_parent=data_dir)
        with _reported_as("starting OpenBao"):
            openbao.start()
            exits.callback(openbao.stop)
        steps.done("OpenBao dev server", openbao.address)

        with _reported_as("starting moto"):
            moto_url = exits.enter_context(_moto_server(ports.moto))
            role_arn = await asyncio.to_thread(_create_aws_role, moto_url)
        steps.done("moto (AWS STS, IAM)", f"{moto_url}  role {role_arn}")

        keys_dir = data_dir / "dev-issuer"
        issuer = DevPlatformIssuer(keys_dir, issuer_base)
        with _reported_as("starting the dev platform issuer"):
            for profile in DEV_PROFILES:
                issuer.signing_key(profile)  # create the keys now, not during the first request
            await _serve(exits, create_issuer_app(issuer), sockets["issuer"])
        paths = ",".join(shape.path.replace("{org}", "..") for shape in DEV_SHAPES.values())
        steps.done("dev platform issuer", f"{issuer_base}/{{{paths}}}")

        with _reported_as("starting the GCP STS stand-in"):
            await _serve(exits, GcpStsServer(gcp_sts_config(issuer)).app(), sockets["gcp_sts"])
        steps.done("GCP STS stand-in", gcp_sts_url)

        with _reported_as("starting the Entra ID stand-in"):
            authority = DevCertificateAuthority()
            entra_ca_file = data_dir / ENTRA_CA_FILE
            entra_ca_file.write_text(authority.ca_pem, encoding="utf-8")
            await _serve(
                exits,
                EntraServer(entra_config(broker_url)).app(),
                sockets["entra"],
                authority.server_context(),
            )
        steps.done("Entra ID stand-in (https)", f"{entra_url}  CA {entra_ca_file}")

        with _reported_as("starting the broker"):
            # Imported here: the broker's app pulls in the store and every backend.
            from tokenbroker.web.app import create_app

            admin_token = secrets.token_urlsafe(32)
            settings = build_settings(
                data_dir=data_dir,
                broker_port=_port_of(sockets["broker"]),
                issuer=issuer,
                openbao_address=openbao.address,
                moto_url=moto_url,
                gcp_sts_url=gcp_sts_url,
                entra_url=entra_url,
                entra_ca_pem=authority.ca_pem,
                admin_token_digests=[admin_token_digest(admin_token)],
            )
            await _serve(exits, create_app(settings), sockets["broker"])
        steps.done("broker (SQLite)", f"{broker_url}  data {data_dir}")

        with _reported_as("configuring OpenBao"):
            await _configure_openbao(openbao, issuer, broker_url)
        steps.done(
            "OpenBao JWT auth, KV, policy",
            ", ".join(f"auth/{seed.vault_auth_path} ({seed.profile})" for seed in SEEDS)
            + f", auth/{MINT_AUTH_PATH} (broker)",
        )

        state = DevStackState(
            pid=os.getpid(),
            data_dir=str(data_dir),
            keys_dir=str(keys_dir),
            broker_url=broker_url,
            issuer_base_url=issuer_base,
            gcp_sts_url=gcp_sts_url,
            moto_url=moto_url,
            openbao_address=openbao.address,
            openbao_root_token=openbao.root_token,
            openbao_pid=openbao.pid or 0,
            admin_token=admin_token,
            entra_url=entra_url,
            entra_ca_file=str(entra_ca_file),
        )
        path = write_state(data_dir, state)
        exits.callback(path.unlink, missing_ok=True)
        steps.done("state file", str(path))
        yield state


async def _configure_openbao(
    openbao: OpenBaoDevServer, issuer: DevPlatformIssuer, broker_url: str
) -> None:
    """JWT auth trusting each dev platform issuer (passthrough) and the broker itself (mint)."""
    admin = openbao.client()
    # In threads: OpenBao fetches each JWKS from a server on this very loop while it answers.
    for seed in SEEDS:
        await asyncio.to_thread(
            configure_jwt_auth,
            admin,
            path=seed.vault_auth_path,
            jwks_url=issuer.jwks_url(seed.profile, org=seed.platform_org_id),
            bound_issuer=issuer.issuer_url(seed.profile, org=seed.platform_org_id),
            role=VAULT_ROLE,
            bound_audiences=[issuer.default_audience(seed.profile, org=seed.platform_org_id)],
            bound_claims=seed.vault_bound_claims,
            policies=[VAULT_POLICY],
            kv_mount=KV_MOUNT,
            token_ttl=VAULT_TOKEN_TTL,
        )
    # The broker's minted tokens say who they are for in the same place for every platform.
    await asyncio.to_thread(
        configure_jwt_auth,
        admin,
        path=MINT_AUTH_PATH,
        jwks_url=f"{broker_url}/.well-known/jwks.json",
        bound_issuer=broker_url,
        role=VAULT_ROLE,
        bound_audiences=[VAULT_MINT_AUDIENCE],
        bound_claims={"/tokenbroker/org": [seed.platform_org_id for seed in SEEDS]},
        policies=[VAULT_POLICY],
        kv_mount=KV_MOUNT,
        token_ttl=VAULT_TOKEN_TTL,
    )
