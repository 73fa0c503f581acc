"""Helpers shared by CLI verbs: loading config, printing errors, exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tokenbroker.config import Settings, load_settings
from tokenbroker.errors import ConfigError

# Exit codes, shared by every verb (the runner's client documents its own on top).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# Where `tokenbroker dev` keeps its database, keys and state file, unless told otherwise.
DEFAULT_DEV_DATA_DIR = Path(".tokenbroker") / "dev"


class CliError(Exception):
    """A failure to report as one line on stderr with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` (default ``$TOKENBROKER_CONFIG``)."""
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("TOKENBROKER_CONFIG"),
        help="TOML config file (default $TOKENBROKER_CONFIG)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Load the settings named by ``--config``; a bad config is a CliError, one line a problem."""
    path: Path | None = args.config
    try:
        return load_settings(path)
    except ConfigError as exc:
        raise config_error(exc) from None


def config_error(exc: ConfigError) -> CliError:
    """The CliError reporting ``exc``: a heading, then one line per problem."""
    return CliError("invalid configuration:\n" + "\n".join(f"  {p}" for p in exc.problems))


def fail(message: str) -> None:
    """Print an error line to stderr."""
    print(f"tokenbroker: {message}", file=sys.stderr)
