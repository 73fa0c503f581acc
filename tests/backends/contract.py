"""The contract every credential backend must pass, against its real (or stand-in) service.

A backend joins by subclassing ``BackendContract`` in its own test module and providing a
``contract_case`` fixture that returns a ``ContractCase``; every test here then runs for it:

    class TestVaultContract(BackendContract):
        @pytest.fixture
        async def contract_case(self, ...) -> ContractCase: ...

The class name does not start with ``Test``, so this module's tests only run through subclasses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ValidationError

from tokenbroker.backends.base import Backend, IssuedCredential, RevocableBackend
from tokenbroker.backends.registry import backend_class
from tokenbroker.errors import AccessDenied, BrokerError, UpstreamError, UpstreamTimeout
from tokenbroker.identity.models import Identity


@dataclass(frozen=True)
class ContractCase:
    """What the contract needs from one backend: working and failing inputs for its service."""

    backend: Backend
    # Settings (as config would hold them) for a credential the service accepts.
    settings_data: Mapping[str, object]
    identity: Identity
    # An outbound token the service accepts, and a validly signed one it refuses.
    accepted_token: str = field(repr=False)
    refused_token: str = field(repr=False)
    # The same credential pointed at a loopback port where nothing listens.
    unreachable_settings_data: Mapping[str, object]
    # Upper bound for the unreachable case, retries included.
    timeout_seconds: float
    now: float
    # Whether the service can revoke a credential early (Vault can; STS credentials cannot).
    revocable: bool = False

    def settings(self, data: Mapping[str, object] | None = None) -> BaseModel:
        """Validate settings data with the backend's own schema."""
        return self.backend.settings_model.model_validate(dict(data or self.settings_data))


def _secrets_of(
    credential: IssuedCredential, token: str, settings_data: Mapping[str, object]
) -> list[str]:
    values = [value for value in credential.values.values() if len(value) >= 8]
    # Addresses and values copied from the settings (a tenant or client id) are configuration,
    # not secrets; everything else in values is.
    configured = {str(value) for value in settings_data.values()}
    return [
        token,
        *(v for v in values if not v.startswith(("http://", "https://")) and v not in configured),
    ]


def _assert_nowhere(secrets: list[str], texts: list[str]) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text


class BackendContract:
    """Behaviour every backend shares; subclass it with a ``contract_case`` fixture."""

    def test_it_is_a_backend_registered_under_its_type_name(
        self, contract_case: ContractCase
    ) -> None:
        backend = contract_case.backend
        assert isinstance(backend, Backend)
        registered: object = backend_class(backend.type_name)
        assert registered is type(backend)

    def test_its_settings_reject_unknown_fields(self, contract_case: ContractCase) -> None:
        with pytest.raises(ValidationError):
            contract_case.settings({**contract_case.settings_data, "no_such_field": 1})

    async def test_an_accepted_token_gives_a_credential_that_expires_in_the_future(
        self, contract_case: ContractCase
    ) -> None:
        case = contract_case
        credential = await case.backend.exchange(
            case.identity, case.accepted_token, case.settings()
        )
        assert credential.values
        assert all(isinstance(v, str) and v for v in credential.values.values())
        assert credential.expires_at.tzinfo is not None
        assert credential.expires_at > datetime.fromtimestamp(case.now, tz=UTC)

    async def test_a_credential_repr_and_logs_hold_no_secret(
        self, contract_case: ContractCase, caplog: pytest.LogCaptureFixture
    ) -> None:
        case = contract_case
        caplog.set_level(logging.DEBUG)
        credential = await case.backend.exchange(
            case.identity, case.accepted_token, case.settings()
        )
        texts = [repr(credential), str(credential)]
        texts += [record.getMessage() for record in caplog.records]
        _assert_nowhere(_secrets_of(credential, case.accepted_token, case.settings_data), texts)

    async def test_a_refused_token_is_access_denied_without_echoing_it(
        self, contract_case: ContractCase, caplog: pytest.LogCaptureFixture
    ) -> None:
        case = contract_case
        caplog.set_level(logging.DEBUG)
        with pytest.raises(AccessDenied) as raised:
            await case.backend.exchange(case.identity, case.refused_token, case.settings())
        assert raised.value.reason == "backend_refused"
        assert raised.value.description
        texts = [str(raised.value), repr(raised.value), raised.value.description]
        texts += [record.getMessage() for record in caplog.records]
        _assert_nowhere([case.refused_token, *case.refused_token.split(".")], texts)

    async def test_an_unreachable_service_is_an_upstream_error_within_the_timeout(
        self, contract_case: ContractCase
    ) -> None:
        case = contract_case
        settings = case.settings(case.unreachable_settings_data)
        started = time.monotonic()
        with pytest.raises((UpstreamError, UpstreamTimeout)) as raised:
            await case.backend.exchange(case.identity, case.accepted_token, settings)
        assert time.monotonic() - started < case.timeout_seconds
        assert isinstance(raised.value, BrokerError)
        assert case.accepted_token not in str(raised.value)

    async def test_revoke_is_offered_exactly_when_the_service_can_and_is_idempotent(
        self, contract_case: ContractCase
    ) -> None:
        case = contract_case
        assert isinstance(case.backend, RevocableBackend) is case.revocable
        if not isinstance(case.backend, RevocableBackend):
            return
        settings = case.settings()
        credential = await case.backend.exchange(case.identity, case.accepted_token, settings)
        await case.backend.revoke(credential, settings)
        await case.backend.revoke(credential, settings)
