"""The load generator: wrk in its own process, driven by ``bench/wrk.lua``.

A Target says where its POSTs go and how a token goes into them; the tokens are minted before
any timing, and ``run`` writes the ones a phase may use to a file for the script (one a line).
``run`` starts wrk for one phase, bounded in time (whole seconds: wrk's unit) and optionally in
count, and reads back what the script's ``done()`` wrote: requests completed, statuses, latency
percentiles and, when asked, every latency value with its count (medians over several phases).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

SCRIPT = Path(__file__).with_name("wrk.lua")
TOKEN_PLACEHOLDER = "@TOKEN@"
TokenUse = Literal["fresh", "cycle", "fixed", "none"]
_TIMEOUT_SECONDS = 10
_THREADS = 1


@dataclass(frozen=True)
class Tokens:
    """Which tokens of the pool (``start:stop``) a phase sends.

    ``fresh``: the next unused token for every request (wrk stops when ``start:stop`` runs
    out, so a broker never answers from its reuse window); ``cycle``: round ``start:stop``
    again and again; ``fixed``: always token ``start``; ``none``: no token.
    """

    use: TokenUse = "none"
    start: int = 0
    stop: int = 0


NO_TOKEN = Tokens()


@dataclass(frozen=True)
class Target:
    """One kind of request: a POST to ``url``; ``TOKEN_PLACEHOLDER`` in ``body`` is replaced
    by the token, and with ``bearer`` the token also goes into ``Authorization``."""

    label: str
    url: str
    body: str = ""
    content_type: str = "application/json"
    bearer: bool = False
    expect_status: int = 200
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Phase:
    """What one wrk run measured."""

    label: str
    requests: int
    seconds: float
    sent: int
    expected: int
    statuses: dict[int, int]
    errors: dict[str, int]
    p50_us: float
    p99_us: float
    exhausted: bool
    histogram: Counter[int] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_binary() -> str:
    """The wrk executable; an error naming the package when it is missing."""
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk; make bench)")
    return found


def run(
    target: Target,
    pool: Sequence[str],
    tokens: Tokens,
    connections: int,
    seconds: int,
    *,
    max_requests: int | None = None,
    histogram: bool = False,
) -> Phase:
    """Run wrk for one phase against ``target`` and return what it measured."""
    if tokens.use != "none" and tokens.stop <= tokens.start:
        raise RuntimeError(f"{target.label}: no tokens left in its range of the pool")
    with tempfile.TemporaryDirectory(prefix="wrk-") as scratch:
        out = Path(scratch) / "done.txt"
        token_file = Path(scratch) / "tokens.txt"
        stop = tokens.start + 1 if tokens.use == "fixed" else tokens.stop
        token_file.write_text("".join(f"{token}\n" for token in pool[tokens.start : stop]))
        arguments = [
            f"out={out}",
            f"threads={_THREADS}",
            f"tokens={token_file}",
            f"mode={tokens.use}",
            f"body={target.body}",
            f"content_type={target.content_type}",
            f"bearer={1 if target.bearer else 0}",
            f"expect={target.expect_status}",
            f"histogram={1 if histogram else 0}",
            *(f"header:{name}={value}" for name, value in target.headers),
        ]
        if max_requests is not None:
            arguments.append(f"max={max_requests}")
        completed = subprocess.run(
            [
                wrk_binary(),
                f"-t{_THREADS}",
                f"-c{connections}",
                f"-d{seconds}s",
                f"--timeout={_TIMEOUT_SECONDS}s",
                "-s",
                str(SCRIPT),
                target.url,
                "--",
                *arguments,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"wrk failed on {target.label} (exit {completed.returncode}): "
                f"{completed.stderr.strip() or completed.stdout.strip()}"
            )
        return _parsed(target, out.read_text().splitlines())


def _parsed(target: Target, lines: Iterable[str]) -> Phase:
    values: dict[str, float] = {}
    statuses: Counter[int] = Counter()
    latencies: Counter[int] = Counter()
    sent, exhausted = 0, False
    for line in lines:
        key, *rest = line.split()
        if key == "status":
            statuses[int(rest[0])] += int(rest[1])
        elif key == "latency":
            latencies[int(float(rest[0]))] += int(float(rest[1]))
        elif key == "sent":
            sent += int(float(rest[0]))
        elif key == "exhausted":
            exhausted = True
        else:
            values[key] = float(rest[0])
    requests = int(values["requests"])
    errors = {
        key.removeprefix("error_"): int(value)
        for key, value in values.items()
        if key.startswith("error_")
    }
    if target.expect_status == 200:
        # wrk counts statuses over 399 itself; without response() it sees no other.
        expected = requests - errors.get("status", 0)
    else:
        expected = statuses.get(target.expect_status, 0)
    return Phase(
        label=target.label,
        requests=requests,
        seconds=values["duration_us"] / 1e6,
        sent=sent,
        expected=expected,
        statuses=dict(statuses),
        errors=errors,
        p50_us=values["p50_us"],
        p99_us=values["p99_us"],
        exhausted=exhausted,
        histogram=latencies,
    )


def checked(phase: Phase) -> Phase:
    """``phase``, or an error when more than 1% of its requests failed or got another status."""
    failed = (
        phase.requests
        - phase.expected
        + sum(count for name, count in phase.errors.items() if name != "status")
    )
    if phase.requests == 0 or failed > phase.requests // 100:
        raise RuntimeError(
            f"{phase.label}: {phase.requests} completed, {failed} failed "
            f"(statuses {phase.statuses or 'not counted'}, errors {phase.errors})"
        )
    return phase


def median_ms(histogram: Counter[int]) -> float:
    """The median of latency values (microseconds, with their counts), in milliseconds."""
    return _quantile(histogram, 0.5) / 1000


def p99_ms(histogram: Counter[int]) -> float:
    """The 99th percentile of latency values, in milliseconds."""
    return _quantile(histogram, 0.99) / 1000


def _quantile(histogram: Counter[int], fraction: float) -> float:
    total = sum(histogram.values())
    if total == 0:
        return float("nan")
    seen = 0
    for value, count in sorted(histogram.items()):
        seen += count
        if seen >= fraction * total:
            return float(value)
    return float(max(histogram))
