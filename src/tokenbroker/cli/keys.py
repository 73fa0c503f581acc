"""``tokenbroker keys``: list and rotate the signing keys of the broker's own issuer."""

from __future__ import annotations

import argparse
import asyncio
import json

from tokenbroker.cli.common import EXIT_OK, CliError, add_config_argument, settings_from_args
from tokenbroker.clock import SystemClock
from tokenbroker.issuer import key_store_for
from tokenbroker.issuer.keyring import KeyRing
from tokenbroker.issuer.keys import KeyStoreError, SigningKey


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``keys`` verb with ``list`` and ``rotate``."""
    parser = subparsers.add_parser("keys", help="list or rotate the broker issuer's signing keys")
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="show kid, algorithm, state and dates of each key")
    add_config_argument(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=run_list)

    rotate = actions.add_parser(
        "rotate",
        help="make a new active key; the old one stays published until its tokens expire",
    )
    add_config_argument(rotate)
    rotate.set_defaults(handler=run_rotate)


def run_list(args: argparse.Namespace) -> int:
    """Print the stored keys; never any private member."""
    settings = settings_from_args(args)
    try:
        keys = asyncio.run(key_store_for(settings).load())
    except KeyStoreError as exc:
        raise CliError(str(exc)) from None
    rows = [_summary(key) for key in sorted(keys, key=lambda k: k.created_at, reverse=True)]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no signing keys yet (the first is made when the broker starts)")
    else:
        print(_table(rows))
    return EXIT_OK


def run_rotate(args: argparse.Namespace) -> int:
    """Rotate and print the new active kid; running brokers pick it up on their next reload."""
    settings = settings_from_args(args)

    async def rotate() -> tuple[SigningKey, SigningKey]:
        ring = await KeyRing.open(key_store_for(settings), settings.signing, SystemClock())
        previous = ring.active
        return previous, await ring.rotate()

    try:
        previous, active = asyncio.run(rotate())
    except KeyStoreError as exc:
        raise CliError(str(exc)) from None
    print(f"active key: {active.kid} ({active.algorithm})")
    print(
        f"retiring:   {previous.kid} (published for "
        f"{settings.signing.retire_after_seconds} more seconds)"
    )
    return EXIT_OK


def _summary(key: SigningKey) -> dict[str, str]:
    return {
        "kid": key.kid,
        "alg": key.algorithm,
        "state": key.state,
        "created": key.created_at.isoformat(timespec="seconds"),
        "retired": key.retired_at.isoformat(timespec="seconds") if key.retired_at else "",
    }


def _table(rows: list[dict[str, str]]) -> str:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)
