"""``tokenbroker db upgrade``: apply the store's migrations."""

from __future__ import annotations

import argparse
import asyncio

from tokenbroker.backends import registry
from tokenbroker.cli.common import CliError, add_config_argument, settings_from_args
from tokenbroker.config.models import Settings
from tokenbroker.store import Store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``db`` verb."""
    parser = subparsers.add_parser("db", help="manage the store's database")
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="apply every migration not applied yet")
    add_config_argument(upgrade)
    upgrade.set_defaults(handler=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> int:
    """Migrate the configured store to the newest schema."""
    settings = settings_from_args(args)
    revision, where = asyncio.run(_upgrade(settings))
    print(f"store {where} is at revision {revision}")
    return 0


async def _upgrade(settings: Settings) -> tuple[str | None, str]:
    settings.server.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        store = await Store.open(
            settings.store.resolved_url(settings.server.data_dir),
            credential_types=registry.INSTALLED,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        await store.upgrade()
        return await store.revision(), store.display_url
    except OSError as exc:
        raise CliError(f"cannot reach the store at {store.display_url}: {exc}") from None
    finally:
        await store.close()
