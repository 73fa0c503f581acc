"""``tokenbroker serve``: run the broker."""

from __future__ import annotations

import argparse
import logging

from tokenbroker.cli.common import CliError, add_config_argument, config_error, settings_from_args
from tokenbroker.errors import ConfigError
from tokenbroker.issuer.keys import KeyStoreError
from tokenbroker.logs import configure_logging
from tokenbroker.web.app import create_app
from tokenbroker.web.loop import loop_name, new_event_loop
from tokenbroker.web.server import run_app

_log = logging.getLogger(__name__)


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
    try:
        loop = new_event_loop(settings.server.event_loop)
    except ConfigError as exc:
        raise config_error(exc) from None
    _log.info("event loop: %s", loop_name(loop))
    try:
        run_app(
            create_app(settings), host=settings.server.host, port=settings.server.port, loop=loop
        )
    except ConfigError as exc:
        # Raised while starting (the store, declarative config, the key store): report it
        # like a config file that does not load, one line a problem, no traceback.
        raise config_error(exc) from None
    except KeyStoreError as exc:
        raise CliError(f"signing keys: {exc}") from None
    return 0
