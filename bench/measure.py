"""The measurements over the network: overhead, ceiling, growth, memory, workers.

Every comparison is made in one run: at concurrency 1 the compared targets alternate request by
request inside one job; at concurrency 32 they run as alternating phases of equal length. Load
comes from the LoadWorker process; the brokers, OpenBao, moto and the hello-world run in theirs.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import store_growth
from bench.load import (
    TOKEN_PLACEHOLDER,
    Job,
    JobResult,
    LoadPool,
    LoadWorker,
    Target,
    TargetResult,
    Tokens,
)
from bench.procs import rss_kib, tree_cpu_seconds
from bench.report import Row, at_most, percentile
from bench.stack import (
    AWS,
    PASSTHROUGH_PATH,
    ROLE,
    ROLE_ARN,
    VAULT_MINT,
    VAULT_PASSTHROUGH,
    Broker,
    Stack,
)

CONCURRENCY = 32
OVERHEAD_TARGET_MS = 0.5
THROUGHPUT_TARGET = 0.8
CEILING_TARGET = 0.4
GROWTH_TARGET = 1.1
MEMORY_TARGET_MB = 20.0
WORKERS_TARGET = 1.5
_WARMUP_C1 = 20
_WARMUP_C32 = 2 * CONCURRENCY
_MANY_ISSUERS = 200


@dataclass(frozen=True)
class Plan:
    """Sample counts and durations; ``quick()`` is the ~2 minute version."""

    latency_samples: int = 1000
    # Short phases, many rounds, the order rotating: this machine's load drifts within
    # seconds, and a drift then falls on every target alike instead of on one phase.
    throughput_seconds: float = 2.0
    throughput_tokens: int = 2500
    rounds: int = 4
    ceiling_rounds: int = 10
    ceiling_seconds: float = 2.0
    validation_calls: int = 4000
    growth_samples: int = 1000
    store_growth_iterations: int = 2000
    memory_exchanges: int = 100_000

    @classmethod
    def quick(cls) -> Plan:
        """Fewer samples, shorter phases: for a look, not for the README."""
        return cls(
            latency_samples=300,
            throughput_seconds=1.0,
            throughput_tokens=1200,
            rounds=2,
            ceiling_rounds=2,
            ceiling_seconds=1.0,
            validation_calls=1000,
            growth_samples=300,
            store_growth_iterations=500,
            memory_exchanges=20_000,
        )

    @property
    def c1_tokens(self) -> int:
        """Tokens the concurrency-1 job uses (warm-up included)."""
        return _WARMUP_C1 + self.latency_samples

    @property
    def token_pool(self) -> int:
        """Distinct platform tokens to mint before any timing."""
        return self.c1_tokens + self.rounds * self.throughput_tokens


# -- targets -------------------------------------------------------------------------------


def vault_direct(stack: Stack, tokens: Tokens) -> Target:
    """An OpenBao JWT login with the platform token, straight to OpenBao."""
    body = json.dumps({"role": ROLE, "jwt": TOKEN_PLACEHOLDER})
    url = f"{stack.openbao.address}/v1/auth/{PASSTHROUGH_PATH}/login"
    return Target("vault direct", url, body=body, tokens=tokens)


def sts_direct(stack: Stack, tokens: Tokens) -> Target:
    """moto STS AssumeRoleWithWebIdentity with the platform token, straight to moto."""
    body = (
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15"
        f"&RoleArn={ROLE_ARN}&RoleSessionName=bench&DurationSeconds=3600"
        f"&WebIdentityToken={TOKEN_PLACEHOLDER}"
    )
    return Target(
        "sts direct",
        f"{stack.moto_url}/",
        body=body,
        content_type="application/x-www-form-urlencoded",
        tokens=tokens,
    )


def via_broker(
    label: str, broker: Broker, credential: str, tokens: Tokens, *, dry_run: bool = False
) -> Target:
    """``POST /v1/exchange`` of a broker for ``credential``."""
    url = broker.exchange_url + ("?dry_run=true" if dry_run else "")
    body = json.dumps({"credential": credential})
    return Target(label, url, body=body, bearer=True, tokens=tokens)


# -- helpers -------------------------------------------------------------------------------


def _ms(samples_ns: Sequence[int], fraction: float | None = None) -> float:
    if fraction is None:
        return statistics.median(samples_ns) / 1e6
    return percentile(samples_ns, fraction) / 1e6


def _checked(result: JobResult) -> JobResult:
    for target in result.targets.values():
        if target.count == 0 or target.errors > target.count // 100:
            raise RuntimeError(
                f"{target.label}: {target.count} ok, {target.errors} failed; "
                f"first failure: {target.first_error}"
            )
    return result


def _latency_context(base: TargetResult, other: TargetResult) -> str:
    return (
        f"median {_ms(base.latencies_ns):.2f} -> {_ms(other.latencies_ns):.2f} ms, "
        f"p99 {_ms(base.latencies_ns, 0.99):.2f} -> {_ms(other.latencies_ns, 0.99):.2f} ms "
        f"(n={other.count})"
    )


def _latency_data(result: TargetResult) -> dict[str, object]:
    return {
        "median_ms": round(_ms(result.latencies_ns), 3),
        "p99_ms": round(_ms(result.latencies_ns, 0.99), 3),
        "samples": result.count,
    }


@dataclass
class _Throughput:
    count: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_seconds / self.count if self.count else 0.0


def _run_round(
    worker: LoadWorker | LoadPool,
    phases: Sequence[tuple[Target, int | None, int]],
    seconds: float,
    round_index: int,
    totals: dict[str, _Throughput],
) -> None:
    """Run each (target, pid to count CPU of, max requests) alone at c=32 per load process,
    adding to ``totals``. A pid's CPU includes its descendants' (a supervisor's workers).

    Round ``round_index`` starts that many phases in: the order rotates from round to round.
    """
    shift = round_index % len(phases)
    for target, pid, count in [*phases[shift:], *phases[:shift]]:
        cpu_before = tree_cpu_seconds(pid) if pid is not None else 0.0
        result = _checked(
            worker.run(Job((target,), CONCURRENCY, count, seconds, warmup=_WARMUP_C32))
        )
        total = totals.setdefault(target.label, _Throughput())
        total.count += result.targets[target.label].count
        total.seconds += result.elapsed_seconds
        if pid is not None:
            total.cpu_seconds += tree_cpu_seconds(pid) - cpu_before


def _rate_context(base: _Throughput, other: _Throughput, backend: str = "") -> str:
    context = f"{base.rate:,.0f} -> {other.rate:,.0f} req/s"
    if backend and base.cpu_seconds:
        context += f", {backend} CPU {base.cpu_ms_per_request:.2f} ms/req direct"
    if other.cpu_seconds:
        context += f", broker CPU {other.cpu_ms_per_request:.2f} ms/req"
    return context


def _rate_data(result: _Throughput) -> dict[str, object]:
    data: dict[str, object] = {
        "requests": result.count,
        "seconds": round(result.seconds, 3),
        "rate": round(result.rate, 1),
    }
    if result.cpu_seconds:
        data["cpu_ms_per_request"] = round(result.cpu_ms_per_request, 3)  # of that side's server
    return data


# -- 1. overhead over the direct call ------------------------------------------------------


def measure_overhead(stack: Stack, worker: LoadWorker, plan: Plan) -> list[Row]:
    """Direct OpenBao login / moto STS vs the same through the broker, c=1 and c=32."""
    broker = stack.brokers["main"]
    section = "1 overhead over the direct call"
    # One fresh token per request: the broker must call the backend every time, never
    # answer from its idempotent-retry cache. Cache keys include the credential, so the
    # three broker targets may share tokens; OpenBao and moto do not care about reuse.
    fresh = Tokens("fresh", 0, plan.c1_tokens)
    c1 = _checked(
        worker.run(
            Job(
                (
                    vault_direct(stack, fresh),
                    via_broker("vault passthrough", broker, VAULT_PASSTHROUGH, fresh),
                    via_broker("vault mint", broker, VAULT_MINT, fresh),
                    sts_direct(stack, fresh),
                    via_broker("sts via broker", broker, AWS, fresh),
                ),
                concurrency=1,
                max_count=plan.latency_samples,
                max_seconds=600,
                warmup=_WARMUP_C1,
            )
        )
    )
    rows: list[Row] = []
    direct = c1.targets["vault direct"]
    for label in ("vault passthrough", "vault mint"):
        through = c1.targets[label]
        extra = _ms(through.latencies_ns) - _ms(direct.latencies_ns)
        rows.append(
            Row(
                section,
                f"vault login c=1, {label.split()[1]}: median extra",
                extra,
                "ms",
                f"<= +{OVERHEAD_TARGET_MS} ms",
                at_most(extra, OVERHEAD_TARGET_MS),
                f"{_ms(through.latencies_ns) / _ms(direct.latencies_ns):.2f}x; "
                + _latency_context(direct, through),
                {"direct": _latency_data(direct), "broker": _latency_data(through)},
            )
        )
    sts, sts_broker = c1.targets["sts direct"], c1.targets["sts via broker"]
    rows.append(
        Row(
            section,
            "moto STS c=1: median extra",
            _ms(sts_broker.latencies_ns) - _ms(sts.latencies_ns),
            "ms",
            context=f"{_ms(sts_broker.latencies_ns) / _ms(sts.latencies_ns):.2f}x; "
            + _latency_context(sts, sts_broker),
            data={"direct": _latency_data(sts), "broker": _latency_data(sts_broker)},
        )
    )

    totals: dict[str, _Throughput] = {}
    for round_index in range(plan.rounds):
        start = plan.c1_tokens + round_index * plan.throughput_tokens
        chunk = Tokens("fresh", start, start + plan.throughput_tokens)
        everywhere = Tokens("cycle", 0, plan.token_pool)
        # Fresh tokens are finite: a broker phase may end on count before time (still a rate).
        limit, unlimited = plan.throughput_tokens - _WARMUP_C32, 10**9
        # The backends' own CPU per request too, in the direct phases: what the broker's
        # CPU per request is to be weighed against on a machine they share.
        phases: list[tuple[Target, int | None, int]] = [
            (vault_direct(stack, everywhere), stack.openbao.pid, unlimited),
            (
                via_broker("vault passthrough", broker, VAULT_PASSTHROUGH, chunk),
                broker.pid,
                limit,
            ),
            (via_broker("vault mint", broker, VAULT_MINT, chunk), broker.pid, limit),
            (sts_direct(stack, everywhere), stack.moto.pid if stack.moto else None, unlimited),
            (via_broker("sts via broker", broker, AWS, chunk), broker.pid, limit),
        ]
        _run_round(worker, phases, plan.throughput_seconds, round_index, totals)
    for label, base_label, judged, backend in (
        ("vault passthrough", "vault direct", True, "OpenBao"),
        ("vault mint", "vault direct", True, "OpenBao"),
        ("sts via broker", "sts direct", False, "moto"),
    ):
        base, other = totals[base_label], totals[label]
        ratio = other.rate / base.rate
        name = (
            f"vault login c={CONCURRENCY}, {label.split()[1]}: throughput"
            if judged
            else f"moto STS c={CONCURRENCY}: throughput"
        )
        rows.append(
            Row(
                section,
                name,
                ratio,
                "x",
                f">= {THROUGHPUT_TARGET}x" if judged else "",
                ratio >= THROUGHPUT_TARGET if judged else None,
                _rate_context(base, other, backend),
                {"direct": _rate_data(base), "broker": _rate_data(other)},
            )
        )
    return rows


# -- 2. the ceiling ------------------------------------------------------------------------


def measure_ceiling(stack: Stack, worker: LoadWorker, plan: Plan) -> list[Row]:
    """aiohttp hello-world vs the broker's idempotent-retry path and dry-run, at c=32."""
    broker = stack.brokers["main"]
    hello = Target("hello-world", stack.hello_url)
    # Token 0 was exchanged for this credential during the overhead runs: every request
    # here is a retry answered from the cache (validation, policy, audit; no backend call).
    fixed = Tokens("fixed", 0)
    retry = via_broker("retry path", broker, VAULT_PASSTHROUGH, fixed)
    dry = via_broker("dry run", broker, VAULT_PASSTHROUGH, fixed, dry_run=True)
    totals: dict[str, _Throughput] = {}
    phases: list[tuple[Target, int | None, int]] = [
        (hello, None, 10**9),
        (retry, broker.pid, 10**9),
        (dry, broker.pid, 10**9),
    ]
    for round_index in range(plan.ceiling_rounds):
        _run_round(worker, phases, plan.ceiling_seconds, round_index, totals)
    base = totals["hello-world"]
    rows = []
    for label, judged in (("retry path", True), ("dry run", False)):
        ratio = totals[label].rate / base.rate
        rows.append(
            Row(
                "2 the ceiling (c=32)",
                f"{label} / aiohttp hello-world rate",
                ratio,
                "x",
                f">= {CEILING_TARGET}x" if judged else "",
                ratio >= CEILING_TARGET if judged else None,
                _rate_context(base, totals[label]),
                {"hello_world": _rate_data(base), "broker": _rate_data(totals[label])},
            )
        )
    return rows


# -- 4. growth -----------------------------------------------------------------------------


async def _filled(path: Path, total: int) -> None:
    store = await store_growth._fill(path, total)
    await store.close()


def measure_growth(stack: Stack, worker: LoadWorker, plan: Plan, token_index: int) -> list[Row]:
    """Dry-run exchange latency with 10 vs 100,000 assignments, 1 vs 200 issuers (c=1).

    The stores are filled by ``bench.store_growth`` (its organization, project and credential
    names); ``token_index`` is a token of that organization and project in the worker's pool.
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
    fixed = Tokens("fixed", token_index)
    result = _checked(
        worker.run(
            Job(
                tuple(
                    via_broker(name, broker, "cred-0", fixed, dry_run=True)
                    for name, broker in brokers.items()
                ),
                concurrency=1,
                max_count=plan.growth_samples,
                max_seconds=600,
                warmup=_WARMUP_C1,
            )
        )
    )
    for broker in brokers.values():
        broker.server.stop()
    small = result.targets["small"]
    rows = []
    for label, name, judged in (
        ("large", f"dry-run exchange, {store_growth.LARGE_TOTAL:,} / 10 assignments", True),
        ("issuers", f"dry-run exchange, {_MANY_ISSUERS} / 1 trusted issuers", False),
    ):
        other = result.targets[label]
        ratio = _ms(other.latencies_ns) / _ms(small.latencies_ns)
        rows.append(
            Row(
                "4 growth (c=1, median latency)",
                name,
                ratio,
                "x",
                f"<= {GROWTH_TARGET}x" if judged else "",
                at_most(ratio, GROWTH_TARGET) if judged else None,
                _latency_context(small, other),
                {"baseline": _latency_data(small), "grown": _latency_data(other)},
            )
        )
    lookup = asyncio.run(store_growth.run(plan.store_growth_iterations))
    rows.append(
        Row(
            "4 growth (c=1, median latency)",
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


# -- 5. memory -----------------------------------------------------------------------------


def measure_memory(stack: Stack, worker: LoadWorker, plan: Plan) -> list[Row]:
    """Broker RSS before and after ``plan.memory_exchanges`` retry-path exchanges."""
    broker = stack.brokers["main"]
    # Retries of the tokens exchanged in the c=1 runs, round-robin: each answered from the
    # idempotent-retry cache, with validation, policy lookups and an audit row every time.
    target = via_broker(
        "memory",
        broker,
        VAULT_PASSTHROUGH,
        Tokens("cycle", _WARMUP_C1, plan.c1_tokens),
    )
    before = rss_kib(broker.pid)
    result = _checked(
        worker.run(Job((target,), CONCURRENCY, plan.memory_exchanges, max_seconds=420))
    )
    after = rss_kib(broker.pid)
    count = result.targets["memory"].count
    grown_mb = (after - before) / 1024
    return [
        Row(
            "5 memory",
            f"broker RSS growth over {count:,} retry-path exchanges",
            grown_mb,
            "MB",
            f"< {MEMORY_TARGET_MB:.0f} MB",
            grown_mb < MEMORY_TARGET_MB,
            f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MB in {result.elapsed_seconds:.0f} s "
            f"({count / result.elapsed_seconds:,.0f} req/s)",
            {
                "rss_before_kib": before,
                "rss_after_kib": after,
                "exchanges": count,
                "path": "idempotent retry (cache hit), distinct tokens round-robin",
            },
        )
    ]


# -- 6. workers ----------------------------------------------------------------------------
# Brokers of 1, 2, ... workers run at once on one PostgreSQL schema (SQLite serves one worker),
# each on its own port; their retry-path phases alternate in rotating rounds like the
# ceiling's. The retry path (a token already exchanged for the credential) keeps OpenBao out
# of the figure: what scales, or not, is the broker, its store and the machine's CPUs.

WORKERS_SECTION = "6 workers (retry path, c=32, PostgreSQL)"
SCALING_SECTION = "workers scaling (retry path, PostgreSQL)"


def _label(workers: int) -> str:
    return f"{workers} worker" + ("s" if workers > 1 else "")


def _curve(
    stack: Stack,
    load: LoadWorker | LoadPool,
    counts: Sequence[int],
    rounds: int,
    seconds: float,
) -> dict[int, _Throughput]:
    """The retry path's rate and CPU per request of a broker of each of ``counts`` workers."""
    policy = stack.main_policy()
    store_url = stack.postgres_store_url()
    phases: list[tuple[Target, int | None, int]] = []
    brokers: list[Broker] = []
    for workers in counts:
        broker = stack.start_broker(
            f"workers-{workers}",
            [stack.env0_issuer()],
            store_url=store_url,
            organizations=policy["organizations"],
            credentials=policy["credentials"],
            assignments=policy["assignments"],
            workers=workers,
        )
        # Token 0 again and again: the first request (in the warm-up) issues it, every later
        # one is a retry answered from its lease, whichever broker and worker it reaches.
        target = via_broker(_label(workers), broker, VAULT_PASSTHROUGH, Tokens("fixed", 0))
        phases.append((target, broker.pid, 10**9))
        brokers.append(broker)
    totals: dict[str, _Throughput] = {}
    for round_index in range(rounds):
        _run_round(load, phases, seconds, round_index, totals)
    for broker in brokers:
        broker.server.stop()
    return {workers: totals[_label(workers)] for workers in counts}


def measure_workers(stack: Stack, worker: LoadWorker, plan: Plan) -> list[Row]:
    """The retry path of a broker of ``--workers 2`` against one of a single worker."""
    curve = _curve(stack, worker, (1, 2), plan.ceiling_rounds, plan.ceiling_seconds)
    one, two = curve[1], curve[2]
    ratio = two.rate / one.rate
    return [
        Row(
            WORKERS_SECTION,
            "retry path, --workers 2 / 1 worker rate",
            ratio,
            "x",
            f">= {WORKERS_TARGET}x",
            ratio >= WORKERS_TARGET,
            _rate_context(one, two),
            {"one_worker": _rate_data(one), "two_workers": _rate_data(two)},
        )
    ]


def measure_scaling(stack: Stack, load: LoadPool, max_workers: int, plan: Plan) -> list[Row]:
    """One row per worker count, 1..``max_workers``: its rate against one worker's."""
    counts = list(range(1, max_workers + 1))
    curve = _curve(stack, load, counts, plan.ceiling_rounds, plan.ceiling_seconds)
    one = curve[1]
    return [
        Row(
            SCALING_SECTION,
            f"{_label(workers)} / 1 worker rate",
            curve[workers].rate / one.rate,
            "x",
            context=f"{curve[workers].rate:,.0f} req/s, "
            f"{curve[workers].rate / one.rate / workers:.2f}x per worker, "
            f"broker CPU {curve[workers].cpu_ms_per_request:.2f} ms/req",
            data=_rate_data(curve[workers]),
        )
        for workers in counts
    ]
