"""Signing keys of the broker's own issuer, and where they are kept.

A key is plain data (:class:`SigningKey`); a :class:`KeyStore` loads the whole set and changes
it with one atomic read-modify-write (:meth:`KeyStore.update`), so processes sharing a store
cannot overwrite each other's keys. The broker keeps its keys in the database store
(``store/keystore.py``, private keys sealed); :class:`FileKeyStore` is the older JSON file in
the data directory, still read to import an existing install's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol, TypeAlias, cast, get_args

from joserfc import jwk

Algorithm = Literal["ES256", "RS256"]
KeyState = Literal["active", "retiring"]

ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)
_KEY_TYPE: Mapping[Algorithm, Literal["EC", "RSA"]] = {"ES256": "EC", "RS256": "RSA"}
# The public members of each key type (RFC 7518 section 6). Publishing is an allow-list, so a
# private member (d, p, q, dp, dq, qi, oth) can never slip into the JWKS.
_PUBLIC_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "EC": ("kty", "crv", "x", "y"),
    "RSA": ("kty", "n", "e"),
}
_RSA_BITS = 2048
_FILE_FORMAT = 1


class KeyStoreError(Exception):
    """Stored keys cannot be read or written; the message never holds key material."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One signing key of the broker's issuer: ``active`` signs, ``retiring`` is only published."""

    kid: str
    algorithm: Algorithm
    state: KeyState
    created_at: datetime
    retired_at: datetime | None
    private_jwk: Mapping[str, object] = field(repr=False)

    def public_jwk(self) -> dict[str, object]:
        """The public half as a JWK with ``kid``, ``alg`` and ``use``; never a private member."""
        kty = _KEY_TYPE[self.algorithm]
        public: dict[str, object] = {name: self.private_jwk[name] for name in _PUBLIC_MEMBERS[kty]}
        public.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        return public

    def retire(self, now: datetime) -> SigningKey:
        """This key, no longer signing, published until its retirement period ends."""
        return replace(self, state="retiring", retired_at=now)


KeyChange: TypeAlias = Callable[[list[SigningKey]], list[SigningKey] | None]
"""A pure change of the stored set: the keys to store instead, or None to leave them."""


class KeyStore(Protocol):
    """Where the issuer's signing keys live: read them, or change them in one atomic step."""

    async def load(self) -> list[SigningKey]:
        """Return every stored key (empty on first start)."""
        ...

    async def update(self, change: KeyChange) -> list[SigningKey]:
        """Under one lock: load, apply ``change``, store its result unless None; return the set.

        Nobody else writes between the load and the store, so concurrent updates serialize.
        ``change`` may run in a worker thread and may be called once only: keep it pure.
        """
        ...


def generate_signing_key(algorithm: Algorithm, now: datetime) -> SigningKey:
    """A fresh active key (P-256 for ES256, RSA-2048 for RS256); kid = RFC 7638 thumbprint."""
    if algorithm == "ES256":
        key: jwk.ECKey | jwk.RSAKey = jwk.ECKey.generate_key("P-256")
    elif algorithm == "RS256":
        key = jwk.RSAKey.generate_key(_RSA_BITS)
    else:
        raise ValueError(f"unsupported signing algorithm {algorithm!r}")
    kid = key.thumbprint()
    private = dict(key.as_dict(private=True))
    private.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return SigningKey(
        kid=kid,
        algorithm=algorithm,
        state="active",
        created_at=now,
        retired_at=None,
        private_jwk=private,
    )


def import_signing_key(key: SigningKey) -> jwk.ECKey | jwk.RSAKey:
    """The joserfc private key object for ``key``, checked against its algorithm and kid."""
    kty = _KEY_TYPE[key.algorithm]
    data = cast(dict[str, str | list[str]], dict(key.private_jwk))
    try:
        imported: jwk.ECKey | jwk.RSAKey = (
            jwk.ECKey.import_key(data) if kty == "EC" else jwk.RSAKey.import_key(data)
        )
    except Exception:  # joserfc raises several types; the key material must not reach the message
        raise KeyStoreError(f"signing key {key.kid!r} is not a valid {kty} private key") from None
    if not imported.is_private:
        raise KeyStoreError(f"signing key {key.kid!r} has no private part")
    if isinstance(imported, jwk.ECKey) and imported.curve_name != "P-256":
        raise KeyStoreError(f"signing key {key.kid!r} is not on curve P-256 (needed for ES256)")
    if imported.thumbprint() != key.kid:
        raise KeyStoreError(f"signing key {key.kid!r} does not match its thumbprint")
    return imported


