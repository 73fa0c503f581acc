"""Configuration: TOML validated into typed models, with ``TOKENBROKER_*`` overrides."""

from tokenbroker.config.loader import load_settings, parse_settings
from tokenbroker.config.models import (
    AdminSettings,
    AssignmentConfig,
    CredentialConfig,
    IssuerSettings,
    LoggingSettings,
    OrganizationConfig,
    ServerSettings,
    Settings,
    SigningSettings,
    StoreSettings,
)
from tokenbroker.config.urls import is_loopback_url, require_trusted_url

__all__ = [
    "AdminSettings",
    "AssignmentConfig",
    "CredentialConfig",
    "IssuerSettings",
    "LoggingSettings",
    "OrganizationConfig",
    "ServerSettings",
    "Settings",
    "SigningSettings",
    "StoreSettings",
    "is_loopback_url",
    "load_settings",
    "parse_settings",
    "require_trusted_url",
]
