"""Credential types come from the `tokenbroker.backends` entry-point group, ours and plugins'."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import aiohttp
import pytest

from tokenbroker.backends import registry
from tokenbroker.backends.base import BackendContext
from tokenbroker.clock import FrozenClock
from tokenbroker.identity.models import Identity

PLUGIN = """
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from tokenbroker.backends.base import BackendContext, IssuedCredential


class EchoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: str


class EchoBackend:
    type_name: ClassVar[str] = "{type_name}"
    settings_model: ClassVar[type[BaseModel]] = EchoSettings

    def __init__(self, context: BackendContext) -> None:
        self.context = context

    async def exchange(self, identity, outbound_token, settings):
        return IssuedCredential(
            values={{"ECHO": settings.prefix + identity.project}},
            expires_at=datetime.fromtimestamp(self.context.clock.now() + 60, UTC),
        )
"""


def install_plugin(
    root: Path, monkeypatch: pytest.MonkeyPatch, *, entry: str, module: str, type_name: str
) -> None:
    """A package on sys.path with an entry point, as `pip install` would leave it."""
    (root / f"{module}.py").write_text(PLUGIN.format(type_name=type_name))
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [tokenbroker.backends]
            {entry} = {module}:EchoBackend
            """
        )
    )
    monkeypatch.syspath_prepend(str(root))


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    registry._entry_points.cache_clear()
    registry.backend_class.cache_clear()
    yield
    registry._entry_points.cache_clear()
    registry.backend_class.cache_clear()


def test_the_built_in_types_register_through_the_entry_point_group() -> None:
    assert {"vault_oidc", "aws_oidc", "gcp_oidc", "oidc_token"} <= set(registry.credential_types())
    assert registry.settings_model_for("vault_oidc").__name__ == "VaultOidcSettings"


async def test_an_installed_plugin_adds_a_credential_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, monkeypatch, entry="echo", module="tb_echo_plugin", type_name="echo")
    assert "echo" in registry.credential_types()
    settings = registry.settings_model_for("echo").model_validate({"prefix": "p-"})
    async with aiohttp.ClientSession() as http:
        backends = registry.Backends(BackendContext(http=http, clock=FrozenClock(1_800_000_000)))
        identity = Identity(issuer="dev", org="o", project="proj", subject="s")
        issued = await backends.get("echo").exchange(identity, "token", settings)
        await backends.close()
    assert issued.values == {"ECHO": "p-proj"}


def test_an_unknown_type_names_the_installed_ones() -> None:
    with pytest.raises(registry.UnknownCredentialType) as caught:
        registry.backend_class("nope")
    assert "vault_oidc" in str(caught.value)


def test_a_plugin_that_cannot_be_imported_is_reported_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, monkeypatch, entry="broken", module="tb_broken", type_name="broken")
    (tmp_path / "tb_broken.py").write_text("import a_module_that_is_not_installed\n")
    with pytest.raises(registry.BackendUnavailable, match="cannot be loaded"):
        registry.backend_class("broken")


def test_an_entry_point_naming_a_backend_of_another_type_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, monkeypatch, entry="alias", module="tb_alias", type_name="other")
    with pytest.raises(registry.BackendUnavailable, match="names a backend of type 'other'"):
        registry.backend_class("alias")


def test_a_missing_dependency_names_the_extra_that_brings_it() -> None:
    [entry_point] = [
        ep for ep in entry_points(group="tokenbroker.backends") if ep.name == "aws_oidc"
    ]
    assert registry.install_hint(entry_point, "boto3") == "tokenbroker[aws]"
    assert registry.install_hint(entry_point, "botocore.session") is None
    assert registry.install_hint(entry_point, "a_module_nobody_requires") is None
