"""Does resolving a credential stay flat as the store grows? 10 vs 100,000 assignments.

Run: ``python -m bench.store_growth [--iterations N] [--json-only]``. Two SQLite stores hold
the same target organization and project (three credentials assigned); the large one also holds
99,990 other assignments, half of them in the target organization. The exchange's lookup
(``find_organization`` + ``assigned_credentials``) is timed on both, interleaved so drift in the
machine hits both alike, and the medians are compared. Target: large / small <= 1.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenbroker.backends import registry
from tokenbroker.store import Store

SMALL_TOTAL = 10
LARGE_TOTAL = 100_000
TARGET_RATIO = 1.1
_ISSUER = "env0"
_TARGET_ORG = "target-org-uuid"
_TARGET_PROJECT = "project-target"
_CREDENTIALS_PER_ORG = 10
_OTHER_ORGS = 50
_SETTINGS = {"address": "https://vault.example.com", "role": "deploy"}


async def _add_organization(store: Store, name: str, platform_org_id: str) -> None:
    await store.policy.create_organization(name, _ISSUER, platform_org_id)
    for index in range(_CREDENTIALS_PER_ORG):
        await store.policy.create_credential(
            name, f"cred-{index}", "vault_oidc", settings=_SETTINGS
        )


def _filler(count: int, credentials: int) -> Iterator[tuple[str, str]]:
    # Whole projects of `credentials` assignments each, the last one partial.
    for index in range(count):
        yield f"project-{index // credentials}", f"cred-{index % credentials}"


async def _fill(path: Path, total: int) -> Store:
    store = await Store.open(f"sqlite+aiosqlite:///{path}", credential_types=registry.INSTALLED)
    await store.upgrade()
    await _add_organization(store, "target", _TARGET_ORG)
    target = [(_TARGET_PROJECT, f"cred-{index}") for index in range(3)]
    remaining = total - len(target)
    in_target = remaining if total <= SMALL_TOTAL else remaining // 2
    await store.policy.assign_many("target", [*target, *_filler(in_target, _CREDENTIALS_PER_ORG)])
    remaining -= in_target
    if remaining:
        per_org = -(-remaining // _OTHER_ORGS)
        for org in range(_OTHER_ORGS):
            count = min(per_org, remaining)
            if count <= 0:
                break
            name = f"other-{org}"
            await _add_organization(store, name, f"other-org-{org}")
            await store.policy.assign_many(name, _filler(count, _CREDENTIALS_PER_ORG))
            remaining -= count
    return store


async def _resolve_once(store: Store) -> int:
    start = time.perf_counter_ns()
    organization = await store.policy.find_organization(_ISSUER, _TARGET_ORG)
    assert organization is not None
    credentials = await store.policy.assigned_credentials(organization.id, _TARGET_PROJECT)
    elapsed = time.perf_counter_ns() - start
    assert [c.name for c in credentials] == ["cred-0", "cred-1", "cred-2"]
    return elapsed


async def _measure(stores: dict[str, Store], iterations: int) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in stores}
    for store in stores.values():
        for _ in range(100):  # warm the pool, the page cache and the statement cache
            await _resolve_once(store)
    # Alternate lookup by lookup, so a burst of load on the machine hits both stores alike.
    for _ in range(iterations):
        for name, store in stores.items():
            samples[name].append(await _resolve_once(store))
    return samples


@dataclass(frozen=True)
class GrowthReport:
    """One run's measurements; ``ratio`` is large / small of the median lookup latency."""

    iterations: int
    fill_seconds: float
    assignments: dict[str, int]
    median_us: dict[str, float]
    p90_us: dict[str, float]

    @property
    def ratio(self) -> float:
        """How much slower the lookup is with 100,000 assignments than with 10."""
        return self.median_us["large"] / self.median_us["small"]

    def as_json(self) -> dict[str, object]:
        """The report as printed JSON."""
        return {
            "benchmark": "store_growth",
            "lookup": "find_organization + assigned_credentials (SQLite)",
            "iterations": self.iterations,
            "fill_seconds": round(self.fill_seconds, 2),
            "assignments": self.assignments,
            "median_us": {k: round(v, 1) for k, v in self.median_us.items()},
            "p90_us": {k: round(v, 1) for k, v in self.p90_us.items()},
            "ratio_large_to_small": round(self.ratio, 3),
            "target_ratio": TARGET_RATIO,
            "within_target": self.ratio <= TARGET_RATIO,
        }

    def table(self) -> str:
        """The report as a small text table."""
        rows = [
            f"{name:<8}{self.assignments[name]:>14,}"
            f"{self.median_us[name]:>12.1f}{self.p90_us[name]:>10.1f}"
            for name in ("small", "large")
        ]
        verdict = "met" if self.ratio <= TARGET_RATIO else "NOT met"
        return "\n".join(
            [
                f"{'store':<8}{'assignments':>14}{'median µs':>12}{'p90 µs':>10}",
                *rows,
                f"ratio large/small: {self.ratio:.3f}x (target <= {TARGET_RATIO}x: {verdict})",
            ]
        )


async def run(iterations: int) -> GrowthReport:
    """Fill both stores, time the lookup on each, return the report."""
    with tempfile.TemporaryDirectory(prefix="tb-bench-") as directory:
        fill_started = time.perf_counter()
        stores = {
            "small": await _fill(Path(directory) / "small.db", SMALL_TOTAL),
            "large": await _fill(Path(directory) / "large.db", LARGE_TOTAL),
        }
        fill_seconds = time.perf_counter() - fill_started
        try:
            counts: dict[str, int] = {}
            for name, store in stores.items():
                async with store.reading() as repo:
                    counts[name] = await repo.count("assignments")
            samples = await _measure(stores, iterations)
        finally:
            for store in stores.values():
                await store.close()
    return GrowthReport(
        iterations=iterations,
        fill_seconds=fill_seconds,
        assignments=counts,
        median_us={name: statistics.median(v) / 1000 for name, v in samples.items()},
        p90_us={name: statistics.quantiles(v, n=10)[-1] / 1000 for name, v in samples.items()},
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table and the JSON report."""
    parser = argparse.ArgumentParser(prog="python -m bench.store_growth", description=__doc__)
    parser.add_argument("--iterations", type=int, default=2000, help="timed lookups per store")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON report")
    args = parser.parse_args(argv)
    report = asyncio.run(run(max(args.iterations, 100)))
    if not args.json_only:
        print(report.table())
    print(json.dumps(report.as_json(), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
