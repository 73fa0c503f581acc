"""``DbKeyStore``: the issuer's signing keys in the store, private JWKs sealed at rest.

Every instance sharing the database signs with the same keys. A private JWK is sealed with
``store.encryption_key`` (issuer/sealing.py) and bound to its row's kid, so a sealed value
copied onto another row does not unseal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from tokenbroker.issuer.keys import KeyStore, KeyStoreError, SigningKey, key_from_record
from tokenbroker.issuer.sealing import SealError, seal, unseal
from tokenbroker.store.facade import Store
from tokenbroker.store.repository import SigningKeyRow


class DbKeyStore(KeyStore):
    """A :class:`KeyStore` over the ``signing_keys`` table; ``save`` is one transaction."""

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
        async with self._store.reading() as repo:
            rows = await repo.signing_key_rows()
        return [self._unsealed(row) for row in rows]

    async def save(self, keys: Sequence[SigningKey]) -> None:
        """Replace the stored set with ``keys`` in one transaction."""
        rows = [self._sealed(key) for key in keys]
        async with self._store.transaction() as repo:
            await repo.replace_signing_key_rows(rows)

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
