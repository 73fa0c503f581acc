"""Why the bench's own aiohttp load generator and wrk measured OpenBao's CPU per login apart.

``python -m bench.loader_comparison``: direct OpenBao JWT logins at c=32 from each loader in
the same run, phases alternating over rotating rounds, in three token regimes (one fixed token;
tokens OpenBao has seen; tokens it has never seen, each a new ``sub`` and so a new entity), and
wrk once more with the aiohttp client's request headers. Prints OpenBao's and the loader's CPU
per login. (A one-off investigation for bench/README.md; it keeps the retired loader alive.)
"""

from __future__ import annotations

import json
import resource
from collections import defaultdict

from bench import wrk
from bench.load import Job, LoadWorker, Target, Tokens
from bench.procs import cpu_seconds
from bench.stack import PASSTHROUGH_PATH, ROLE, Stack

_SECONDS = 2
_ROUNDS = 3
_FRESH_PER_PHASE = 6000
_AIOHTTP_HEADERS = (
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip, deflate"),
    ("User-Agent", "Python/3.11 aiohttp/3.9"),
)


def _pid(worker: LoadWorker) -> int:
    pid = worker._process.pid
    assert pid is not None
    return pid


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    with Stack() as stack, LoadWorker() as worker:
        seen = 2000
        fresh_needed = 2 * _ROUNDS * _FRESH_PER_PHASE
        tokens = stack.mint_tokens(seen + fresh_needed)
        worker.set_tokens(tokens)
        url = f"{stack.openbao.address}/v1/auth/{PASSTHROUGH_PATH}/login"
        body = json.dumps({"role": ROLE, "jwt": wrk.TOKEN_PLACEHOLDER})
        # Every "seen" token logs in once before any timing: OpenBao has its entity.
        wrk.run(wrk.Target("warm", url, body=body), tokens, wrk.Tokens("fresh", 0, seen), 32, 30)
        next_fresh = {"own": seen, "wrk": seen + fresh_needed // 2}
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        names = [
            f"{loader} {regime}"
            for regime in ("fixed", "seen", "fresh")
            for loader in ("own", "wrk")
        ] + ["wrk seen, aiohttp headers"]
        for round_index in range(_ROUNDS):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                loader, regime = name.split()[0], name.split()[1].rstrip(",")
                use: wrk.TokenUse = "fresh"
                start, stop = next_fresh[loader], next_fresh[loader] + _FRESH_PER_PHASE
                if regime == "fixed":
                    start, stop, use = 0, 1, "fixed"
                elif regime == "seen":
                    start, stop, use = 0, seen, "cycle"
                bao_pid = stack.openbao.pid
                assert bao_pid is not None
                bao_before = cpu_seconds(bao_pid)
                if loader == "own":
                    own_before = cpu_seconds(_pid(worker))
                    result = worker.run(
                        Job(
                            (Target(name, url, body=body, tokens=Tokens(use, start, stop)),),
                            32,
                            10**9,
                            _SECONDS,
                        )
                    )
                    count = float(result.targets[name].count)
                    loader_cpu = cpu_seconds(_pid(worker)) - own_before
                else:
                    headers = _AIOHTTP_HEADERS if "aiohttp" in name else ()
                    wrk_before = _children_cpu()
                    phase = wrk.run(
                        wrk.Target(name, url, body=body, headers=headers),
                        tokens,
                        wrk.Tokens(use, start, stop),
                        32,
                        _SECONDS,
                    )
                    count = float(phase.expected)
                    loader_cpu = _children_cpu() - wrk_before
                if regime == "fresh":
                    next_fresh[loader] += int(count) + 64
                total = totals[name]
                total[0] += count
                total[1] += cpu_seconds(bao_pid) - bao_before
                total[2] += loader_cpu
        print(
            f"{'phase':32} {'logins':>7} {'/s':>6} {'OpenBao ms/login':>17} {'loader ms/login':>16}"
        )
        for name in names:
            count, bao, load = totals[name]
            print(
                f"{name:32} {count:7.0f} {count / (_ROUNDS * _SECONDS):6.0f} "
                f"{1000 * bao / count:17.3f} {1000 * load / count:16.3f}"
            )


if __name__ == "__main__":
    main()
