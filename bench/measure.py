"""The measurements over the network, load from wrk: CPU per request, latency, growth, memory.

Every comparison is made in one run: the compared targets run as phases of equal length, one
wrk process each, the phases repeating in rounds whose order rotates (this machine's load drifts
within seconds; many short rotating phases spread a drift over every target instead of one).
The CPU of a server over its phases (``/proc/<pid>/stat``, its descendants included) divided by
the requests wrk counted is its CPU per request. Every server runs in its own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench import store_growth, wrk
from bench.postgres import local_server_pid
from bench.procs import machine_busy_seconds, rss_kib, tree_cpu_seconds
from bench.report import Row, at_most
from bench.stack import (
    DEFAULT_REDIS_URL,
    PASSTHROUGH_PATH,
    ROLE,
    VAULT_MINT,
    VAULT_PASSTHROUGH,
    Broker,
    Stack,
)

CONCURRENCY = 32
# Issue 17's targets.
LOGIN_HELLO_TARGET = 4.0
LOGIN_OPENBAO_TARGET = 1.0
MINT_HELLO_TARGET = 5.0
C1_EXTRA_TARGET = 5.0
RETRY_CPU_TARGET = 2.0
RETRY_RATE_TARGET = 0.5
REFUSED_TARGET = 0.5
SHARED_STORE_TARGET = 1.5
GROWTH_TARGET = 1.1
MEMORY_TARGET_MB = 20.0
WORKERS_TARGET = 1.5
# The retry path as the bench measured it before and after leases (bench/README.md: round 4,
# 2026-11-22, and the quick run of 2026-12-02): issue 14 asks for today's figure beside them.
RETRY_BEFORE_LEASES = "before leases 0.45x hello's rate, 0.18 ms CPU/req"
RETRY_AFTER_LEASES = "after leases 0.10x, 0.95 ms (own load generator)"
_MANY_ISSUERS = 200
FLOOR = "floor (verify, one outbound login, one row)"
FLOOR_SQLITE3 = "floor, the row through sqlite3 itself"
FLOOR_NO_ROW = "floor without the row (verify, outbound login)"
FLOOR_OUTBOUND = "floor, outbound login only"
RETRY_FLOOR = "retry floor (request, digest, one read; no audit row)"
RETRY_FLOOR_AUDITED = "retry floor with its audit row (batched rounds)"
REFUSAL_FLOOR = "refusal floor (request, its audit row, 401)"
_UNLIMITED = {
    "enabled": True,
    "requests_per_minute": 1_000_000,
    "burst": 100_000,
    "per_client_per_minute": 1_000_000,
    "per_client_burst": 100_000,
}


@dataclass(frozen=True)
class Plan:
    """Phase lengths and rounds; ``quick()`` is the few-minute version."""

    # wrk counts time in whole seconds.
    phase_seconds: int = 2
    rounds: int = 4
    # The c=1 rows compare medians, which drift more than CPU per request: 1-second phases
    # (wrk's shortest), many rounds.
    c1_rounds: int = 12
    growth_rounds: int = 12
    validation_calls: int = 4000
    store_growth_iterations: int = 2000
    memory_exchanges: int = 100_000
    # Fresh tokens one broker credential may use over the run (c=1 and c=32 phases), and
    # OpenBao alone at c=32 and at c=1.
    fresh_tokens: int = 24_000

    @classmethod
    def quick(cls) -> Plan:
        """Shorter phases, fewer rounds: for a look, not for the README."""
        return cls(
            phase_seconds=1,
            rounds=2,
            c1_rounds=4,
            growth_rounds=4,
            validation_calls=1000,
            store_growth_iterations=500,
            memory_exchanges=20_000,
            fresh_tokens=8_000,
        )

    @property
    def token_pool(self) -> int:
        """Distinct platform tokens to mint before any timing (see Pool)."""
        return 3 * self.fresh_tokens + _REPEATED + _MEMORY_TOKENS + 1


_MEMORY_TOKENS = 1000
# The memory broker's reuse window: a token is issued again every 5 s, retried meanwhile.
_MEMORY_REUSE_SECONDS = 5
_C1_PHASE_SECONDS = 1
_MEMORY_CHUNK_SECONDS = 3
_REPEATED = 500


class Pool:
    """The minted tokens, in ranges: ``brokers`` for proxied logins (every (broker, credential)
    has a cursor of its own through it), OpenBao's alone (``repeated``: tokens it sees again and
    again; ``direct_c32`` and ``direct_c1``: tokens it never saw), the memory row's, and one
    token for retries."""

    def __init__(self, plan: Plan, tokens: Sequence[str]) -> None:
        self.tokens = tokens
        fresh = plan.fresh_tokens
        self.brokers = (0, fresh)
        self.direct_c32 = (fresh, 2 * fresh)
        self.direct_c1 = (2 * fresh, 3 * fresh)
        self.repeated = (3 * fresh, 3 * fresh + _REPEATED)
        self.memory = (self.repeated[1], self.repeated[1] + _MEMORY_TOKENS)
        self.retry = self.memory[1]
        self._cursors: dict[str, Cursor] = {}

    def cursor(self, key: str, span: tuple[int, int] | None = None) -> Cursor:
        """The fresh-token cursor of ``key`` (a broker and credential) in ``span``."""
        start, stop = span or self.brokers
        return self._cursors.setdefault(key, Cursor(start, stop))


@dataclass
class Cursor:
    """Fresh tokens of one range: every phase starts past the tokens the earlier ones sent."""

    next: int
    stop: int

    def tokens(self) -> wrk.Tokens:
        """The unused rest of the range."""
        return wrk.Tokens("fresh", self.next, self.stop)

    def used(self, sent: int) -> None:
        """``sent`` more tokens of the range are spent."""
        self.next = min(self.stop, self.next + sent)


@dataclass(frozen=True)
class Load:
    """One phase kind: a target, its tokens, and the process whose CPU it is charged to."""

    target: wrk.Target
    tokens: wrk.Tokens | Cursor
    pid: int | None
    # The database server the server measured writes to, when it runs here: its CPU too.
    database_pid: int | None = None

    @property
    def label(self) -> str:
        """The target's label."""
        return self.target.label


