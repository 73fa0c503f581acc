"""The broker's own OIDC issuer: signing keys, the key ring, minting, discovery documents."""

from __future__ import annotations

from tokenbroker.config.models import Settings
from tokenbroker.issuer.keys import FileKeyStore, KeyStore


def key_store_for(settings: Settings) -> KeyStore:
    """The KeyStore the server and CLI use for ``settings`` (the data directory, for now)."""
    return FileKeyStore(settings.server.data_dir / "keys")
