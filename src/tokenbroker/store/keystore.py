"""``DbKeyStore``: the issuer's signing keys in the store, private JWKs sealed at rest.

Every instance sharing the database signs with the same keys. A private JWK is sealed with
``store.encryption_key`` (issuer/sealing.py) and bound to its row's kid, so a sealed value
copied onto another row does not unseal. :func:`open_key_store` is the one way the server and
the CLI get their key store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from tokenbroker.config.models import Settings
from tokenbroker.errors import ConfigError
from tokenbroker.issuer.keys import (
    FileKeyStore,
    KeyChange,
    KeyStore,
    KeyStoreError,
    SigningKey,
    key_from_record,
)
from tokenbroker.issuer.sealing import SealError, seal, unseal
from tokenbroker.store.lifecycle import Store
from tokenbroker.store.signing_keys import SigningKeyRow

log = logging.getLogger(__name__)

ENCRYPTION_KEY_FILENAME = "store-encryption.key"
"""Where an embedded (SQLite) store keeps its generated encryption key, in the data dir."""
LEGACY_KEYS_DIRNAME = "keys"
"""The data-dir folder of the file key store older installs used; imported once."""
_GENERATED_KEY_BYTES = 32


async def open_key_store(settings: Settings, store: Store) -> KeyStore:
    """The issuer's key store in ``store``, sealing with the configured or generated key.

    PostgreSQL needs ``store.encryption_key`` (instances must share it); the embedded SQLite
    store generates one into the data directory on first start. Keys of the older file store
    are imported into an empty store, so an existing install keeps its kid.
    """
    key_store = DbKeyStore(store, await store_encryption_key(settings, store))
    await _import_file_keys(key_store, FileKeyStore(settings.server.data_dir / LEGACY_KEYS_DIRNAME))
    return key_store


class DbKeyStore(KeyStore):
    """A :class:`KeyStore` over the ``signing_keys`` table; each update is one transaction."""

    def __init__(self, store: Store, encryption_key: str) -> None:
        if not encryption_key:
            raise KeyStoreError(
                "store.encryption_key is required to keep signing keys in the store"
            )
        self._store = store
        self._encryption_key = encryption_key

    def __repr__(self) -> str:
        return f"DbKeyStore({self._store.display_url!r})"

    async def load(self) -> list[SigningKey]:
        """Every stored key, unsealed; KeyStoreError if a key cannot be unsealed or parsed."""
        with self._database_errors("read"):
            rows = await self._store.keys.rows()
        return [self._unsealed(row) for row in rows]

    async def update(self, change: KeyChange) -> list[SigningKey]:
        """Lock, load, change and replace the keys in one write transaction."""
        with self._database_errors("update"):
            return await self._update(change)

    async def _update(self, change: KeyChange) -> list[SigningKey]:
        async with self._store.transaction() as unit:
            # The lock comes before the read: another instance's change is either wholly
            # before ours (and we see it) or waits for our commit.
            await unit.keys.lock()
            keys = [self._unsealed(row) for row in await unit.keys.rows()]
            changed = change(list(keys))
            if changed is None:
                return keys
            await unit.keys.replace([self._sealed(key) for key in changed])
            return list(changed)

    @contextlib.contextmanager
    def _database_errors(self, action: str) -> Iterator[None]:
        # A KeyStoreError lets the key ring's refresher keep its keys through a database
        # outage. Only the class name is kept: SQLAlchemy's message would carry the statement
        # and its parameters, which include sealed keys.
        try:
            yield
        except (SQLAlchemyError, OSError) as exc:
            raise KeyStoreError(
                f"cannot {action} signing keys in {self._store.display_url}: {type(exc).__name__}"
            ) from None

    def _sealed(self, key: SigningKey) -> SigningKeyRow:
        plaintext = json.dumps(dict(key.private_jwk), sort_keys=True).encode("utf-8")
        try:
            sealed = seal(plaintext, self._encryption_key, associated_data=_bound_to(key.kid))
        except SealError as exc:
            raise KeyStoreError(f"cannot seal signing key {key.kid!r}: {exc}") from None
        return SigningKeyRow(
            kid=key.kid,
            alg=key.algorithm,
            state=key.state,
            created_at=key.created_at,
            retired_at=key.retired_at,
            public_jwk=key.public_jwk(),
            private_jwk_sealed=sealed,
        )

    def _unsealed(self, row: SigningKeyRow) -> SigningKey:
        try:
            plaintext = unseal(
                row.private_jwk_sealed, self._encryption_key, associated_data=_bound_to(row.kid)
            )
            private_jwk = json.loads(plaintext)
        except SealError as exc:
            raise KeyStoreError(f"signing key {row.kid!r}: {exc}") from None
        except ValueError:
            raise KeyStoreError(f"signing key {row.kid!r} unsealed to something not JSON") from None
        return key_from_record(
            {
                "kid": row.kid,
                "algorithm": row.alg,
                "state": row.state,
                "created_at": row.created_at.isoformat(),
                "retired_at": row.retired_at.isoformat() if row.retired_at else None,
                "private_jwk": private_jwk,
            }
        )


def _bound_to(kid: str) -> bytes:
    return f"tokenbroker/signing_keys/{kid}".encode()


async def store_encryption_key(settings: Settings, store: Store) -> str:
    """``store.encryption_key``, or the embedded store's generated one (made on first use)."""
    configured = settings.store.encryption_key
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value()
    # A PostgreSQL store without a configured key never gets here: the config refuses it.
    return await asyncio.to_thread(_embedded_encryption_key, settings.server.data_dir)


def _embedded_encryption_key(data_dir: Path) -> str:
    """The key in ``<data_dir>/store-encryption.key``, made (0600, dir 0700) if absent."""
    path = data_dir / ENCRYPTION_KEY_FILENAME
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is masked by umask and ignored for an existing directory.
        os.chmod(data_dir, 0o700)
        if not path.exists():
            _create_once(path, secrets.token_urlsafe(_GENERATED_KEY_BYTES))
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([f"store.encryption_key: cannot use {path}: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"store.encryption_key: {path} is not text"]) from None
    if not key:
        raise ConfigError(
            [f"store.encryption_key: {path} is empty (restore it, or set store.encryption_key)"]
        )
    return key


def _create_once(path: Path, content: str) -> None:
    # Written to a 0600 temp file first, then hard-linked into place: the file appears whole
    # or not at all, and a process starting at the same moment cannot overwrite it (the
    # loser's link fails and it reads the winner's key).
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp_name, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
    with contextlib.suppress(OSError):
        # Makes the new name durable across a crash; not every platform opens directories.
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


async def _import_file_keys(key_store: DbKeyStore, file_store: FileKeyStore) -> None:
    """Copy the older file store's keys into an empty store, once; the file is left as is."""
    if not await asyncio.to_thread(file_store.path.exists) or await key_store.load():
        return
    found = await file_store.load()
    if not found:
        return
    imported: list[SigningKey] = []

    def import_into_empty(stored: list[SigningKey]) -> list[SigningKey] | None:
        # Another instance may have filled the store since the check above: then keep its keys.
        if stored:
            return None
        imported.extend(found)
        return list(found)

    await key_store.update(import_into_empty)
    if imported:
        log.info(
            "imported %d signing key(s) (kid %s) from %s into the store; the file is no "
            "longer read and can be removed",
            len(imported),
            ", ".join(key.kid for key in imported),
            file_store.path,
        )
