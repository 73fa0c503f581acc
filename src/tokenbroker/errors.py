"""The error tree: every failure the broker reports, with its OAuth code and HTTP status.

Errors are raised where the failure is known and mapped to a response once, in ``web/``.
``reason`` is a stable machine code (``token_expired``); ``description`` is for a person and
must never hold a token, key or credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class BrokerError(Exception):
    """Base of every error the broker reports to a caller."""

    error: ClassVar[str] = "server_error"
    status: ClassVar[int] = 500

    def __init__(
        self,
        reason: str,
        description: str,
        *,
        details: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{reason}: {description}")
        self.reason = reason
        self.description = description
        self.details: Mapping[str, object] = details or {}
        self.logged = False
        """Whether the refusal was logged where it was decided (the exchange's decision line)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, description={self.description!r})"


class InvalidRequest(BrokerError):
    """The request is malformed: missing or bad parameters."""

    error = "invalid_request"
    status = 400


class InvalidToken(BrokerError):
    """The presented token is not acceptable: signature, expiry, issuer, audience, shape."""

    error = "invalid_token"
    status = 401


class AccessDenied(BrokerError):
    """The caller is authenticated but not allowed: not assigned, bound claims, backend refusal."""

    error = "access_denied"
    status = 403


class NotFound(BrokerError):
    """The named resource does not exist."""

    error = "not_found"
    status = 404


class PayloadTooLarge(BrokerError):
    """The request body or token is over its size limit."""

    error = "payload_too_large"
    status = 413


class UnprocessableEntity(BrokerError):
    """Admin input that does not validate; ``details['fields']`` lists each problem."""

    error = "invalid_request"
    status = 422


class Conflict(BrokerError):
    """The resource already exists."""

    error = "conflict"
    status = 409


class Unauthorized(BrokerError):
    """No admin credentials were presented."""

    error = "unauthorized"
    status = 401


class Forbidden(BrokerError):
    """Admin credentials were presented but are not valid."""

    error = "forbidden"
    status = 403


class RetryLater(BrokerError):
    """A refusal the caller should retry after ``retry_after`` seconds (sent as Retry-After)."""

    def __init__(self, reason: str, description: str, *, retry_after: int) -> None:
        super().__init__(reason, description)
        self.retry_after = retry_after


class RateLimited(RetryLater):
    """Too many requests; ``retry_after`` seconds until the next may succeed."""

    error = "rate_limited"
    status = 429


class TemporarilyUnavailable(RetryLater):
    """Something the decision needs (audit store, JWKS, rate limit store) cannot answer now."""

    error = "temporarily_unavailable"
    status = 503


class UpstreamError(BrokerError):
    """A backend failed or could not be reached."""

    error = "upstream_error"
    status = 502


class UpstreamTimeout(BrokerError):
    """A backend did not answer in time."""

    error = "upstream_timeout"
    status = 504


class UnusableCredentialType(Exception):
    """A credential type that is not installed, or whose backend cannot be loaded.

    ``problem`` says which for a caller's ``type`` field, without repeating the name it gave.
    The backend registry raises the two kinds; the store, which imports no backends, catches
    this base.
    """

    @property
    def problem(self) -> str:
        """What is wrong with the type, as a field problem."""
        return str(self)


class ConfigError(Exception):
    """The configuration does not validate; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class InvalidGrant(BrokerError):
    """RFC 6749: the subject token is invalid, expired, or not allowed this grant."""

    error = "invalid_grant"
    status = 400


class InvalidTarget(BrokerError):
    """RFC 8693: the requested audience is not one the caller may have."""

    error = "invalid_target"
    status = 400


class UnsupportedGrantType(BrokerError):
    """RFC 6749: the grant type is not token exchange."""

    error = "unsupported_grant_type"
    status = 400
