"""Entry point: one parser, each verb registered by its own module.

A verb's module is imported only when that verb runs (or for the full ``--help``): the runner's
client is started by SDKs on every credential refresh, and must not pay for the server's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tokenbroker import __version__
from tokenbroker.cli.common import EXIT_USAGE, CliError, fail

# Verb -> module exposing `register(subparsers)`; the order here is the order of --help.
VERB_MODULES = {
    "serve": "tokenbroker.cli.serve",
    "dev": "tokenbroker.cli.dev",
    "keys": "tokenbroker.cli.keys",
    "db": "tokenbroker.cli.db",
    "token": "tokenbroker.cli.token",
    "admin": "tokenbroker.cli.admin",
    "exchange": "tokenbroker.cli.exchange",
    "revoke": "tokenbroker.cli.revoke",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``tokenbroker`` argument parser, with every verb or only the one named."""
    parser = argparse.ArgumentParser(
        prog="tokenbroker",
        description="Exchange platform OIDC tokens for short-lived cloud credentials.",
    )
    parser.add_argument("--version", action="version", version=f"tokenbroker {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, module_name in VERB_MODULES.items():
        if only is None or verb == only:
            importlib.import_module(module_name).register(subparsers)
    return parser


def _verb_of(argv: Sequence[str]) -> str | None:
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in VERB_MODULES else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_verb_of(arguments))
    args = parser.parse_args(arguments)
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
