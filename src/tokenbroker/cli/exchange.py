"""``tokenbroker exchange``: the runner's client (wiring only; the logic is in ``client/``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import textwrap
from pathlib import Path

from tokenbroker.cli.common import CliError
from tokenbroker.client.broker import CLIENT_FORMATS
from tokenbroker.client.discovery import searched_sources
from tokenbroker.client.envfiles import APPEND_TARGETS
from tokenbroker.client.exchange import (
    BROKER_URL_VARIABLE,
    DEFAULT_TIMEOUT_SECONDS,
    ClientRuntime,
    ExchangeOptions,
    run_exchange,
)
from tokenbroker.client.failures import EXIT_USAGE, ClientFailure
from tokenbroker.client.watch import watch_until_signalled
from tokenbroker.clock import SystemClock

_EPILOG = """\
exit codes:
  0  ok (dry run: the exchange would be allowed)
  2  usage: bad arguments, no broker URL, nowhere to write
  3  no platform token found (the message lists where it looked)
  4  denied by the broker (400/401/403; dry run: would be refused)
  5  broker or backend unavailable (5xx, 429 or no connection until the deadline)

{discovery}

as an AWS credential_process (only the JSON goes to stdout):
  credential_process = tokenbroker exchange --credential prod-aws --format aws-credential-process

--watch --output FILE keeps FILE valid for a long job: it exchanges again at two thirds of the
credential's lifetime (reading the platform token afresh), replaces FILE atomically, and on
SIGTERM or SIGINT revokes the job's leases (unless --keep) and exits 0. A refused refresh ends
it with that refusal's code, FILE left valid until it expires:
  tokenbroker exchange --credential prod-vault --format env --output vault.env --watch &
"""
EXIT_CODES_HELP = _EPILOG.format(
    discovery=textwrap.fill(
        f"token discovery order: {', '.join(searched_sources())} (ID-token endpoints are "
        "asked for --audience); --token-env or --token-file replace the search.",
        width=95,
    )
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``exchange`` verb."""
    parser = subparsers.add_parser(
        "exchange",
        help="exchange this runner's platform token for a credential",
        description="Send the platform OIDC token to the broker and write the credential.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--broker", metavar="URL", help=f"the broker's base URL (default ${BROKER_URL_VARIABLE})"
    )
    parser.add_argument("--credential", metavar="NAME", help="credential name (optional if one)")
    parser.add_argument(
        "--format",
        dest="fmt",
        choices=CLIENT_FORMATS,
        help="output format (default json; with --append-env the env file's own)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--output", type=Path, metavar="FILE", help="write to FILE (mode 0600)")
    append_targets = ", ".join(f"${variable}" for variable, _ in APPEND_TARGETS)
    where.add_argument(
        "--append-env",
        action="store_true",
        help=f"append to {append_targets} (the first that is set)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the broker's decision trace; issue nothing"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--token-env", metavar="NAME", help="read the token from $NAME only")
    source.add_argument(
        "--token-file", type=Path, metavar="PATH", help="read the token from PATH only"
    )
    parser.add_argument(
        "--audience",
        default=os.environ.get("TOKENBROKER_AUDIENCE"),
        help="audience to request from an ID-token endpoint (default $TOKENBROKER_AUDIENCE)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="deadline for the whole exchange, retries included (default %(default)s)",
    )
    parser.add_argument(
        "--ca-cert", type=Path, metavar="FILE", help="CA bundle for a broker behind a private CA"
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="keep --output FILE valid until SIGTERM/SIGINT, re-exchanging before it expires",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="with --watch: on exit, leave the job's leases to expire instead of revoking them",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=run)


def real_runtime(quiet: bool) -> ClientRuntime:
    """The runtime of a real run: wall clock, stdout, progress lines on stderr."""

    def notify(message: str) -> None:
        if not quiet:
            print(f"tokenbroker: {message}", file=sys.stderr, flush=True)

    return ClientRuntime(clock=SystemClock(), stdout=sys.stdout, notify=notify)


def run(args: argparse.Namespace) -> int:
    """Run ``tokenbroker exchange``."""
    options = ExchangeOptions(
        broker_url=args.broker,
        credential=args.credential,
        fmt=args.fmt,
        output=args.output,
        append_env=args.append_env,
        dry_run=args.dry_run,
        token_env=args.token_env,
        token_file=args.token_file,
        audience=args.audience,
        timeout=args.timeout,
        ca_cert=args.ca_cert,
        keep=args.keep,
    )
    if args.keep and not args.watch:
        raise CliError("--keep only applies to --watch", EXIT_USAGE)
    if args.watch and (args.dry_run or args.append_env):
        raise CliError(
            "--watch keeps an --output FILE current; it cannot be a dry run nor --append-env",
            EXIT_USAGE,
        )
    try:
        if args.watch:
            return asyncio.run(watch_until_signalled(options, os.environ, real_runtime(args.quiet)))
        # google-auth reads an executable's stdout and stderr as one stream: a progress line
        # would break the JSON it expects, so that format is always quiet.
        quiet = args.quiet or args.fmt == "gcp-executable"
        return asyncio.run(run_exchange(options, os.environ, real_runtime(quiet)))
    except ClientFailure as exc:
        raise CliError(exc.message, exc.exit_code) from None