@dataclass
class Totals:
    """One label's phases added up."""

    requests: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    database_seconds: float = 0.0
    # Busy CPU time of the whole machine over its phases (wrk, every server, the rest).
    machine_seconds: float = 0.0
    histogram: Counter[int] = field(default_factory=Counter)
    exhausted: bool = False

    @property
    def rate(self) -> float:
        """Requests per second over its phases."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        """CPU milliseconds of its server per request."""
        return 1000 * self.cpu_seconds / self.requests if self.requests else 0.0

    @property
    def database_ms(self) -> float:
        """CPU milliseconds of the database server (``Load.database_pid``) per request."""
        return 1000 * self.database_seconds / self.requests if self.requests else 0.0

    @property
    def machine_ms(self) -> float:
        """Busy CPU milliseconds of the whole machine per request."""
        return 1000 * self.machine_seconds / self.requests if self.requests else 0.0

    @property
    def machine_cpus(self) -> float:
        """How many of the machine's CPUs were busy, on average, over its phases."""
        return self.machine_seconds / self.seconds if self.seconds else 0.0

    @property
    def median_ms(self) -> float:
        """Median latency over its phases (histogram phases only)."""
        return wrk.median_ms(self.histogram)

    def data(self) -> dict[str, object]:
        """For the JSON file."""
        values: dict[str, object] = {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "cpu_ms_per_request": round(self.cpu_ms, 4),
            "machine_cpus_busy": round(self.machine_cpus, 3),
        }
        if self.database_seconds:
            values["database_cpu_ms_per_request"] = round(self.database_ms, 4)
        if self.exhausted:
            values["fresh_tokens_ran_out"] = True
        if self.histogram:
            values["median_ms"] = round(self.median_ms, 4)
            values["p99_ms"] = round(wrk.p99_ms(self.histogram), 4)
        return values


def run_rounds(
    tokens: Sequence[str],
    loads: Sequence[Load],
    connections: int,
    seconds: int,
    rounds: int,
    *,
    histogram: bool = False,
    warm: bool = True,
) -> dict[str, Totals]:
    """Each load alone for ``seconds`` per round, the order rotating from round to round;
    first one unrecorded round of 1-second phases (connections, pools, caches) when ``warm``."""
    totals = {load.label: Totals() for load in loads}

    def one(load: Load, phase_seconds: int, record: bool) -> None:
        use = load.tokens.tokens() if isinstance(load.tokens, Cursor) else load.tokens
        cpu_before = tree_cpu_seconds(load.pid) if load.pid is not None else 0.0
        database = load.database_pid
        database_before = tree_cpu_seconds(database) if database is not None else 0.0
        machine_before = machine_busy_seconds()
        phase = wrk.checked(
            wrk.run(
                load.target,
                tokens,
                use,
                connections,
                phase_seconds,
                histogram=histogram and record,
            )
        )
        cpu = tree_cpu_seconds(load.pid) - cpu_before if load.pid is not None else 0.0
        machine = machine_busy_seconds() - machine_before
        database_cpu = tree_cpu_seconds(database) - database_before if database is not None else 0.0
        if isinstance(load.tokens, Cursor):
            load.tokens.used(phase.sent)
        if phase.exhausted:
            # wrk then idles until the phase's end: its rate is low, its CPU per request right.
            print(f"[bench] {load.label}: its fresh tokens ran out", file=sys.stderr)
        if record:
            total = totals[load.label]
            total.requests += phase.expected
            total.seconds += phase.seconds
            total.cpu_seconds += cpu
            total.database_seconds += database_cpu
            total.machine_seconds += machine
            total.histogram += phase.histogram
            total.exhausted = total.exhausted or phase.exhausted

    if warm:
        for load in loads:
            one(load, 1, record=False)
    for round_index in range(rounds):
        shift = round_index % len(loads)
        for load in [*loads[shift:], *loads[:shift]]:
            one(load, seconds, record=True)
    return totals


# -- targets -------------------------------------------------------------------------------


def hello_target(stack: Stack) -> wrk.Target:
    """The aiohttp hello-world, sent what the broker is sent (a bearer token, the JSON body):
    one HTTP request received and answered, the yardstick's unit."""
    body = json.dumps({"credential": VAULT_PASSTHROUGH})
    return wrk.Target("hello-world", stack.hello_url, body=body, bearer=True)


def vault_direct(stack: Stack, label: str = "vault direct") -> wrk.Target:
    """An OpenBao JWT login with the platform token, straight to OpenBao."""
    body = json.dumps({"role": ROLE, "jwt": wrk.TOKEN_PLACEHOLDER})
    url = f"{stack.openbao.address}/v1/auth/{PASSTHROUGH_PATH}/login"
    return wrk.Target(label, url, body=body)