def key_to_record(key: SigningKey) -> dict[str, object]:
    """``key`` as a JSON-ready dict (private material included: seal or protect it)."""
    return {
        "kid": key.kid,
        "algorithm": key.algorithm,
        "state": key.state,
        "created_at": key.created_at.isoformat(),
        "retired_at": key.retired_at.isoformat() if key.retired_at else None,
        "private_jwk": dict(key.private_jwk),
    }


def key_from_record(record: Mapping[str, object]) -> SigningKey:
    """Parse a dict made by :func:`key_to_record`; KeyStoreError naming the problem."""
    kid = record.get("kid")
    algorithm = record.get("algorithm")
    state = record.get("state")
    private_jwk = record.get("private_jwk")
    if not isinstance(kid, str) or not kid:
        raise KeyStoreError("stored signing key has no kid")
    if algorithm not in ALGORITHMS:
        raise KeyStoreError(f"stored signing key {kid!r} has unknown algorithm")
    if state not in ("active", "retiring"):
        raise KeyStoreError(f"stored signing key {kid!r} has unknown state")
    if not isinstance(private_jwk, dict):
        raise KeyStoreError(f"stored signing key {kid!r} has no private_jwk object")
    created_at = _parse_time(record.get("created_at"), kid, "created_at")
    retired_raw = record.get("retired_at")
    retired_at = None if retired_raw is None else _parse_time(retired_raw, kid, "retired_at")
    return SigningKey(
        kid=kid,
        algorithm=algorithm,
        state=state,
        created_at=created_at,
        retired_at=retired_at,
        private_jwk={str(k): v for k, v in private_jwk.items()},
    )


def _parse_time(value: object, kid: str, name: str) -> datetime:
    if not isinstance(value, str):
        raise KeyStoreError(f"stored signing key {kid!r} has no {name}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise KeyStoreError(f"stored signing key {kid!r} has a malformed {name}") from None
    if parsed.tzinfo is None:
        raise KeyStoreError(f"stored signing key {kid!r} has a {name} without a time zone")
    return parsed


class FileKeyStore:
    """Keys in ``<directory>/signing-keys.json``: directory 0700, file 0600, replaced atomically.

    Updates hold an exclusive ``flock`` on ``.signing-keys.lock`` beside it, so processes on
    one machine (a server and ``tokenbroker keys rotate``) take turns.
    """

    FILENAME = "signing-keys.json"
    LOCK_FILENAME = ".signing-keys.lock"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / self.FILENAME
        self.lock_path = directory / self.LOCK_FILENAME

    def __repr__(self) -> str:
        return f"FileKeyStore({str(self.directory)!r})"

    async def load(self) -> list[SigningKey]:
        """Read every key; an absent file is an empty set."""
        return await asyncio.to_thread(self._load)

    async def update(self, change: KeyChange) -> list[SigningKey]:
        """Load, change and save under the lock file; the new file replaces the old by rename."""
        # Blocking flock and file I/O: in a worker thread, never on the event loop.
        return await asyncio.to_thread(self._update, change)

    def _update(self, change: KeyChange) -> list[SigningKey]:
        self._prepare_directory()
        try:
            lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KeyStoreError(f"cannot open {self.lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            keys = self._load()
            changed = change(list(keys))
            if changed is None:
                return keys
            self._save(changed)
            return list(changed)
        finally:
            # Closing the descriptor releases the lock, also when the change raised.
            os.close(lock_fd)

    def _load(self) -> list[SigningKey]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise KeyStoreError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            document = json.loads(text)
        except ValueError:
            raise KeyStoreError(f"{self.path} is not valid JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise KeyStoreError(f"{self.path} has no 'keys' list")
        if document.get("format") != _FILE_FORMAT:
            raise KeyStoreError(f"{self.path} has an unsupported format")
        records = cast(list[object], document["keys"])
        keys: list[SigningKey] = []
        for record in records:
            if not isinstance(record, dict):
                raise KeyStoreError(f"{self.path} holds a key that is not an object")
            keys.append(key_from_record(record))
        return keys

    def _prepare_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkdir's mode is masked by umask and ignored for an existing directory.
            os.chmod(self.directory, 0o700)
        except OSError as exc:
            raise KeyStoreError(f"cannot write to {self.directory}: {exc.strerror}") from None

    def _save(self, keys: list[SigningKey]) -> None:
        document = {"format": _FILE_FORMAT, "keys": [key_to_record(k) for k in keys]}
        payload = json.dumps(document, indent=2).encode("utf-8")
        try:
            # mkstemp creates the file 0600 before any byte is written, so no window of wider mode.
            fd, temp_name = tempfile.mkstemp(prefix=".signing-keys.", dir=self.directory)
        except OSError as exc:
            raise KeyStoreError(f"cannot write to {self.directory}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise KeyStoreError(f"cannot write {self.path}: {exc.strerror}") from None
        _fsync_directory(self.directory)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename durable across a crash; not every platform allows opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
