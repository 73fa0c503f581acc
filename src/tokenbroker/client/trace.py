"""The broker's dry-run decision trace, rendered for a person reading a CI log. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tokenbroker.client.broker import fix_for

PASS = "✓"
FAIL = "✗"
# Keys of a check that are its frame, not its data.
_FRAME_KEYS = frozenset({"check", "ok", "detail", "claims"})


def _value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if value is None:
        return "(absent)"
    return str(value)


def _mark(ok: object) -> str:
    return PASS if ok is True else FAIL


def _claim_lines(claims: object) -> list[str]:
    if not isinstance(claims, list):
        return []
    entries = [entry for entry in claims if isinstance(entry, Mapping)]
    width = max((len(str(entry.get("claim", ""))) for entry in entries), default=0)
    return [
        f"      {_mark(entry.get('matched'))} {entry.get('claim', '')!s:<{width}}  "
        f"expected {_value(entry.get('expected'))}, actual {_value(entry.get('actual'))}"
        for entry in entries
    ]


def render_trace(trace: Mapping[str, object]) -> str:
    """Each check with ✓/✗ and its detail; bound claims with expected vs actual; the verdict."""
    allowed = trace.get("allowed") is True
    credential = trace.get("credential")
    target = f"credential {credential!r}" if isinstance(credential, str) else "the credential"
    if isinstance(trace.get("type"), str):
        target += f" ({trace['type']})"
    lines = [f"dry run: {target} would be {'ISSUED' if allowed else 'REFUSED'}"]
    checks = trace.get("checks")
    steps = (
        [step for step in checks if isinstance(step, Mapping)] if isinstance(checks, list) else []
    )
    width = max((len(str(step.get("check", ""))) for step in steps), default=0)
    for step in steps:
        data = "  ".join(
            f"{key}={_value(value)}"
            for key, value in step.items()
            if key not in _FRAME_KEYS and value is not None
        )
        line = f"  {_mark(step.get('ok'))} {step.get('check', '?')!s:<{width}}  "
        line += str(step.get("detail", ""))
        if data:
            line += f"  [{data}]"
        lines.append(line)
        lines += _claim_lines(step.get("claims"))
    if not allowed:
        reason = trace.get("reason")
        code = ", ".join(str(part) for part in (trace.get("error"), reason) if part)
        description = trace.get("error_description")
        if code or description:
            lines.append(f"refused: {code}: {description or 'no description'}")
        lines.append(f"fix: {fix_for(reason if isinstance(reason, str) else None)}")
    return "\n".join(lines) + "\n"
