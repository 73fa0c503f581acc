"""A fleet on real parts: HAProxy (deploy/haproxy.cfg) in front of two brokers of two workers
each (deploy/k8s/base/tokenbroker.toml), on one PostgreSQL schema and one Redis database, with
OpenBao dev behind them and the dev env0 issuer in its own process.

It keeps the broker's promises across brokers and workers: a retry on the other broker gets
the same credential, a revoked lease is never delivered again by any broker, an
organization's rate limit holds across the fleet within one burst, a replay-once token serves
one request on whichever broker, and an admin change reaches every worker within the policy
cache's staleness bound. A rolling restart under steady load from another process loses no
request.
"""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
from bench.postgres import schema_of_its_own
from bench.procs import free_port

from tests.support.fleet_load import Answer, LoadFigures
from tests.support.haproxy import HAProxy
from tests.support.openbao import OpenBaoDevServer, configure_jwt_auth
from tests.support.serve import (
    BrokerProcess,
    ExchangeAnswer,
    IssuerProcess,
    eventually,
    exchange,
    serving_issuer,
    start_broker,
    write_config,
)
from tests.support.services import postgres_url, redis_url
from tests.support.workers import accepted_connection, workers_of
from tokenbroker.devstack.processes import stop_process
from tokenbroker.identity.profiles.env0 import AUDIENCE as ENV0_AUDIENCE
from tokenbroker.web.admin.auth import admin_token_digest

pytestmark = [pytest.mark.fleet, pytest.mark.postgres, pytest.mark.openbao]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = ROOT / "deploy" / "k8s" / "base" / "tokenbroker.toml"
BROKERS = ("broker-1", "broker-2")
WORKERS = 2
CREDENTIAL = "vault"
ROLE = "fleet-deployer"
# A Redis database of this suite's own on the test server: no other suite's keys beside ours.
REDIS_DB = 11
# Per organization: a burst of 40, refilled at 10 a second. The load of the rolling restart is
# spread over organizations of its own, each well under that (LOAD_PAIRS_PER_SECOND).
BURST = 40
REFILL_PER_SECOND = 10
REDIS_TIMEOUT_MS = 1000
PER_CLIENT_PER_MINUTE = 60_000
LOAD_ORGANIZATIONS = 8
LOAD_PAIRS_PER_SECOND = 20
LOAD_MAX_SECONDS = 90
# The policy cache serves an entry only while the last poll of the revision started at most
# this long ago (store/policy_cache.py): a change is enforced everywhere after it.
STALENESS_BOUND_SECONDS = 1.0
# Generous bounds on things that take a second or two: they only end a hang.
STOP_TIMEOUT_SECONDS = 60
HTTP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Organization:
    """An organization of the fleet's policy: its name and platform org id."""

    name: str
    platform_id: str


ACME = Organization("acme", str(uuid.uuid4()))
LOAD = tuple(Organization(f"load-{n}", str(uuid.uuid4())) for n in range(LOAD_ORGANIZATIONS))
PROJECTS = {test: str(uuid.uuid4()) for test in ("retry", "revoke", "policy", "load", "replay")}
# A second profile of the dev issuer, trusted with replay = "once" (its tokens carry a jti).
REPLAY_PROFILE = "github"
REPLAY_ONCE = Organization("replay-once", str(secrets.randbelow(10**9)))
REPLAY_CREDENTIALS = ("token-a", "token-b")