def via_broker(
    label: str,
    broker: Broker,
    credential: str,
    *,
    dry_run: bool = False,
    expect_status: int = 200,
    headers: tuple[tuple[str, str], ...] = (),
) -> wrk.Target:
    """``POST /v1/exchange`` of a broker for ``credential``, the token as bearer."""
    url = broker.exchange_url + ("?dry_run=true" if dry_run else "")
    body = json.dumps({"credential": credential})
    return wrk.Target(
        label,
        url,
        body=body,
        bearer=not headers,
        expect_status=expect_status,
        headers=headers,
    )


def _pid(process: object) -> int:
    pid = getattr(process, "pid", None)
    assert isinstance(pid, int), "a server of the stack is not running"
    return pid


def _ratio_row(
    section: str,
    name: str,
    value: float,
    target: float | None,
    context: str,
    data: dict[str, object],
    *,
    at_least: bool = False,
) -> Row:
    if target is None:
        return Row(section, name, value, "x", context=context, data=data)
    passed = value >= target if at_least else at_most(value, target)
    bound = f">= {target}x" if at_least else f"<= {target}x"
    return Row(section, name, value, "x", bound, passed, context, data)


# -- the main figures: CPU per request at c=32, latency at c=1 -------------------------------


@dataclass
class Extras:
    """The brokers beside the main one (each None when not run)."""

    shared: Broker | None = None  # PostgreSQL + Redis
    baseline: Broker | None = None  # another revision, SQLite
    baseline_revision: str = ""
    limited: Broker | None = None  # the pre-auth limit set low


def start_extras(
    stack: Stack, baseline_revision: str | None, redis_url: str = DEFAULT_REDIS_URL
) -> Extras:
    """The brokers the main figures compare with: one on PostgreSQL + Redis, one whose
    per-client limit refuses nearly everything, and one of ``baseline_revision``."""
    policy = stack.main_policy()
    extras = Extras()
    extras.shared = stack.start_broker(
        "shared",
        [stack.env0_issuer()],
        store_url=stack.new_postgres_schema(),
        rate_limit={**_UNLIMITED, "redis_url": redis_url, "redis_timeout_ms": 1000},
        organizations=policy["organizations"],
        credentials=policy["credentials"],
        assignments=policy["assignments"],
    )
    extras.limited = stack.start_broker(
        "limited",
        [stack.env0_issuer()],
        rate_limit={**_UNLIMITED, "per_client_per_minute": 1, "per_client_burst": 1},
        organizations=policy["organizations"],
        credentials=policy["credentials"],
        assignments=policy["assignments"],
    )
    if baseline_revision:
        extras.baseline = stack.start_broker(
            "baseline",
            [stack.env0_issuer()],
            source=stack.extract_revision(baseline_revision),
            organizations=policy["organizations"],
            credentials=policy["credentials"],
            assignments=policy["assignments"],
        )
        extras.baseline_revision = baseline_revision
    return extras


