"""``python -m bench.inprocess``: the exchange's CPU in one process, for A/Bs of a change.

The app (``create_app``), a dev platform issuer and an aiohttp client run on one event loop;
``--n`` fresh exchanges of one credential, then the same tokens again (the retry path). It
prints the CPU of the whole process (client included) per request and the event loop's turns
per request; ``--service`` sends the retries straight into the exchange service instead (no
HTTP, no client), to see what a change to the service saves. ``--baseline-rev REV`` runs the
same measurement on ``git archive REV src`` in a child process, rounds alternating, so both
sides see the same machine. ``--profile fresh`` or ``retry`` prints a cProfile of that phase.
No wrk and no separate processes: it answers "did this change make the exchange cheaper", not
the bench's ratios (``python -m bench``).

The credential is an ``oidc_token`` mint (no backend call) unless ``--vault`` starts an
OpenBao dev server and exchanges through a passthrough ``vault_oidc`` credential.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import os
import pstats
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
CREDENTIAL = "bench"
# Sections an older revision's config may not know yet; dropped for it (ConfigError names them).
_OPTIONAL_SECTIONS = ("exchange", "security")


def _config(data_dir: Path, issuer: Any, credential: dict[str, object]) -> dict[str, object]:
    entry = issuer.issuer_settings("env0").model_dump(mode="json")
    return {
        "server": {"data_dir": str(data_dir)},
        "exchange": {"reuse_seconds": 30},
        "security": {"allow_private_backends": True},
        "rate_limit": {"enabled": False},
        "issuers": [entry],
        "organizations": [{"name": "acme", "issuer": entry["name"], "platform_org_id": ORG}],
        "credentials": [{"organization": "acme", "name": CREDENTIAL, **credential}],
        "assignments": [{"organization": "acme", "project": PROJECT, "credentials": [CREDENTIAL]}],
    }


def _settings(raw: dict[str, object], store_url: str | None) -> Any:
    from tokenbroker.config import parse_settings
    from tokenbroker.errors import ConfigError

    if store_url:
        raw["store"] = {"url": store_url, "encryption_key": "k" * 32}
    for section in (None, *_OPTIONAL_SECTIONS):
        if section is not None:
            raw.pop(section, None)
        try:
            return parse_settings(raw, {})
        except ConfigError as exc:
            if not any(name in str(exc) for name in _OPTIONAL_SECTIONS):
                raise
    return parse_settings(raw, {})


def _exchange_request(token: str, credential: str, request_id: str) -> Any:
    """The exchange service's request, where the revision keeps it (``ba92040``: before the
    redesign moved it into ``exchange/``)."""
    try:
        from tokenbroker.exchange.service import ExchangeRequest
    except ImportError:
        from tokenbroker.service import ExchangeRequest  # type: ignore[no-redef]
    return ExchangeRequest(token, credential, request_id)


@contextlib.contextmanager
def _loop_turns(loop: asyncio.AbstractEventLoop) -> Iterator[list[int]]:
    """Count the loop's iterations (asyncio's pure-Python loop only)."""
    turns = [0]
    run_once: Callable[[], None] | None = getattr(loop, "_run_once", None)
    if run_once is not None:

        def counted() -> None:
            turns[0] += 1
            run_once()

        loop._run_once = counted  # type: ignore[attr-defined]
    try:
        yield turns
    finally:
        if run_once is not None:
            loop._run_once = run_once  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def _credential(vault: bool, issuer: Any) -> AsyncIterator[dict[str, object]]:
    if not vault:
        yield {"type": "oidc_token", "token": "mint", "audience": CREDENTIAL}
        return
    from tokenbroker.devstack.openbao import OpenBaoDevServer, configure_jwt_auth

    with OpenBaoDevServer() as bao:
        # OpenBao fetches the JWKS from this loop's issuer while the config is written.
        await asyncio.to_thread(
            configure_jwt_auth,
            bao.client(),
            path="jwt",
            jwks_url=issuer.jwks_url("env0"),
            bound_issuer=issuer.issuer_url("env0"),
            role="bench",
            bound_audiences=list(issuer.issuer_settings("env0").audiences),
            bound_claims={"organizationId": ORG},
            policies=["bench"],
            kv_mount="kv",
        )
        yield {
            "type": "vault_oidc",
            "settings": {"address": bao.address, "role": "bench", "auth_path": "jwt"},
        }


async def measure(args: argparse.Namespace) -> dict[str, float]:
    """CPU ms per fresh exchange and per retry, and loop turns per request, of this process."""
    from aiohttp.test_utils import TestClient, TestServer

    from tokenbroker.devstack.platform_issuer import DevPlatformIssuer, create_issuer_app
    from tokenbroker.web.app import create_app

    workdir = Path(tempfile.mkdtemp(prefix="tb-inprocess-"))
    issuer = DevPlatformIssuer(workdir / "keys")
    issuer_server = TestServer(create_issuer_app(issuer))
    await issuer_server.start_server()
    issuer.base_url = str(issuer_server.make_url("")).rstrip("/")
    results: dict[str, float] = {}
    async with _credential(args.vault, issuer) as credential:
        app = create_app(_settings(_config(workdir, issuer, credential), args.store_url))
        client = TestClient(TestServer(app))
        await client.start_server()
        tokens = [issuer.mint("env0", org=ORG, project=PROJECT) for _ in range(args.n + 20)]

        async def exchange(token: str) -> None:
            response = await client.post(
                "/v1/exchange",
                headers={"Authorization": f"Bearer {token}"},
                json={"credential": CREDENTIAL},
            )
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"exchange answered {response.status}: {body[:300]!r}")

        async def into_service(token: str) -> None:
            from tokenbroker.web.keys import SERVICE

            await app[SERVICE].exchange(_exchange_request(token, CREDENTIAL, "bench"))

        async def phase(batch: list[str], send: Callable[[str], Awaitable[None]]) -> None:
            queue = iter(batch)

            async def worker() -> None:
                for token in queue:
                    await send(token)

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))

        await phase(tokens[args.n :], exchange)  # warm-up: caches, pool, cold paths
        # As serving does once it listens (web/serving.py), on both sides of an A/B.
        gc.freeze()
        profile = cProfile.Profile() if args.profile else None
        retry_send = into_service if args.service else exchange
        with _loop_turns(asyncio.get_running_loop()) as turns:
            for name in ("fresh", "retry"):
                turns[0] = 0
                if profile is not None and args.profile == name:
                    profile.enable()
                started = time.process_time()
                await phase(tokens[: args.n], exchange if name == "fresh" else retry_send)
                results[f"{name}_ms"] = 1000 * (time.process_time() - started) / args.n
                if profile is not None and args.profile == name:
                    profile.disable()
                results[f"{name}_turns"] = turns[0] / args.n
        await client.close()
    await issuer_server.close()
    if profile is not None:
        pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
    return results


def _baseline_tree(rev: str) -> Path:
    """``src`` of ``rev`` extracted to a temporary directory (its ``src`` inside)."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    target = Path(tempfile.mkdtemp(prefix=f"tb-{rev}-"))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def _child(args: argparse.Namespace, src: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.inprocess", "--json", "--n", str(args.n)]
    command += ["--concurrency", str(args.concurrency)]
    if args.vault:
        command.append("--vault")
    if args.store_url:
        command += ["--store-url", args.store_url]
    if args.service:
        command.append("--service")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{root}"}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return {k: float(v) for k, v in (item.split("=") for item in out.split())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="fresh exchanges (and as many retries)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--vault", action="store_true", help="through OpenBao (passthrough)")
    parser.add_argument("--store-url", default=None)
    parser.add_argument("--profile", choices=("fresh", "retry"), default=None)
    parser.add_argument("--baseline-rev", default=None, help="A/B against this git revision")
    parser.add_argument("--rev", default=None, help="measure this git revision, not the tree")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--service",
        action="store_true",
        help="retries straight into the exchange service (no HTTP, no client)",
    )
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json or args.profile:
        print(" ".join(f"{k}={v}" for k, v in asyncio.run(measure(args)).items()))
        return 0
    here = Path(__file__).resolve().parent.parent / "src"
    sides = {args.rev: _baseline_tree(args.rev)} if args.rev else {"this tree": here}
    if args.baseline_rev:
        sides[args.baseline_rev] = _baseline_tree(args.baseline_rev)
    for round_number in range(args.rounds):
        for name, src in sides.items():
            got = _child(args, src)
            print(
                f"round {round_number + 1} {name:>12}: fresh {got['fresh_ms']:.2f} ms CPU/req "
                f"({got['fresh_turns']:.1f} loop turns), retry"
                f"{' (service only)' if args.service else ''} {got['retry_ms']:.3f} ms "
                f"({got['retry_turns']:.1f})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