@dataclass
class Fleet:
    """The running fleet and what a test needs to talk to it."""

    brokers: dict[str, BrokerProcess]
    haproxy: HAProxy
    issuer: IssuerProcess
    openbao: OpenBaoDevServer
    admin_token: str
    directory: Path

    def mint(self, organization: Organization, project: str, profile: str = "env0") -> str:
        """A signed token of ``organization``'s platform org and ``project``."""
        return self.issuer.issuer.mint(profile, org=organization.platform_id, project=project)

    def urls(self) -> list[str]:
        """Each broker directly, then HAProxy."""
        return [*(b.url for b in self.brokers.values()), self.haproxy.url]

    def admin(
        self, url: str, method: str, path: str, body: Mapping[str, object] | None = None
    ) -> tuple[int, Any]:
        """An admin API call on ``url``; (status, parsed body or None)."""
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{url}/v1/admin{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.admin_token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def leases(self, organization: str, project: str) -> list[dict[str, Any]]:
        """Every lease of ``organization``'s ``project``, through the admin API, all pages."""
        found: list[dict[str, Any]] = []
        before: str | None = None
        while True:
            query = {"organization": organization, "project": project, "limit": "500"}
            if before is not None:
                query["before"] = before
            status, page = self.admin(
                self.haproxy.url, "GET", "/leases?" + urllib.parse.urlencode(query)
            )
            assert status == 200, page
            found += page["leases"]
            before = page["next"]
            if before is None:
                return found


def _credential_of(
    organization: Organization, openbao: OpenBaoDevServer, path: str
) -> dict[str, object]:
    return {
        "organization": organization.name,
        "name": CREDENTIAL,
        "type": "vault_oidc",
        "settings": {"address": openbao.address, "role": ROLE, "auth_path": path},
    }


def _policy(issuer: IssuerProcess, openbao: OpenBaoDevServer, path: str) -> dict[str, object]:
    """acme (one project per test) and the load's organizations, each with one passthrough
    Vault credential assigned; and an organization of a replay-once issuer with two minted
    token credentials."""
    organizations = [ACME, *LOAD]
    assignments = [
        {"organization": ACME.name, "project": PROJECTS[test], "credentials": [CREDENTIAL]}
        for test in ("retry", "revoke", "policy")
    ] + [
        {"organization": org.name, "project": PROJECTS["load"], "credentials": [CREDENTIAL]}
        for org in LOAD
    ]
    replay_once = issuer.issuer.issuer_settings(REPLAY_PROFILE, name="dev-replay-once")
    return {
        "issuers": [
            issuer.issuer_entry(),
            {**replay_once.model_dump(mode="json", exclude_defaults=True), "replay": "once"},
        ],
        "organizations": [
            {"name": org.name, "issuer": "dev-env0", "platform_org_id": org.platform_id}
            for org in organizations
        ]
        + [
            {
                "name": REPLAY_ONCE.name,
                "issuer": "dev-replay-once",
                "platform_org_id": REPLAY_ONCE.platform_id,
            }
        ],
        "credentials": [_credential_of(org, openbao, path) for org in organizations]
        + [
            {
                "organization": REPLAY_ONCE.name,
                "name": name,
                "type": "oidc_token",
                "token": "mint",
                "audience": f"fleet-{name}",
            }
            for name in REPLAY_CREDENTIALS
        ],
        "assignments": [
            *assignments,
            {
                "organization": REPLAY_ONCE.name,
                "project": PROJECTS["replay"],
                "credentials": list(REPLAY_CREDENTIALS),
            },
        ],
    }


def _redis_database(url: str, number: int) -> str:
    return urllib.parse.urlsplit(url)._replace(path=f"/{number}").geturl()


@pytest.fixture(scope="module")
def fleet_store_url() -> Iterator[str]:
    """One fresh PostgreSQL schema for the whole fleet, dropped after the module."""
    with schema_of_its_own(postgres_url(), prefix="tb_fleet") as url:
        yield url


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
    fleet_store_url: str,
    openbao: OpenBaoDevServer,
) -> Iterator[Fleet]:
    """Migrate with ``tokenbroker db upgrade`` (the deploy config does not migrate on start),
    then two brokers of deploy's TOML and HAProxy of deploy's config in front of them."""
    directory = tmp_path_factory.mktemp("fleet")
    with ExitStack() as stack:
        issuer = stack.enter_context(serving_issuer(directory))
        # The key file, before anything asks the issuer process for that profile's JWKS.
        issuer.issuer.signing_key(REPLAY_PROFILE)
        auth_path = f"fleet-{secrets.token_hex(4)}"
        configure_jwt_auth(
            openbao.client(),
            path=auth_path,
            jwks_url=issuer.issuer.jwks_url("env0"),
            bound_issuer=issuer.issuer.issuer_url("env0"),
            role=ROLE,
            bound_audiences=[ENV0_AUDIENCE],
            bound_claims={"organizationId": [org.platform_id for org in [ACME, *LOAD]]},
            policies=[auth_path],
            kv_mount=f"{auth_path}-kv",
        )
        deploy = tomllib.loads(DEPLOY_CONFIG.read_text())
        assert deploy["server"]["workers"] == WORKERS
        haproxy_port = free_port()
        admin_token = secrets.token_urlsafe(24)
        sections: dict[str, object] = {
            **{key: value for key, value in deploy.items() if key not in ("server", "issuers")},
            # What deploy/ reads from the environment (secrets, addresses), here in the file.
            "store": {
                **deploy["store"],
                "url": fleet_store_url,
                "encryption_key": secrets.token_urlsafe(32),
            },
            "rate_limit": {
                "redis_url": _redis_database(redis_url(), REDIS_DB),
                "burst": BURST,
                "requests_per_minute": REFILL_PER_SECOND * 60,
                # The default 50 ms is a production Redis next to the broker. Here, with the
                # whole fleet on 2 shared CPUs, a burst delayed Redis's answers past it, and
                # the limiter let exchanges through unlimited (on_redis_error = "allow"): 71
                # of a burst of 40. The test is of the shared bucket, not of that fallback.
                "redis_timeout_ms": REDIS_TIMEOUT_MS,
                # Behind HAProxy every request comes from HAProxy's address: the per-address
                # limit (each worker's own, before validation) counts the whole load as one
                # client, and at its default of 10 a second refused the rolling restart's load.
                "per_client_per_minute": PER_CLIENT_PER_MINUTE,
                "per_client_burst": PER_CLIENT_PER_MINUTE // 60,
            },
            "admin": {"tokens": [admin_token_digest(admin_token)]},
            # OpenBao and the issuer listen on loopback.
            "security": {"allow_private_backends": True},
            **_policy(issuer, openbao, auth_path),
        }
        server = {
            **{k: v for k, v in deploy["server"].items() if k not in ("host", "port", "data_dir")},
            # One issuer for the fleet: the address runners reach it at.
            "public_url": f"http://127.0.0.1:{haproxy_port}",
        }
        upgrade_config = write_config(
            directory / "upgrade.toml",
            {"server": {**server, "data_dir": str(directory / "upgrade-data")}, **sections},
        )
        upgrade = subprocess.run(
            [sys.executable, "-m", "tokenbroker", "db", "upgrade", "--config", str(upgrade_config)],
            capture_output=True,
            text=True,
            timeout=STOP_TIMEOUT_SECONDS,
            check=False,
        )
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        brokers = {
            name: start_broker(directory, stack, sections, server=server, name=name)
            for name in BROKERS
        }
        haproxy = HAProxy(directory, {name: b.port for name, b in brokers.items()}, haproxy_port)
        haproxy.server.start()
        stack.callback(haproxy.server.stop)
        for name in BROKERS:
            haproxy.wait_for(name, "UP")
        yield Fleet(brokers, haproxy, issuer, openbao, admin_token, directory)