def measure_main(stack: Stack, pool: Pool, plan: Plan, extras: Extras) -> list[Row]:
    """Issue 17's rows (and issue 14's): CPU per request at c=32, the c=1 extra."""
    broker = stack.brokers["main"]
    hello_pid = _pid(stack.hello)
    floors = {
        FLOOR: stack.start_floor("floor"),
        FLOOR_SQLITE3: stack.start_floor("floor-sqlite3", plain_sqlite=True),
        FLOOR_NO_ROW: stack.start_floor("floor-no-row", write=False),
        FLOOR_OUTBOUND: stack.start_floor("floor-outbound", verify=False, write=False),
    }
    retry_floor_url, retry_floor = stack.start_retry_floor("retry-floor")
    retry_token = wrk.Tokens("fixed", pool.retry, pool.retry + 1)
    malformed = (("Authorization", "Bearer not-a-platform-token"),)
    loads = [
        Load(hello_target(stack), retry_token, hello_pid),
        # Tokens OpenBao has seen (they logged in during the warm-up round): a login of a
        # known subject. "fresh": each token's subject is new to OpenBao, an entity per login.
        Load(
            vault_direct(stack, "vault direct, repeated tokens"),
            wrk.Tokens("cycle", *pool.repeated),
            stack.openbao.pid,
        ),
        Load(
            vault_direct(stack, "vault direct, fresh tokens"),
            pool.cursor("direct c32", pool.direct_c32),
            stack.openbao.pid,
        ),
        Load(
            via_broker("passthrough", broker, VAULT_PASSTHROUGH),
            pool.cursor("main passthrough"),
            broker.pid,
        ),
        Load(via_broker("mint", broker, VAULT_MINT), pool.cursor("main mint"), broker.pid),
        *(
            Load(
                wrk.Target(label, url, bearer=True), wrk.Tokens("cycle", *pool.brokers), server.pid
            )
            for label, (url, server) in floors.items()
        ),
        Load(via_broker("retry path", broker, VAULT_PASSTHROUGH), retry_token, broker.pid),
        Load(
            wrk.Target(RETRY_FLOOR, retry_floor_url, body=hello_target(stack).body, bearer=True),
            retry_token,
            retry_floor.pid,
        ),
        Load(
            wrk.Target(
                RETRY_FLOOR_AUDITED,
                f"{retry_floor_url}audited",
                body=hello_target(stack).body,
                bearer=True,
            ),
            retry_token,
            retry_floor.pid,
        ),
        Load(
            wrk.Target(
                REFUSAL_FLOOR,
                f"{retry_floor_url}refused",
                body=hello_target(stack).body,
                expect_status=401,
                headers=malformed,
            ),
            wrk.NO_TOKEN,
            retry_floor.pid,
        ),
        Load(
            via_broker("dry run", broker, VAULT_PASSTHROUGH, dry_run=True),
            retry_token,
            broker.pid,
        ),
        Load(
            via_broker(
                "malformed token", broker, VAULT_PASSTHROUGH, expect_status=401, headers=malformed
            ),
            wrk.NO_TOKEN,
            broker.pid,
        ),
    ]
    if extras.limited is not None:
        loads.append(
            Load(
                via_broker("pre-auth 429", extras.limited, VAULT_PASSTHROUGH, expect_status=429),
                retry_token,
                extras.limited.pid,
            )
        )
    for name, other in (("shared", extras.shared), ("baseline", extras.baseline)):
        if other is not None:
            loads += [
                Load(
                    via_broker(f"{name} passthrough", other, VAULT_PASSTHROUGH),
                    pool.cursor(f"{name} passthrough"),
                    other.pid,
                ),
                Load(
                    via_broker(f"{name} retry path", other, VAULT_PASSTHROUGH),
                    retry_token,
                    other.pid,
                ),
            ]
    c32 = run_rounds(pool.tokens, loads, CONCURRENCY, plan.phase_seconds, plan.rounds)
    retry_floor.stop()
    for label, (_, server) in floors.items():
        if label != FLOOR_SQLITE3:  # also the c=1 floor
            server.stop()
    floor_url, floor_server = floors[FLOOR_SQLITE3]
    c1 = run_rounds(
        pool.tokens,
        [
            Load(hello_target(stack), retry_token, None),
            # Fresh tokens on both sides: OpenBao makes an entity for each, as it does for
            # every login through the broker here.
            Load(
                vault_direct(stack),
                pool.cursor("direct c1", pool.direct_c1),
                None,
            ),
            Load(
                via_broker("passthrough", broker, VAULT_PASSTHROUGH),
                pool.cursor("main passthrough"),
                None,
            ),
            Load(via_broker("mint", broker, VAULT_MINT), pool.cursor("main mint"), None),
            Load(
                wrk.Target(FLOOR_SQLITE3, floor_url, bearer=True),
                # The passthrough's cursor: tokens OpenBao never saw, as the broker sends.
                pool.cursor("main passthrough"),
                None,
            ),
        ],
        1,
        _C1_PHASE_SECONDS,
        plan.c1_rounds,
        histogram=True,
    )
    floor_server.stop()
    return _main_rows(c32, c1, extras)


