"""Credential types by name, from the ``tokenbroker.backends`` entry-point group.

Built-ins register through the same group as third-party packages (see pyproject.toml), and a
class is imported only when its type is first used, so a missing optional dependency of one
backend (boto3, google-auth) never breaks the others.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from pydantic import BaseModel

from tokenbroker.backends.base import (
    Backend,
    BackendContext,
    BackendFactory,
    CredentialTraits,
    SettingsAdvisories,
    traits_of,
)
from tokenbroker.errors import UnusableCredentialType

ENTRY_POINT_GROUP = "tokenbroker.backends"
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class UnknownCredentialType(UnusableCredentialType, LookupError):
    """No installed backend provides this credential type."""

    def __init__(self, type_name: str, known: list[str]) -> None:
        self._installed = f"installed types: {', '.join(known) or 'none'}"
        super().__init__(f"unknown credential type {type_name!r}; {self._installed}")
        self.type_name = type_name

    @property
    def problem(self) -> str:
        return f"unknown credential type; {self._installed}"


class BackendUnavailable(UnusableCredentialType, ImportError):
    """The backend is registered but its module or a dependency of it cannot be imported."""


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def install_hint(entry_point: EntryPoint, missing_module: str | None) -> str | None:
    """The extra of the entry point's distribution that requires the missing module, if any.

    Read from the distribution's own metadata (``Requires-Dist: boto3; extra == "aws"``), so a
    plugin's extras give hints too and no backend is named here.
    """
    dist = entry_point.dist
    if dist is None or not missing_module:
        return None
    top = missing_module.split(".")[0].lower().replace("_", "-")
    for requirement in dist.requires or ():
        name, _, marker = requirement.partition(";")
        extra = _EXTRA_MARKER.search(marker)
        project = _REQUIREMENT_NAME.match(name.strip())
        if extra and project and project.group(0).lower().replace("_", "-") == top:
            return f"{dist.metadata['Name']}[{extra.group(1)}]"
    return None


def credential_types() -> list[str]:
    """Names of every installed credential type."""
    return sorted(_entry_points())


@cache
def backend_class(type_name: str) -> BackendFactory:
    """The backend class of a credential type, imported on first use."""
    entry_point = _entry_points().get(type_name)
    if entry_point is None:
        raise UnknownCredentialType(type_name, credential_types())
    try:
        loaded: BackendFactory = entry_point.load()
    except ImportError as exc:
        hint = install_hint(entry_point, exc.name)
        suffix = f"; install {hint!r}" if hint else ""
        raise BackendUnavailable(
            f"credential type {type_name!r} cannot be loaded: {exc}{suffix}"
        ) from exc
    if loaded.type_name != type_name:
        raise BackendUnavailable(
            f"entry point {type_name!r} names a backend of type {loaded.type_name!r}"
        )
    return loaded


def settings_model_for(type_name: str) -> type[BaseModel]:
    """The pydantic schema a credential of this type must validate against."""
    return backend_class(type_name).settings_model


class InstalledTypes:
    """The installed credential types, as the store asks about them (its ``CredentialTypes``).

    The store imports no backends: whoever builds one hands it :data:`INSTALLED`. Each method
    raises UnknownCredentialType or BackendUnavailable.
    """

    def settings_model(self, type_name: str) -> type[BaseModel]:
        """The pydantic schema a credential of this type must validate against."""
        return settings_model_for(type_name)

    def traits(self, type_name: str) -> CredentialTraits:
        """What the type's backend class declares."""
        return traits_of(backend_class(type_name))

    def advisories(self, settings: BaseModel) -> list[str]:
        """What valid settings advise against (``SettingsAdvisories``); empty when nothing."""
        return settings.advisories() if isinstance(settings, SettingsAdvisories) else []


INSTALLED = InstalledTypes()
"""Every credential type installed through the entry-point group."""


class Backends:
    """The backend instances of one application, built on first use and closed at shutdown."""

    def __init__(self, context: BackendContext) -> None:
        self._context = context
        self._instances: dict[str, Backend] = {}

    def get(self, type_name: str) -> Backend:
        """The backend for a credential type (raises UnknownCredentialType/BackendUnavailable)."""
        backend = self._instances.get(type_name)
        if backend is None:
            backend = backend_class(type_name)(self._context)
            self._instances[type_name] = backend
        return backend

    async def close(self) -> None:
        """Release what each backend holds (thread pools, clients)."""
        for backend in self._instances.values():
            close = getattr(backend, "close", None)
            if close is not None:
                await close()
        self._instances.clear()
