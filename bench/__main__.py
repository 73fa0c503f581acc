"""``python -m bench`` (``make bench``): the whole benchmark, one table, one JSON file.

Starts the local stack (dev platform issuer, OpenBao, moto, brokers, a hello-world, the floor
servers), each server in its own process, mints the platform tokens, then measures with wrk:
the broker's CPU per proxied login and per retry against a hello-world's and OpenBao's, the c=1
extra over a direct login, refused requests, PostgreSQL + Redis, an A/B against another
revision; then validation cost, growth, memory, and one broker of two workers against one of a
single worker. Every judged figure is a ratio of two things measured in this run. ``--quick``
takes a few minutes. ``--workers-scaling`` measures only the curve of 1..``--max-workers``
workers instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from joserfc.jwk import RSAKey

from bench import store_growth, wrk
from bench.measure import (
    Plan,
    Pool,
    measure_growth,
    measure_main,
    measure_memory,
    measure_scaling,
    measure_workers,
    start_extras,
)
from bench.report import Row, table, write_json
from bench.stack import DEFAULT_POSTGRES_URL, DEFAULT_REDIS_URL, Stack
from bench.validation import measure_validation

RESULTS_DIR = Path(__file__).parent / "results"
SECTIONS = ("main", "validation", "growth", "memory", "workers")
# Before the redesign and leases (issue 14's "before"); --baseline-rev '' skips the A/B.
DEFAULT_BASELINE = "ba92040"


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(
    plan: Plan,
    sections: tuple[str, ...],
    keep_logs: Path | None,
    store_url: str | None,
    event_loop: str = "auto",
    postgres_url: str = DEFAULT_POSTGRES_URL,
    redis_url: str = DEFAULT_REDIS_URL,
    baseline_revision: str = DEFAULT_BASELINE,
) -> list[Row]:
    """Start the stack, run the chosen sections, return their rows (in section order)."""
    wrk.wrk_binary()
    rows: list[Row] = []
    _log("starting the stack (issuer, OpenBao, moto, hello-world, broker)")
    with Stack(
        log_dir=keep_logs,
        store_url=store_url,
        event_loop=event_loop,
        postgres_url=postgres_url,
    ) as stack:
        _log(f"minting {plan.token_pool:,} platform tokens (before any timing)")
        tokens = stack.mint_tokens(plan.token_pool)
        growth_token = len(tokens)
        tokens.append(
            stack.issuer.mint(
                "env0", org=store_growth._TARGET_ORG, project=store_growth._TARGET_PROJECT
            )
        )
        pool = Pool(plan, tokens)

        def main_section() -> list[Row]:
            _log(f"starting the other brokers (baseline: {baseline_revision or 'none'})")
            return measure_main(
                stack, pool, plan, start_extras(stack, baseline_revision, redis_url)
            )

        steps: dict[str, Callable[[], list[Row]]] = {
            "main": main_section,
            "validation": lambda: measure_validation(
                stack.issuer.issuer_settings("env0"),
                RSAKey.import_key(stack.issuer.signing_key("env0").as_dict(private=False)),
                tokens[:1000],
                plan.validation_calls,
            ),
            "growth": lambda: measure_growth(stack, pool, plan, growth_token),
            "memory": lambda: measure_memory(stack, pool, plan),
            "workers": lambda: measure_workers(stack, pool, plan),
        }
        for name in SECTIONS:
            if name in sections:
                _log(f"measuring {name}")
                started = time.monotonic()
                rows += steps[name]()
                _log(f"{name} done in {time.monotonic() - started:.0f} s")
    return sorted(rows, key=_section_number)


def _section_number(row: Row) -> int:
    number = row.section.split()[0]
    return int(number) if number.isdigit() else 0


def run_scaling(
    plan: Plan,
    max_workers: int,
    keep_logs: Path | None,
    event_loop: str,
    postgres_url: str,
) -> list[Row]:
    """The retry path of brokers of 1..``max_workers`` workers side by side: the curve."""
    wrk.wrk_binary()
    _log("starting the stack (issuer, OpenBao, moto, hello-world, broker)")
    with Stack(log_dir=keep_logs, event_loop=event_loop, postgres_url=postgres_url) as stack:
        _log(f"measuring 1..{max_workers} workers")
        return measure_scaling(stack, stack.mint_tokens(1), max_workers, plan)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write ``bench/results/<timestamp>.json``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (about 2 minutes)")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run"
    )
    parser.add_argument("--logs", type=Path, help="keep the servers' logs in this directory")
    parser.add_argument(
        "--store-url",
        help="the main broker's [store] url (default: SQLite in its data directory); "
        "the growth brokers always use SQLite",
    )
    parser.add_argument(
        "--event-loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="server.event_loop of the brokers, and the hello-world's loop (default: auto)",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="a PostgreSQL database for the brokers of several workers; they get a schema of "
        f"their own in it, dropped at the end (default: {DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument(
        "--workers-scaling",
        action="store_true",
        help="only the scaling curve: the retry path of brokers of 1..--max-workers workers",
    )
    parser.add_argument(
        "--max-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="the curve's last point (default: this machine's CPUs)",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"the Redis of the PostgreSQL + Redis broker's limits (default: {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--baseline-rev",
        default=DEFAULT_BASELINE,
        help="a git revision whose src runs as a second broker beside this checkout's (A/B of "
        f"CPU per proxied login and retry); '' for none (default: {DEFAULT_BASELINE})",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    started = datetime.now(UTC)
    if args.workers_scaling:
        rows = run_scaling(
            plan,
            args.max_workers,
            args.logs,
            args.event_loop,
            args.postgres_url,
        )
    else:
        rows = run(
            plan,
            tuple(args.only),
            args.logs,
            args.store_url,
            args.event_loop,
            args.postgres_url,
            args.redis_url,
            args.baseline_rev,
        )
    print(table(rows))
    path = write_json(
        rows,
        args.results,
        {
            "quick": args.quick,
            "sections": ["workers-scaling"] if args.workers_scaling else args.only,
            "max_workers": args.max_workers if args.workers_scaling else None,
            "redis_url": args.redis_url,
            "baseline_rev": args.baseline_rev,
            "postgres_url": args.postgres_url,
            "store_url": args.store_url or "sqlite (default)",
            "event_loop": args.event_loop,
            "plan": asdict(plan),
        },
        started,
    )
    print(f"written: {path}")
    return 1 if args.strict and any(row.passed is False for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
