"""Small servers the benchmark runs in their own processes.

``python -m bench.servers hello --port N``: the aiohttp hello-world, the ceiling to compare with.
``python -m bench.servers issuer --port N --keys-dir D``: the dev platform issuer's discovery and
JWKS (OpenBao and the broker fetch keys from it), kept off the broker's and the loader's CPU loop.
``python -m bench.servers moto --port N``: moto's server (STS, IAM), also in a process of its own.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from aiohttp import web

from tokenbroker.devstack.platform_issuer import DevPlatformIssuer, create_issuer_app
from tokenbroker.web.loop import new_event_loop


def hello_app() -> web.Application:
    """The smallest useful aiohttp app: POST and GET / answer a short text."""

    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_route("*", "/", hello)
    return app


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _serve_moto(port: int) -> int:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    threading.Event().wait()  # until terminated
    return 0


def main(argv: list[str] | None = None) -> int:
    """Serve one of the benchmark's servers on loopback until terminated."""
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=["hello", "issuer", "moto"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keys-dir", type=Path, help="the dev issuer's key directory")
    # The hello-world is the broker's ceiling: it runs on the loop the broker runs on.
    parser.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    args = parser.parse_args(argv)
    if args.kind == "moto":
        return _serve_moto(args.port)
    if args.kind == "hello":
        app = hello_app()
    else:
        if args.keys_dir is None:
            parser.error("issuer needs --keys-dir")
        issuer = DevPlatformIssuer(args.keys_dir, f"http://127.0.0.1:{args.port}")
        app = create_issuer_app(issuer)
        app.router.add_get("/", _ok)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=new_event_loop(args.event_loop),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
