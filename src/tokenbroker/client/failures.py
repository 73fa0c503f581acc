"""The client's failures and exit codes: each names the cause and the fix, never a token."""

from __future__ import annotations

# Exit codes of ``tokenbroker exchange`` / ``revoke`` (documented in ``--help``).
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NO_TOKEN = 3
EXIT_DENIED = 4
EXIT_UNAVAILABLE = 5


class ClientFailure(Exception):
    """A failure to report as text on stderr with its exit code."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageFailure(ClientFailure):
    """The command line or environment is wrong (exit 2)."""

    exit_code = EXIT_USAGE


class NoPlatformToken(ClientFailure):
    """No platform token could be found or fetched (exit 3)."""

    exit_code = EXIT_NO_TOKEN


class Denied(ClientFailure):
    """The broker refused: the token, the policy or the backend said no (exit 4)."""

    exit_code = EXIT_DENIED


class Unavailable(ClientFailure):
    """The broker or its backend could not be reached in time, or failed (exit 5)."""

    exit_code = EXIT_UNAVAILABLE
