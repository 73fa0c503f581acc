"""``tokenbroker serve``: run the broker, in this process or as ``server.workers`` workers."""

from __future__ import annotations

import argparse
import logging

from tokenbroker.cli.common import add_config_argument, settings_from_args
from tokenbroker.cli.workers import Supervisor, refuse_sqlite_workers, serve_in_this_process
from tokenbroker.logs import configure_logging

_log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` verb."""
    parser = subparsers.add_parser("serve", help="run the broker")
    add_config_argument(parser)
    parser.add_argument("--host", help="override server.host")
    parser.add_argument("--port", type=int, help="override server.port")
    parser.add_argument(
        "--workers", type=_workers, help='override server.workers: a number, or "auto"'
    )
    parser.set_defaults(handler=run)


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f'{value!r} is not a positive number or "auto"')
    return count


def run(args: argparse.Namespace) -> int:
    """Start the server, or the supervisor of its workers, and block until SIGTERM."""
    settings = settings_from_args(args)
    overrides = (("host", args.host), ("port", args.port), ("workers", args.workers))
    server = settings.server.model_copy(update={k: v for k, v in overrides if v is not None})
    settings = settings.model_copy(update={"server": server})
    configure_logging(settings.logging.level, settings.logging.format)
    count = server.worker_count()
    refuse_sqlite_workers(settings, count)
    if count > 1:
        return Supervisor(settings, count).run()
    return serve_in_this_process(settings, reuse_port=False, on_listening=_log_listening)


def _log_listening(host: str, port: int) -> None:
    _log.info("listening on http://%s:%d", host, port)
