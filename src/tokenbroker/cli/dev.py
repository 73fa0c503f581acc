"""``tokenbroker dev``: the whole local stack in one command, stopped cleanly on Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from tokenbroker.cli.common import DEFAULT_DEV_DATA_DIR, EXIT_OK, CliError
from tokenbroker.logs import configure_logging

DEFAULT_DATA_DIR = DEFAULT_DEV_DATA_DIR
_INSTALL_HINT = "tokenbroker dev needs the devstack extra: pip install 'tokenbroker[devstack]'"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dev`` verb."""
    parser = subparsers.add_parser(
        "dev",
        help="run the local stack: OpenBao, moto, GCP STS stand-in, dev issuer, broker",
        description=(
            "Start OpenBao dev, moto, the GCP STS stand-in, the dev platform issuer and the "
            "broker on SQLite, configure them, and print the commands a runner would run. "
            "Ctrl-C stops everything."
        ),
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("TOKENBROKER_DEV_DATA_DIR", DEFAULT_DATA_DIR)),
        help=f"database, keys and state file (default {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8400,
        help="the broker's port; the next five go to the other parts; 0 picks free ports",
    )
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the stack until SIGINT or SIGTERM."""
    try:
        from tokenbroker.devstack import stack
    except ImportError as exc:
        raise CliError(f"{_INSTALL_HINT} ({exc})") from None
    try:
        stack.DevStackPorts.from_base(args.port)
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from None
    configure_logging(args.log_level)
    # moto's werkzeug server would print a line per request into the progress output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return asyncio.run(_serve(args.data_dir, args.port))


def _say(line: str) -> None:
    print(line, flush=True)


async def _serve(data_dir: Path, port: int) -> int:
    from tokenbroker.devstack.stack import (
        DevStackError,
        admin_commands,
        dev_stack,
        organization_lines,
        platform_token_commands,
        runner_commands,
    )

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stopping = False

    def stop(signum: int) -> None:
        nonlocal stopping
        if stopping:
            _say("tokenbroker dev: already stopping")
            return
        stopping = True
        _say(f"tokenbroker dev: {signal.Signals(signum).name}, stopping")
        # Cancels startup too: every part started so far is stopped on the way out.
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    _say(f"tokenbroker dev: starting the local stack in {data_dir}")
    try:
        async with dev_stack(data_dir, port=port, progress=_say) as state:
            _say("")
            _say(f"broker:  {state.broker_url}   (org {state.org_id}, project {state.project_id})")
            _say("credentials: " + ", ".join(f"{n} ({t})" for n, t in state.credentials.items()))
            _say("")
            _say("organizations (one per dev platform, each assigned its credentials):")
            for line in organization_lines(state):
                _say(f"  {line}")
            _say("")
            for line in runner_commands(state):
                _say(line)
            _say("# a token of each platform's seeded project:")
            for line in platform_token_commands(state):
                _say(line)
            _say("")
            for line in admin_commands(state):
                _say(line)
            _say("")
            _say("ready; Ctrl-C stops everything")
            await asyncio.Event().wait()
    except asyncio.CancelledError:
        _say("tokenbroker dev: stopped")
        return EXIT_OK
    except DevStackError as exc:
        raise CliError(str(exc)) from None
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        sys.stdout.flush()
    return EXIT_OK
