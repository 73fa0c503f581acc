"""One row per figure: a ratio (or difference) measured side by side, its target, its context."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One figure of the table.

    ``value`` is what is judged: a ratio (``unit="x"``) or a difference (``"ms"``, ``"MB"``),
    measured in the same run as what it is compared with; ``"ms each"`` is an absolute time
    (a yardstick, reported only). ``passed`` is None when the figure
    has no target. ``context`` holds the absolute numbers it came from, for reading only.
    """

    section: str
    name: str
    value: float
    unit: str
    target: str = ""
    passed: bool | None = None
    context: str = ""
    data: dict[str, object] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """PASS, FAIL, or ``report`` (no target)."""
        if self.passed is None:
            return "report"
        return "PASS" if self.passed else "FAIL"

    @property
    def shown(self) -> str:
        """The judged value as printed."""
        if self.unit == "x":
            return f"{self.value:.2f}x"
        if self.unit == "ms each":
            return f"{self.value:.3f} ms"
        return f"{self.value:+.2f} {self.unit}"


def at_most(value: float, bound: float) -> bool:
    """The target ``value <= bound``."""
    return value <= bound


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of samples (0.99 for p99), by the inclusive method."""
    if len(samples) < 2:
        return samples[0] if samples else float("nan")
    cut = statistics.quantiles(samples, n=1000, method="inclusive")
    return cut[round(fraction * 1000) - 1]


def table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width text table, grouped by section."""
    headers = ("measurement", "result", "target", "verdict", "context (absolute numbers)")
    cells = [(r.name, r.shown, r.target or "-", r.verdict, r.context) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers[:4])]
    lines: list[str] = []

    def line(values: Sequence[str]) -> str:
        fixed = "  ".join(v.ljust(w) for v, w in zip(values[:4], widths, strict=True))
        return f"{fixed}  {values[4]}".rstrip()

    lines.append(line(headers))
    lines.append(line(["-" * w for w in widths] + ["-" * 26]))
    section = None
    for row, cell in zip(rows, cells, strict=True):
        if row.section != section:
            section = row.section
            lines.append(f"[{section}]")
        lines.append(line(cell))
    passed = sum(1 for r in rows if r.passed is True)
    failed = sum(1 for r in rows if r.passed is False)
    lines.append(f"targets: {passed} PASS, {failed} FAIL")
    return "\n".join(lines)


def machine() -> dict[str, object]:
    """What the numbers were measured on: CPUs and the load on them."""
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
    }


def write_json(
    rows: Sequence[Row], directory: Path, settings: dict[str, object], started: datetime
) -> Path:
    """Write the run as ``<directory>/<timestamp>.json``; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    document = {
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "settings": settings,
        "machine": machine(),
        "rows": [{**asdict(r), "verdict": r.verdict} for r in rows],
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return path
