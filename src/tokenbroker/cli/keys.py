"""``tokenbroker keys``: list and rotate the signing keys of the broker's own issuer."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TypeVar

from tokenbroker.backends import registry
from tokenbroker.cli.common import (
    EXIT_OK,
    CliError,
    add_config_argument,
    config_error,
    settings_from_args,
)
from tokenbroker.clock import SystemClock
from tokenbroker.config.models import Settings
from tokenbroker.errors import ConfigError
from tokenbroker.issuer.keyring import KeyRing
from tokenbroker.issuer.keys import KeyStoreError, SigningKey
from tokenbroker.store import Store
from tokenbroker.store.keystore import open_key_store

_T = TypeVar("_T")


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

    async def stored() -> list[SigningKey]:
        async with _opened_store(settings) as store:
            if await store.revision() is None:
                return []  # a store no broker has started on: no tables, so no keys
            return await (await open_key_store(settings, store)).load()

    keys = _run(stored())
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
        async with _opened_store(settings) as store:
            # As `tokenbroker serve` would on start, so rotating before the first start works.
            if settings.store.migrate_on_start:
                await store.upgrade()
            elif await store.revision() is None:
                raise CliError("the store has no tables yet: run `tokenbroker db upgrade` first")
            key_store = await open_key_store(settings, store)
            ring = await KeyRing.open(key_store, settings.signing, SystemClock())
            previous = ring.active
            return previous, await ring.rotate()

    previous, active = _run(rotate())
    print(f"active key: {active.kid} ({active.algorithm})")
    print(
        f"retiring:   {previous.kid} (published for "
        f"{settings.signing.retire_after_seconds} more seconds)"
    )
    return EXIT_OK


def _run(work: Coroutine[object, object, _T]) -> _T:
    try:
        return asyncio.run(work)
    except ConfigError as exc:
        raise config_error(exc) from None
    except KeyStoreError as exc:
        raise CliError(str(exc)) from None


@asynccontextmanager
async def _opened_store(settings: Settings) -> AsyncIterator[Store]:
    """The configured store, closed on exit; an unusable URL or database is a CliError."""
    try:
        store = await Store.open(
            settings.store.resolved_url(settings.server.data_dir),
            credential_types=registry.INSTALLED,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        yield store
    except OSError as exc:
        raise CliError(f"cannot reach the store at {store.display_url}: {exc}") from None
    finally:
        await store.close()


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
