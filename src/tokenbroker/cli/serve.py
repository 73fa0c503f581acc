"""``tokenbroker serve``: run the broker."""

from __future__ import annotations

import argparse

from aiohttp import web

from tokenbroker.cli.common import add_config_argument, settings_from_args
from tokenbroker.logs import configure_logging
from tokenbroker.web.app import create_app


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` verb."""
    parser = subparsers.add_parser("serve", help="run the broker")
    add_config_argument(parser)
    parser.add_argument("--host", help="override server.host")
    parser.add_argument("--port", type=int, help="override server.port")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Start the server and block until interrupted."""
    settings = settings_from_args(args)
    server = settings.server.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    settings = settings.model_copy(update={"server": server})
    configure_logging(settings.logging.level, settings.logging.format)
    web.run_app(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        access_log=None,
        print=None,
    )
    return 0
