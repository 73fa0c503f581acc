"""Validation cost, in process: the broker's TokenValidator vs a bare joserfc decode + claims check.

Both verify the same RS256 tokens with the key already in hand (the broker's JWKS cache is
warmed first). Calls alternate in small blocks, the order flipping each round, so both see the
same machine; the medians of per-call times are compared.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence

import aiohttp
from joserfc import jwt
from joserfc.jwk import RSAKey
from joserfc.jwt import ClaimsOption, JWTClaimsRegistry

from bench.report import Row, at_most, percentile
from tokenbroker.clock import SystemClock
from tokenbroker.config.models import IssuerSettings
from tokenbroker.identity.jwks import JwksCache
from tokenbroker.identity.validator import TokenValidator

TARGET_RATIO = 1.2
_BLOCK = 50


def _bare_verifier(issuer: IssuerSettings) -> JWTClaimsRegistry:
    # The same claims the broker checks: iss, aud, exp, iat (and nbf when present) with the
    # issuer's leeway, and the issuer's required claims.
    options: dict[str, ClaimsOption] = {
        "iss": {"essential": True, "value": issuer.issuer},
        "aud": {"essential": True, "values": list(issuer.audiences)},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }
    for name, value in issuer.required_claims.items():
        accepted: list[str | int | bool] | str | int | bool = (
            list(value) if isinstance(value, list) else value
        )
        options[name] = {"essential": True, "value": accepted}
    return JWTClaimsRegistry(None, issuer.leeway_seconds, **options)


async def _measure(
    issuer: IssuerSettings, key: RSAKey, tokens: Sequence[str], rounds: int
) -> tuple[list[int], list[int], list[int]]:
    """Per-call times of: a full validation, a repeated token (memo hit), the bare verify."""
    clock = SystemClock()
    algorithms = list(issuer.algorithms)
    registry = _bare_verifier(issuer)
    full: list[int] = []
    repeated: list[int] = []
    bare: list[int] = []
    async with aiohttp.ClientSession() as http:
        # The bench's issuer serves its keys on loopback.
        jwks = JwksCache(http, clock, allow_private_backends=True)
        # The judged row is a token's first validation: no memo, every check and the signature.
        validator = TokenValidator([issuer], jwks, clock, memo_size=0)
        remembering = TokenValidator([issuer], jwks, clock, memo_size=len(tokens))
        for token in tokens:  # fetches and caches the keys; every token remembered
            await remembering.validate_platform_token(token)

        async def run_full(token: str) -> None:
            await validator.validate_platform_token(token)

        async def run_repeated(token: str) -> None:
            await remembering.validate_platform_token(token)

        async def run_bare(token: str) -> None:
            registry.validate(jwt.decode(token, key, algorithms=algorithms).claims)

        runs = ((run_full, full), (run_repeated, repeated), (run_bare, bare))
        position = 0
        for round_index in range(rounds):
            block = [tokens[(position + i) % len(tokens)] for i in range(_BLOCK)]
            position += _BLOCK
            # Rotate which goes first, so a burst of load on the machine hits all alike.
            for run, samples in runs[round_index % 3 :] + runs[: round_index % 3]:
                for token in block:
                    started = time.perf_counter_ns()
                    await run(token)
                    samples.append(time.perf_counter_ns() - started)
        await jwks.aclose()
    return full, repeated, bare


def measure_validation(
    issuer: IssuerSettings, key: RSAKey, tokens: Sequence[str], calls: int
) -> list[Row]:
    """Rows comparing TokenValidator.validate_platform_token with a bare joserfc verify.

    ``key`` is the issuer's public key, as the bare verify would be configured with.
    """
    ours, repeated, bare = asyncio.run(_measure(issuer, key, tokens, max(3, calls // _BLOCK)))
    ours_us = statistics.median(ours) / 1000
    repeated_us = statistics.median(repeated) / 1000
    bare_us = statistics.median(bare) / 1000
    ratio = ours_us / bare_us
    return [
        Row(
            section="8 validation cost (in process, keys cached)",
            name="validate_platform_token / joserfc decode+claims",
            value=ratio,
            unit="x",
            target=f"<= {TARGET_RATIO}x",
            passed=at_most(ratio, TARGET_RATIO),
            context=(
                f"median {ours_us:.1f} vs {bare_us:.1f} us/token, p99 "
                f"{percentile(ours, 0.99) / 1000:.1f} vs {percentile(bare, 0.99) / 1000:.1f} us "
                f"(n={len(ours)} each)"
            ),
            data={
                "broker_median_us": round(ours_us, 2),
                "joserfc_median_us": round(bare_us, 2),
                "samples": len(ours),
            },
        ),
        Row(
            section="8 validation cost (in process, keys cached)",
            name="validate_platform_token, repeated token / joserfc",
            value=repeated_us / bare_us,
            unit="x",
            context=(
                f"median {repeated_us:.1f} vs {bare_us:.1f} us/token (validated before: no "
                f"parsing or signature check, key and claims checked again; n={len(repeated)})"
            ),
            data={"broker_median_us": round(repeated_us, 2), "samples": len(repeated)},
        ),
    ]