def _main_rows(c32: dict[str, Totals], c1: dict[str, Totals], extras: Extras) -> list[Row]:
    hello = c32["hello-world"]
    repeated = c32["vault direct, repeated tokens"]
    fresh = c32["vault direct, fresh tokens"]
    rows: list[Row] = []
    section = "1 yardsticks (wrk, same run)"
    hello1, direct1 = c1["hello-world"], c1["vault direct"]
    rows += [
        Row(
            section,
            "hello-world c=1: round trip (median)",
            hello1.median_ms,
            "ms each",
            context=f"p99 {wrk.p99_ms(hello1.histogram):.3f} ms (n={hello1.requests:,})",
            data=hello1.data(),
        ),
        Row(
            section,
            "hello-world c=32: CPU per request",
            hello.cpu_ms,
            "ms each",
            context=f"{hello.rate:,.0f} req/s",
            data=hello.data(),
        ),
        Row(
            section,
            "OpenBao JWT login c=1, fresh tokens: median",
            direct1.median_ms,
            "ms each",
            context=f"p99 {wrk.p99_ms(direct1.histogram):.3f} ms (n={direct1.requests:,})",
            data=direct1.data(),
        ),
        Row(
            section,
            "OpenBao CPU per login c=32, repeated tokens",
            repeated.cpu_ms,
            "ms each",
            context=f"{repeated.rate:,.0f} logins/s",
            data=repeated.data(),
        ),
        Row(
            section,
            "OpenBao CPU per login c=32, fresh tokens",
            fresh.cpu_ms,
            "ms each",
            context=f"{fresh.rate:,.0f} logins/s (each token a new subject: a new entity)",
            data=fresh.data(),
        ),
    ]

    section = "2 proxied Vault login (c=32, broker CPU per request)"
    passthrough, mint = c32["passthrough"], c32["mint"]
    floor = c32[FLOOR]

    def cpu_context(totals: Totals) -> str:
        return f"{totals.cpu_ms:.3f} vs hello {hello.cpu_ms:.3f} ms/req, {totals.rate:,.0f} req/s"

    rows += [
        _ratio_row(
            section,
            "passthrough / hello-world CPU per request",
            passthrough.cpu_ms / hello.cpu_ms,
            LOGIN_HELLO_TARGET,
            cpu_context(passthrough),
            {"broker": passthrough.data(), "hello": hello.data()},
        ),
        _ratio_row(
            section,
            "passthrough / OpenBao CPU per login (repeated tokens)",
            passthrough.cpu_ms / repeated.cpu_ms,
            LOGIN_OPENBAO_TARGET,
            f"{passthrough.cpu_ms:.3f} vs {repeated.cpu_ms:.3f} ms; OpenBao with fresh "
            f"tokens {fresh.cpu_ms:.3f} ms: {passthrough.cpu_ms / fresh.cpu_ms:.2f}x",
            {
                "broker": passthrough.data(),
                "openbao": repeated.data(),
                "openbao_fresh": fresh.data(),
            },
        ),
        _ratio_row(
            section,
            "mint (ES256) / hello-world CPU per request",
            mint.cpu_ms / hello.cpu_ms,
            MINT_HELLO_TARGET,
            cpu_context(mint),
            {"broker": mint.data(), "hello": hello.data()},
        ),
        *(
            _ratio_row(
                section,
                f"{label} / hello-world",
                c32[label].cpu_ms / hello.cpu_ms,
                None,
                cpu_context(c32[label]),
                c32[label].data(),
            )
            for label in (FLOOR, FLOOR_SQLITE3, FLOOR_NO_ROW, FLOOR_OUTBOUND)
        ),
        _ratio_row(
            section,
            "passthrough / floor CPU per request",
            passthrough.cpu_ms / floor.cpu_ms,
            None,
            f"{passthrough.cpu_ms:.3f} vs {floor.cpu_ms:.3f} ms/req",
            {},
        ),
        _ratio_row(
            section,
            "passthrough throughput / direct (repeated tokens)",
            passthrough.rate / repeated.rate,
            None,
            f"{repeated.rate:,.0f} -> {passthrough.rate:,.0f} req/s",
            {},
        ),
        _ratio_row(
            section,
            "mint throughput / direct (repeated tokens)",
            mint.rate / repeated.rate,
            None,
            f"{repeated.rate:,.0f} -> {mint.rate:,.0f} req/s",
            {},
        ),
    ]

    section = "3 proxied Vault login (c=1, median)"
    for label, target in (("passthrough", C1_EXTRA_TARGET), ("mint", None), (FLOOR_SQLITE3, None)):
        through = c1[label]
        extra = through.median_ms - direct1.median_ms
        rows.append(
            _ratio_row(
                section,
                f"{label}: median extra over the direct login / hello-world round trip",
                extra / hello1.median_ms,
                target,
                f"+{extra:.3f} ms (median {direct1.median_ms:.3f} -> {through.median_ms:.3f} "
                f"ms; hello {hello1.median_ms:.3f} ms; n={through.requests:,})",
                {"broker": through.data(), "direct": direct1.data(), "hello": hello1.data()},
            )
        )

    section = "4 retry path (same token and credential, c=32)"
    retry, dry, retry_floor = c32["retry path"], c32["dry run"], c32[RETRY_FLOOR]
    audited_floor, refusal_floor = c32[RETRY_FLOOR_AUDITED], c32[REFUSAL_FLOOR]
    rows += [
        _ratio_row(
            section,
            "retry path / hello-world CPU per request",
            retry.cpu_ms / hello.cpu_ms,
            RETRY_CPU_TARGET,
            f"{cpu_context(retry)}; {RETRY_BEFORE_LEASES}, {RETRY_AFTER_LEASES}",
            {"broker": retry.data(), "hello": hello.data()},
        ),
        _ratio_row(
            section,
            "retry path / hello-world rate",
            retry.rate / hello.rate,
            RETRY_RATE_TARGET,
            f"{hello.rate:,.0f} -> {retry.rate:,.0f} req/s",
            {"broker": retry.data(), "hello": hello.data()},
            at_least=True,
        ),
        _ratio_row(
            section,
            "dry run / hello-world CPU per request",
            dry.cpu_ms / hello.cpu_ms,
            None,
            cpu_context(dry),
            dry.data(),
        ),
        _ratio_row(
            section,
            f"{RETRY_FLOOR} / hello-world CPU per request",
            retry_floor.cpu_ms / hello.cpu_ms,
            None,
            cpu_context(retry_floor),
            retry_floor.data(),
        ),
        _ratio_row(
            section,
            f"{RETRY_FLOOR} / hello-world rate",
            retry_floor.rate / hello.rate,
            None,
            f"{hello.rate:,.0f} -> {retry_floor.rate:,.0f} req/s",
            retry_floor.data(),
        ),
        _ratio_row(
            section,
            f"{RETRY_FLOOR_AUDITED} / hello-world CPU per request",
            audited_floor.cpu_ms / hello.cpu_ms,
            None,
            cpu_context(audited_floor),
            audited_floor.data(),
        ),
        _ratio_row(
            section,
            f"{RETRY_FLOOR_AUDITED} / hello-world rate",
            audited_floor.rate / hello.rate,
            None,
            f"{hello.rate:,.0f} -> {audited_floor.rate:,.0f} req/s",
            audited_floor.data(),
        ),
    ]

    section = "5 refused requests (c=32)"
    refused = [("malformed token (401)", c32["malformed token"])]
    if "pre-auth 429" in c32:
        refused.insert(0, ("pre-auth 429 (per-client limit)", c32["pre-auth 429"]))
    for name, totals in refused:
        rows.append(
            _ratio_row(
                section,
                f"{name} / retry path CPU per request",
                totals.cpu_ms / retry.cpu_ms,
                REFUSED_TARGET,
                f"{totals.cpu_ms:.3f} vs {retry.cpu_ms:.3f} ms/req, {totals.rate:,.0f} req/s",
                totals.data(),
            )
        )
    # Rows 4 and 5 together: a retry at 2x the hello-world leaves a refusal 1x, one request.
    rows += [
        _ratio_row(
            section,
            f"{REFUSAL_FLOOR} / hello-world CPU per request",
            refusal_floor.cpu_ms / hello.cpu_ms,
            None,
            cpu_context(refusal_floor),
            refusal_floor.data(),
        ),
        _ratio_row(
            section,
            f"{REFUSAL_FLOOR} / {RETRY_FLOOR_AUDITED} CPU per request",
            refusal_floor.cpu_ms / audited_floor.cpu_ms,
            None,
            f"{refusal_floor.cpu_ms:.3f} vs {audited_floor.cpu_ms:.3f} ms/req",
            {},
        ),
    ]

    if extras.shared is not None:
        section = "6 PostgreSQL + Redis (shared lease and limits, c=32)"
        shared_login, shared_retry = c32["shared passthrough"], c32["shared retry path"]
        rows += [
            _ratio_row(
                section,
                "proxied login CPU / SQLite's",
                shared_login.cpu_ms / passthrough.cpu_ms,
                SHARED_STORE_TARGET,
                f"{passthrough.cpu_ms:.3f} -> {shared_login.cpu_ms:.3f} ms/req "
                f"({shared_login.cpu_ms / hello.cpu_ms:.1f}x hello)",
                shared_login.data(),
            ),
            _ratio_row(
                section,
                "retry path CPU / SQLite's",
                shared_retry.cpu_ms / retry.cpu_ms,
                SHARED_STORE_TARGET,
                f"{retry.cpu_ms:.3f} -> {shared_retry.cpu_ms:.3f} ms/req "
                f"({shared_retry.cpu_ms / hello.cpu_ms:.1f}x hello; "
                f"{shared_retry.rate / hello.rate:.2f}x hello's rate)",
                shared_retry.data(),
            ),
        ]

    if extras.baseline is not None:
        section = f"7 this checkout / {extras.baseline_revision} (A/B, SQLite, c=32)"
        base_login, base_retry = c32["baseline passthrough"], c32["baseline retry path"]
        rows += [
            Row(
                section,
                "proxied login: broker CPU added since the baseline",
                passthrough.cpu_ms - base_login.cpu_ms,
                "ms",
                context=f"{base_login.cpu_ms:.3f} -> {passthrough.cpu_ms:.3f} ms/req",
                data={"baseline": base_login.data(), "now": passthrough.data()},
            ),
            _ratio_row(
                section,
                "proxied login CPU / baseline's",
                passthrough.cpu_ms / base_login.cpu_ms,
                None,
                f"{base_login.rate:,.0f} -> {passthrough.rate:,.0f} req/s",
                {},
            ),
            _ratio_row(
                section,
                "retry path CPU / baseline's",
                retry.cpu_ms / base_retry.cpu_ms,
                None,
                f"{base_retry.cpu_ms:.3f} -> {retry.cpu_ms:.3f} ms/req; rate "
                f"{base_retry.rate:,.0f} -> {retry.rate:,.0f} req/s",
                {"baseline": base_retry.data(), "now": retry.data()},
            ),
        ]
    return rows