def _vault_token(answer: ExchangeAnswer) -> str:
    assert answer.status == 200, answer.body
    token: str = answer.body["values"]["VAULT_TOKEN"]
    return token


def _lease(answer: ExchangeAnswer) -> str:
    assert answer.status == 200, answer.body
    lease: str = answer.body["lease"]["id"]
    return lease


def _exchanges_served_since(haproxy: HAProxy, offset: int) -> list[str]:
    """The brokers HAProxy sent each ``POST /v1/exchange`` logged after ``offset`` to."""
    return [
        line.split(" brokers/")[1].split()[0]
        for line in haproxy.log()[offset:].splitlines()
        if '"POST /v1/exchange ' in line and " brokers/" in line
    ]


def _redispatched_since(haproxy: HAProxy, offset: int) -> int:
    """Exchanges logged after ``offset`` that HAProxy sent to another broker after a failed
    try (``+N`` in the retries field of ``%ac/%fc/%bc/%sc/%rc``)."""
    return sum(
        1
        for line in haproxy.log()[offset:].splitlines()
        if '"POST /v1/exchange ' in line and "/+" in line.split('"')[0]
    )


def test_a_retry_on_the_other_broker_gets_the_same_credential(fleet: Fleet) -> None:
    first_broker, other_broker = fleet.brokers.values()
    token = fleet.mint(ACME, PROJECTS["retry"])
    first = exchange(first_broker.url, token, CREDENTIAL)
    retried = exchange(other_broker.url, token, CREDENTIAL)
    assert _lease(retried) == _lease(first)
    assert _vault_token(retried) == _vault_token(first)
    # The credential is a live Vault token.
    assert fleet.openbao.client(token=_vault_token(first)).auth.token.lookup_self()["data"]

    # Through HAProxy: round robin sends the retries to both brokers in turn.
    through = fleet.mint(ACME, PROJECTS["retry"])
    offset = len(fleet.haproxy.log())
    answers = [exchange(fleet.haproxy.url, through, CREDENTIAL) for _ in range(4)]
    assert len({_lease(a) for a in answers}) == 1
    assert len({_vault_token(a) for a in answers}) == 1
    served = eventually(
        lambda: (
            found if len(found := _exchanges_served_since(fleet.haproxy, offset)) == 4 else None
        ),
        10,
        "HAProxy's log lines of the four exchanges",
    )
    assert len(served) == 4
    assert set(served) == set(BROKERS)

    # One lease for each token: nothing was issued twice.
    leases = fleet.leases(ACME.name, PROJECTS["retry"])
    assert sorted(lease["id"] for lease in leases) == sorted({_lease(first), _lease(answers[0])})


