"""Entry point: one parser, each verb registered by its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tokenbroker import __version__
from tokenbroker.cli import admin, db, dev, exchange, keys, revoke, serve, token
from tokenbroker.cli.common import EXIT_USAGE, CliError, fail

# Each module exposes `register(subparsers)`; the order here is the order of --help.
VERB_MODULES = (serve, dev, keys, db, token, admin, exchange, revoke)


def build_parser() -> argparse.ArgumentParser:
    """The full ``tokenbroker`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="tokenbroker",
        description="Exchange platform OIDC tokens for short-lived cloud credentials.",
    )
    parser.add_argument("--version", action="version", version=f"tokenbroker {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for module in VERB_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = handler(args)
    except CliError as exc:
        fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