# -- growth --------------------------------------------------------------------------------


async def _filled(path: Path, total: int) -> None:
    store = await store_growth._fill(path, total)
    await store.close()


def measure_growth(stack: Stack, pool: Pool, plan: Plan, token_index: int) -> list[Row]:
    """Dry-run exchange latency with 10 vs 100,000 assignments, 1 vs 200 issuers (c=1).

    The stores are filled by ``bench.store_growth`` (its organization, project and credential
    names); ``token_index`` is a token of that organization and project in the token file.
    """
    directory = Path(tempfile.mkdtemp(prefix="growth-", dir=stack.workdir))
    for name, total in (
        ("small", store_growth.SMALL_TOTAL),
        ("large", store_growth.LARGE_TOTAL),
        ("issuers", store_growth.SMALL_TOTAL),
    ):
        asyncio.run(_filled(directory / f"{name}.db", total))
    issuer = stack.env0_issuer(name="env0")
    others: list[dict[str, object]] = [
        {
            "name": f"other-{index}",
            "issuer": f"https://issuer-{index}.example.com",
            "audiences": ["tokenbroker"],
            "profile": "github",
        }
        for index in range(_MANY_ISSUERS - 1)
    ]
    brokers = {
        "small": stack.start_broker(
            "growth-small", [issuer], store_url=f"sqlite+aiosqlite:///{directory / 'small.db'}"
        ),
        "large": stack.start_broker(
            "growth-large", [issuer], store_url=f"sqlite+aiosqlite:///{directory / 'large.db'}"
        ),
        "issuers": stack.start_broker(
            "growth-issuers",
            # The trusted one last: a lookup that scanned the list would pay for all 199.
            [*others, issuer],
            store_url=f"sqlite+aiosqlite:///{directory / 'issuers.db'}",
        ),
    }
    fixed = wrk.Tokens("fixed", token_index, token_index + 1)
    totals = run_rounds(
        pool.tokens,
        [
            Load(via_broker(name, broker, "cred-0", dry_run=True), fixed, None)
            for name, broker in brokers.items()
        ],
        1,
        _C1_PHASE_SECONDS,
        plan.growth_rounds,
        histogram=True,
    )
    for broker in brokers.values():
        broker.server.stop()
    small = totals["small"]
    section = "9 growth (c=1, median latency)"
    rows = []
    for label, name, judged in (
        ("large", f"dry-run exchange, {store_growth.LARGE_TOTAL:,} / 10 assignments", True),
        ("issuers", f"dry-run exchange, {_MANY_ISSUERS} / 1 trusted issuers", False),
    ):
        other = totals[label]
        rows.append(
            _ratio_row(
                section,
                name,
                other.median_ms / small.median_ms,
                GROWTH_TARGET if judged else None,
                f"median {small.median_ms:.3f} -> {other.median_ms:.3f} ms (n={other.requests:,})",
                {"baseline": small.data(), "grown": other.data()},
            )
        )
    lookup = asyncio.run(store_growth.run(plan.store_growth_iterations))
    rows.append(
        Row(
            section,
            "store lookup (bench.store_growth), 100,000 / 10",
            lookup.ratio,
            "x",
            f"<= {store_growth.TARGET_RATIO}x",
            at_most(lookup.ratio, store_growth.TARGET_RATIO),
            f"median {lookup.median_us['small']:.0f} -> {lookup.median_us['large']:.0f} us "
            f"(n={lookup.iterations})",
            lookup.as_json(),
        )
    )
    return rows