def _revoke_own_lease(url: str, token: str, lease: str) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"{url}/v1/leases/revoke",
        method="POST",
        data=json.dumps({"lease": lease}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310
        body: dict[str, Any] = json.loads(response.read())
        return body


def _retries_everywhere(fleet: Fleet, token: str) -> list[ExchangeAnswer]:
    """The token again, on fresh connections: twice to each broker (most often both of its
    workers), twice through HAProxy."""
    return [exchange(url, token, CREDENTIAL) for url in fleet.urls() for _ in range(2)]


def _revoked_at_vault(openbao: OpenBaoDevServer, vault_token: str) -> bool:
    try:
        openbao.client(token=vault_token).auth.token.lookup_self()
    except hvac.exceptions.Forbidden:
        return True
    return False


def test_a_lease_revoked_through_one_broker_is_never_delivered_by_another(fleet: Fleet) -> None:
    first_broker, other_broker = fleet.brokers.values()
    token = fleet.mint(ACME, PROJECTS["revoke"])
    issued = exchange(first_broker.url, token, CREDENTIAL)
    # The runner revokes its lease through one broker ...
    answer = _revoke_own_lease(first_broker.url, token, _lease(issued))
    assert [lease["id"] for lease in answer["revoked"]] == [_lease(issued)]
    assert _revoked_at_vault(fleet.openbao, _vault_token(issued))
    # ... and no broker hands it out again: a retry gets a new credential, the same everywhere.
    after = _retries_everywhere(fleet, token)
    assert {_lease(a) for a in after}.isdisjoint({_lease(issued)})
    assert {_vault_token(a) for a in after}.isdisjoint({_vault_token(issued)})
    assert len({_lease(a) for a in after}) == 1

    # An admin revokes that one through the other broker: the same again.
    second = after[0]
    status, body = fleet.admin(other_broker.url, "POST", f"/leases/{_lease(second)}/revoke")
    assert status == 200, body
    assert _revoked_at_vault(fleet.openbao, _vault_token(second))
    again = _retries_everywhere(fleet, token)
    assert {_lease(a) for a in again}.isdisjoint({_lease(issued), _lease(second)})
    assert len({_lease(a) for a in again}) == 1

    states = {lease["id"]: lease["state"] for lease in fleet.leases(ACME.name, PROJECTS["revoke"])}
    assert states == {
        _lease(issued): "revoked",
        _lease(second): "revoked",
        _lease(again[0]): "active",
    }


def test_the_organization_rate_limit_holds_across_the_fleet_within_one_burst(
    fleet: Fleet,
) -> None:
    # An organization nobody registered: its exchanges are refused after the rate limit is
    # taken (organization_unknown), so the burst issues nothing.
    stranger = Organization("stranger", str(uuid.uuid4()))
    token = fleet.mint(stranger, str(uuid.uuid4()))
    urls = fleet.urls()
    sent = 3 * BURST
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        started = time.monotonic()
        answers = list(
            pool.map(lambda n: exchange(urls[n % len(urls)], token, CREDENTIAL), range(sent))
        )
        elapsed = time.monotonic() - started
    reasons = [(a.status, a.body.get("reason")) for a in answers]
    allowed = reasons.count((403, "organization_unknown"))
    limited = reasons.count((429, "rate_limited"))
    assert allowed + limited == sent, reasons
    # One bucket for the fleet: the burst, plus what refilled while it ran. Each worker
    # counting alone (4 buckets) would have let all of them through.
    assert BURST <= allowed <= BURST + int(REFILL_PER_SECOND * elapsed) + 1, (allowed, elapsed)
    for broker in fleet.brokers.values():
        assert "Redis failed" not in broker.output()
    print(
        f"\nfleet rate limit: {allowed} of {sent} allowed in {elapsed:.2f} s "
        f"(burst {BURST}, refill {REFILL_PER_SECOND}/s), {limited} refused with 429"
    )


def _minted(answer: ExchangeAnswer) -> tuple[str, str]:
    assert answer.status == 200, answer.body
    return answer.body["lease"]["id"], answer.body["values"]["OIDC_TOKEN"]


def _replayed(answer: ExchangeAnswer) -> bool:
    return (answer.status, answer.body.get("reason")) == (401, "token_replayed")


def test_a_replay_once_token_serves_one_request_across_the_fleet(fleet: Fleet) -> None:
    first_broker, other_broker = fleet.brokers.values()
    a, b = REPLAY_CREDENTIALS

    def mint() -> str:
        return fleet.mint(REPLAY_ONCE, PROJECTS["replay"], profile=REPLAY_PROFILE)

    token = mint()
    issued = _minted(exchange(first_broker.url, token, a))
    # Its retries, on the other broker and through HAProxy: the same credential.
    for url in (other_broker.url, fleet.haproxy.url, fleet.haproxy.url):
        assert _minted(exchange(url, token, a)) == issued
    # Any other request with it, on any broker: refused.
    for url in fleet.urls():
        assert _replayed(exchange(url, token, b))

    # First uses racing on both brokers at once, for both credentials: one request wins.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            racing = mint()
            answers = list(
                pool.map(
                    lambda n, t=racing: exchange(
                        fleet.brokers[BROKERS[n % 2]].url, t, REPLAY_CREDENTIALS[n // 2 % 2]
                    ),
                    range(8),
                )
            )
            served = [_minted(answer) for answer in answers if answer.status == 200]
            assert len(set(served)) == 1, answers
            assert all(answer.status == 200 or _replayed(answer) for answer in answers), answers


def _dry_run_on(worker_port: int, workers: list[int], token: str) -> tuple[int, float, bool]:
    """A dry run on a new connection: (the worker that answered, when it was sent, allowed)."""
    sock, pid = accepted_connection(worker_port, workers)
    sent = time.monotonic()
    answer = exchange(f"http://127.0.0.1:{worker_port}", token, CREDENTIAL, dry_run=True, sock=sock)
    assert answer.status == 200, answer.body
    allowed = answer.body["allowed"]
    assert allowed or answer.body["reason"] == "project_not_assigned", answer.body
    return pid, sent, allowed


def test_an_admin_change_is_enforced_by_every_worker_within_the_staleness_bound(
    fleet: Fleet,
) -> None:
    workers = {name: workers_of(broker, WORKERS) for name, broker in fleet.brokers.items()}
    every_worker = {pid for pids in workers.values() for pid in pids}
    token = fleet.mint(ACME, PROJECTS["policy"])
    answers: list[tuple[int, float, bool]] = []

    def until_every_worker(allowed: bool, what: str) -> None:
        """Ask both brokers on new connections until every worker has answered ``allowed``."""

        def seen() -> bool | None:
            for name, broker in fleet.brokers.items():
                answers.append(_dry_run_on(broker.port, workers[name], token))
            answered = {pid for pid, _, verdict in answers if verdict == allowed}
            return True if every_worker <= answered else None

        eventually(seen, 60, what)

    # Each worker answers from its cache: every one of them holds the assignment.
    until_every_worker(True, "an allowed dry run from every worker")
    assert all(allowed for _, _, allowed in answers)

    # Unassigned through one broker's admin API (on whichever of its workers) ...
    answers.clear()
    status, body = fleet.admin(
        fleet.brokers["broker-1"].url,
        "DELETE",
        f"/organizations/{ACME.name}/projects/{PROJECTS['policy']}/credentials/{CREDENTIAL}",
    )
    assert status == 204, body
    committed = time.monotonic()
    # ... every worker refuses, and none allowed a request sent after the bound.
    until_every_worker(False, "every worker refusing the unassigned credential")
    late = [sent - committed for _, sent, allowed in answers if allowed]
    assert all(delay <= STALENESS_BOUND_SECONDS for delay in late), late
    print(
        f"\nfleet policy change: {len(answers)} dry runs after the unassign, the last one still "
        f"allowed {max(late, default=0.0):.3f} s after it (bound {STALENESS_BOUND_SECONDS} s)"
    )


@dataclass(frozen=True)
class Restart:
    """How long each step of one broker's restart took."""

    name: str
    drain_seconds: float
    start_seconds: float
    back_in_haproxy_seconds: float

    def __str__(self) -> str:
        return (
            f"{self.name} drained and exited in {self.drain_seconds:.1f} s, started in "
            f"{self.start_seconds:.1f} s, back in HAProxy "
            f"{self.back_in_haproxy_seconds:.1f} s later"
        )


def _answers(path: Path) -> list[Answer]:
    if not path.exists():
        return []
    # A line being written as we read is incomplete: only whole lines count.
    return [
        Answer.from_line(line)
        for line in path.read_text().splitlines(keepends=True)
        if line.endswith("\n")
    ]


def _more_answers(path: Path, than: int, what: str) -> int:
    """Wait until the load has recorded more than ``than`` answers; how many it has."""
    return eventually(lambda: count if (count := len(_answers(path))) > than else None, 60, what)


def test_a_rolling_restart_under_steady_load_loses_no_request(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = [
        fleet.mint(LOAD[n % len(LOAD)], PROJECTS["load"])
        for n in range(LOAD_PAIRS_PER_SECOND * LOAD_MAX_SECONDS)
    ]
    tokens_file = fleet.directory / "load-tokens.txt"
    tokens_file.write_text("\n".join(tokens) + "\n")
    out = fleet.directory / "load-answers.jsonl"
    with (fleet.directory / "load.log").open("wb") as log:
        load = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.fleet_load",
                "--url",
                fleet.haproxy.url,
                "--tokens",
                str(tokens_file),
                "--credential",
                CREDENTIAL,
                "--out",
                str(out),
                "--pairs-per-second",
                str(LOAD_PAIRS_PER_SECOND),
                "--concurrency",
                "8",
                "--max-seconds",
                str(LOAD_MAX_SECONDS),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        seen = _more_answers(out, 4 * LOAD_PAIRS_PER_SECOND, "the load under way")
        restarts: list[Restart] = []
        back: dict[str, int] = {}
        log_start = len(fleet.haproxy.log())
        for name, broker in fleet.brokers.items():
            before = set(workers_of(broker, WORKERS))
            began = time.monotonic()
            broker.server.signal(signal.SIGTERM)
            assert broker.server.wait(STOP_TIMEOUT_SECONDS) == 0, broker.output()
            stopped = time.monotonic()
            assert "Traceback" not in broker.output()
            log = broker.server.log_path
            log.rename(log.with_suffix(".before-restart.log"))
            broker.server.start()  # waits for its own /readyz
            ready = time.monotonic()
            fleet.haproxy.wait_for(name, "UP")
            back_in = time.monotonic()
            restarts.append(Restart(name, stopped - began, ready - stopped, back_in - ready))
            back[name] = len(fleet.haproxy.log())
            assert set(workers_of(broker, WORKERS)).isdisjoint(before)
            # Served on while it was out, and on after it is back.
            seen = _more_answers(out, seen + 2 * LOAD_PAIRS_PER_SECOND, f"the load after {name}")
        load.send_signal(signal.SIGTERM)
        assert load.wait(STOP_TIMEOUT_SECONDS) == 0
    finally:
        stop_process(load, 10)
    answers = _answers(out)
    figures = LoadFigures.of(answers)
    failures = [a for a in answers if a.status != 200][:5]
    # Every token's exchange made one lease, on whichever broker: none issued twice.
    leases = [lease for org in LOAD for lease in fleet.leases(org.name, PROJECTS["load"])]
    answered_tokens = {a.token for a in answers if a.status == 200}
    redispatched = _redispatched_since(fleet.haproxy, log_start)
    with capsys.disabled():
        print(
            f"\nfleet rolling restart: {figures.sent} requests sent, {figures.failed} failed "
            f"({figures.server_errors} 5xx, {figures.connection_errors} connection errors), "
            f"{figures.duplicates} duplicates at the client, {len(leases)} leases for "
            f"{len(answered_tokens)} tokens; longest request {figures.longest_request_seconds:.3f}"
            f" s, longest time without an answer {figures.longest_gap_seconds:.3f} s; "
            f"{redispatched} sent again to the other broker by HAProxy; "
            + "; ".join(str(restart) for restart in restarts)
        )
    assert figures.failed == 0, failures
    assert figures.duplicates == 0
    assert len(leases) == len(answered_tokens)
    # Each restarted broker served the load again once HAProxy had it back.
    for name, offset in back.items():
        assert name in _exchanges_served_since(fleet.haproxy, offset)
