"""``tokenbroker revoke``: revoke what ``exchange`` obtained where the backend allows it (Vault)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from tokenbroker.cli.common import EXIT_OK, CliError
from tokenbroker.client.envfiles import parse_values
from tokenbroker.client.failures import ClientFailure, UsageFailure
from tokenbroker.client.revoke import revoke_vault_token, unrevocable_notes, vault_token_held
from tokenbroker.clock import SystemClock

REVOKE_HELP = """\
Vault: the token (VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE; VAULT_CACERT honoured) revokes itself
with auth/token/revoke-self. A token already revoked or expired counts as revoked.
AWS and GCP credentials cannot be revoked early by their holder: they are left to expire, with
a note, and the exit code stays 0 so a cleanup step can always call revoke.

exit codes: 0 revoked (or nothing revocable), 2 nothing found / bad input, 5 Vault unreachable
"""
_MAX_FILE_BYTES = 1024 * 1024


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``revoke`` verb."""
    parser = subparsers.add_parser(
        "revoke",
        help="revoke the credential exchange obtained (Vault tokens)",
        description="Revoke the credential in the environment or in --from FILE.",
        epilog=REVOKE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="FILE",
        help="what exchange wrote (env lines, shell exports or json); default: the environment",
    )
    parser.set_defaults(handler=run)


def _values(source: Path | None) -> tuple[Mapping[str, str], str]:
    if source is None:
        return os.environ, "the environment"
    try:
        with source.open("rb") as handle:
            text = handle.read(_MAX_FILE_BYTES).decode("utf-8", errors="replace")
    except OSError as exc:
        raise UsageFailure(f"--from {source}: {exc.strerror or type(exc).__name__}") from None
    return parse_values(text), str(source)


async def _revoke(source: Path | None) -> int:
    values, where = _values(source)
    held = vault_token_held(values, os.environ)
    notes = unrevocable_notes(values)
    if held is None and not notes:
        raise UsageFailure(
            f"nothing to revoke: no VAULT_TOKEN (nor AWS or GCP credentials) in {where}; "
            "fix: pass --from FILE with what 'tokenbroker exchange' wrote"
        )
    if held is not None:
        if os.environ.get("VAULT_SKIP_VERIFY"):
            print(
                "tokenbroker: VAULT_SKIP_VERIFY is ignored: TLS is always verified", file=sys.stderr
            )
        async with aiohttp.ClientSession() as http:
            await revoke_vault_token(held, http=http, clock=SystemClock())
        print(f"tokenbroker: revoked the Vault token at {held.address}", file=sys.stderr)
    for note in notes:
        print(f"tokenbroker: not revoked: {note}", file=sys.stderr)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run ``tokenbroker revoke``."""
    try:
        return asyncio.run(_revoke(args.source))
    except ClientFailure as exc:
        raise CliError(exc.message, exc.exit_code) from None