# -- memory --------------------------------------------------------------------------------


def measure_memory(stack: Stack, pool: Pool, plan: Plan) -> list[Row]:
    """Broker RSS before and after ``plan.memory_exchanges`` exchanges at c=32."""
    # A broker of its own, whose reuse window is short: 1,000 tokens round-robin, each issued
    # (a login at OpenBao, a lease claimed and activated), retried from its lease (validation,
    # lookups, an audit row every time; no backend call) until its window ends 5 s later,
    # and issued again. However fast the machine, the exchanges mix issues and retries.
    broker = stack.start_broker(
        "memory",
        [stack.env0_issuer()],
        exchange={"reuse_seconds": _MEMORY_REUSE_SECONDS},
        **stack.main_policy(),
    )
    target = via_broker("memory", broker, VAULT_PASSTHROUGH)
    memory_tokens = wrk.Tokens("cycle", *pool.memory)
    # Warmed first (the tokens issued, the process's first-use allocations made), so the growth
    # is what serving more requests adds.
    wrk.checked(wrk.run(target, pool.tokens, memory_tokens, CONCURRENCY, _MEMORY_CHUNK_SECONDS))
    before = rss_kib(broker.pid)
    issued_before = _issued(broker)
    sent = completed = 0
    seconds = 0.0
    # wrk stops sending at the count but exits only at its duration: short runs, until done.
    while sent < plan.memory_exchanges:
        phase = wrk.checked(
            wrk.run(
                target,
                pool.tokens,
                memory_tokens,
                CONCURRENCY,
                _MEMORY_CHUNK_SECONDS,
                max_requests=plan.memory_exchanges - sent,
            )
        )
        sent += phase.sent
        completed += phase.requests
        seconds += phase.seconds
    after = rss_kib(broker.pid)
    issued = _issued(broker) - issued_before
    grown_mb = (after - before) / 1024
    return [
        Row(
            "10 memory",
            f"broker RSS growth over {sent:,} exchanges",
            grown_mb,
            "MB",
            f"< {MEMORY_TARGET_MB:.0f} MB",
            grown_mb < MEMORY_TARGET_MB,
            f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MB in {seconds:.0f} s "
            f"after a {_MEMORY_CHUNK_SECONDS} s warm-up ({_MEMORY_TOKENS:,} tokens round-robin, "
            f"{issued:,} of the exchanges issues: reuse window {_MEMORY_REUSE_SECONDS} s)",
            {
                "rss_before_kib": before,
                "rss_after_kib": after,
                "exchanges": sent,
                "completed": completed,
                "issued": issued,
            },
        )
    ]


# -- workers -------------------------------------------------------------------------------
# Brokers of 1, 2, ... workers run at once on one PostgreSQL schema (SQLite serves one worker),
# each on its own port; their retry-path phases alternate in rotating rounds. The retry path
# (a token already exchanged for the credential) keeps OpenBao out of the figure: what scales,
# or not, is the broker, its store and the machine's CPUs.

WORKERS_SECTION = "11 workers (retry path, c=32, PostgreSQL)"
SCALING_SECTION = "workers scaling (retry path, PostgreSQL)"


def _label(workers: int) -> str:
    return f"{workers} worker" + ("s" if workers > 1 else "")


def _curve(
    stack: Stack,
    tokens: Sequence[str],
    token_index: int,
    counts: Sequence[int],
    plan: Plan,
    connections: int,
) -> dict[int, Totals]:
    """The retry path's rate and CPU per request of a broker of each of ``counts`` workers."""
    store_url = stack.postgres_store_url()
    database_pid = local_server_pid(stack.postgres_url)
    policy = stack.main_policy()
    loads: list[Load] = []
    brokers: list[Broker] = []
    for workers in counts:
        broker = stack.start_broker(
            f"workers-{workers}",
            [stack.env0_issuer()],
            store_url=store_url,
            workers=workers,
            organizations=policy["organizations"],
            credentials=policy["credentials"],
            assignments=policy["assignments"],
        )
        # One token again and again: the first request (in the warm-up) issues it, every later
        # one is a retry answered from its lease, whichever broker and worker it reaches.
        target = via_broker(_label(workers), broker, VAULT_PASSTHROUGH)
        tokens_of = wrk.Tokens("fixed", token_index, token_index + 1)
        loads.append(Load(target, tokens_of, broker.pid, database_pid))
        brokers.append(broker)
    totals = run_rounds(tokens, loads, connections, plan.phase_seconds, plan.rounds)
    for broker in brokers:
        broker.server.stop()
    return {workers: totals[_label(workers)] for workers in counts}


