"""``tokenbroker revoke``: revoke what ``exchange`` obtained where the backend allows it (Vault)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from tokenbroker.cli.common import EXIT_OK, CliError
from tokenbroker.cli.exchange import real_runtime
from tokenbroker.client.envfiles import parse_values
from tokenbroker.client.exchange import (
    BROKER_URL_VARIABLE,
    ClientRuntime,
    ExchangeOptions,
    revoke_at_broker,
)
from tokenbroker.client.failures import ClientFailure, UsageFailure
from tokenbroker.client.revoke import revoke_vault_token, unrevocable_notes, vault_token_held

REVOKE_HELP = """\
With --broker (or $TOKENBROKER_URL) the broker is told first, with the platform token found
as exchange finds it: it revokes what it issued for this job and never hands it out again.
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
    parser.add_argument(
        "--broker", metavar="URL", help="also tell the broker (default $TOKENBROKER_URL)"
    )
    parser.add_argument("--token-env", metavar="NAME", help="the platform token's variable")
    parser.add_argument("--token-file", type=Path, metavar="FILE", help="the platform token file")
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


async def _tell_broker(args: argparse.Namespace, runtime: ClientRuntime) -> bool:
    """Revoke at the broker when one is named; False when none is."""
    if not (args.broker or os.environ.get(BROKER_URL_VARIABLE)):
        return False
    options = ExchangeOptions(
        broker_url=args.broker, token_env=args.token_env, token_file=args.token_file
    )
    answer = await revoke_at_broker(options, os.environ, runtime)
    for key, told in (("revoked", "the broker revoked"), ("not_revocable", "left to expire:")):
        leases = answer.get(key)
        for lease in leases if isinstance(leases, list) else []:
            if isinstance(lease, dict):
                name, lease_id = lease.get("credential"), lease.get("id")
                print(f"tokenbroker: {told} {name} (lease {lease_id})", file=sys.stderr)
    return True


async def _revoke(args: argparse.Namespace) -> int:
    runtime = real_runtime(quiet=True)
    told_broker = await _tell_broker(args, runtime)
    values, where = _values(args.source)
    held = vault_token_held(values, os.environ)
    notes = unrevocable_notes(values)
    if told_broker and held is None and not notes:
        return EXIT_OK
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
        await revoke_vault_token(held, runtime)
        print(f"tokenbroker: revoked the Vault token at {held.address}", file=sys.stderr)
    for note in notes:
        print(f"tokenbroker: not revoked: {note}", file=sys.stderr)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run ``tokenbroker revoke``."""
    try:
        return asyncio.run(_revoke(args))
    except ClientFailure as exc:
        raise CliError(exc.message, exc.exit_code) from None