def _busy_scaling(stack: Stack, cpu_ms: float, plan: Plan) -> tuple[Totals, Totals]:
    """A server spending ``cpu_ms`` per request, one process and then two on one port, in
    rotating rounds: what this machine gives a second process of a server of that cost."""
    loads = []
    servers = []
    for processes in (1, 2):
        url, server = stack.start_busy(f"busy-{processes}", cpu_ms, processes)
        target = wrk.Target(f"busy, {processes}", url, body=hello_target(stack).body)
        loads.append(Load(target, wrk.NO_TOKEN, server.pid))
        servers.append(server)
    totals = run_rounds([], loads, CONCURRENCY, plan.phase_seconds, plan.rounds)
    for server in servers:
        server.stop()
    return totals["busy, 1"], totals["busy, 2"]


def measure_workers(stack: Stack, pool: Pool, plan: Plan) -> list[Row]:
    """The retry path of a broker of ``--workers 2`` against one of a single worker, and a
    server of one worker's CPU per request (and no database) in two processes against one."""
    curve = _curve(stack, pool.tokens, pool.retry, (1, 2), plan, CONCURRENCY)
    one, two = curve[1], curve[2]
    busy_one, busy_two = _busy_scaling(stack, one.cpu_ms, plan)
    database = (
        f"; PostgreSQL's CPU {one.database_ms:.3f} -> {two.database_ms:.3f} ms/req"
        if two.database_seconds
        else ""
    )
    rows = [
        _ratio_row(
            WORKERS_SECTION,
            "retry path, --workers 2 / 1 worker rate",
            two.rate / one.rate,
            WORKERS_TARGET,
            f"{one.rate:,.0f} -> {two.rate:,.0f} req/s, broker CPU {one.cpu_ms:.3f} -> "
            f"{two.cpu_ms:.3f} ms/req{database}; machine CPUs busy {one.machine_cpus:.2f} -> "
            f"{two.machine_cpus:.2f} of {os.cpu_count()}",
            {"one_worker": one.data(), "two_workers": two.data()},
            at_least=True,
        ),
        Row(
            WORKERS_SECTION,
            "a server of one worker's CPU per request, 2 processes / 1 rate",
            busy_two.rate / busy_one.rate,
            "x",
            context=f"{busy_one.rate:,.0f} -> {busy_two.rate:,.0f} req/s, its CPU "
            f"{busy_one.cpu_ms:.3f} -> {busy_two.cpu_ms:.3f} ms/req (a busy loop of "
            f"{one.cpu_ms:.3f} ms, no database); machine CPUs busy "
            f"{busy_one.machine_cpus:.2f} -> {busy_two.machine_cpus:.2f}",
            data={"one_process": busy_one.data(), "two_processes": busy_two.data()},
        ),
    ]
    if two.database_seconds:
        # The machine's CPUs of the two-worker phases, spent at one worker's broker and
        # PostgreSQL CPU per request (wrk and the rest as they were): the rate they would
        # carry if a second worker added nothing per request.
        rest = two.machine_ms - two.cpu_ms - two.database_ms
        at_one_workers_cost = two.machine_cpus * 1000 / (one.cpu_ms + one.database_ms + rest)
        rows.append(
            Row(
                WORKERS_SECTION,
                "retry path, the CPUs of 2 workers at 1 worker's cost per request / 1 worker rate",
                at_one_workers_cost / one.rate,
                "x",
                context=f"{one.rate:,.0f} -> {at_one_workers_cost:,.0f} req/s: "
                f"{two.machine_cpus:.2f} CPUs at {one.cpu_ms:.3f} (broker) + "
                f"{one.database_ms:.3f} (PostgreSQL) + {rest:.3f} (wrk, the rest) ms/req; "
                f"measured at 2 workers {two.machine_ms:.3f} ms/req",
                data={},
            )
        )
    return rows


def measure_scaling(stack: Stack, tokens: Sequence[str], max_workers: int, plan: Plan) -> list[Row]:
    """One row per worker count, 1..``max_workers``: its rate against one worker's (the first
    of ``tokens`` retried)."""
    counts = list(range(1, max_workers + 1))
    curve = _curve(stack, tokens, 0, counts, plan, CONCURRENCY * max(1, max_workers // 2))
    one = curve[1]
    return [
        Row(
            SCALING_SECTION,
            f"{_label(workers)} / 1 worker rate",
            curve[workers].rate / one.rate,
            "x",
            context=f"{curve[workers].rate:,.0f} req/s, "
            f"{curve[workers].rate / one.rate / workers:.2f}x per worker, "
            f"broker CPU {curve[workers].cpu_ms:.3f} ms/req",
            data=curve[workers].data(),
        )
        for workers in counts
    ]


def _issued(broker: Broker) -> int:
    """How many exchanges ``broker`` answered with a fresh issue (its reuse window's misses,
    from ``/metrics``)."""
    with urllib.request.urlopen(f"{broker.url}/metrics", timeout=10) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tokenbroker_cache_misses_total" and sample.labels == {
                "cache": "issued"
            }:
                return int(sample.value)
    return 0
