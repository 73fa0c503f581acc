"""Encryption at rest for secrets kept in the store (the issuer's private keys).

A sealed value is self-describing text, ``v1:<nonce>:<ciphertext>`` (URL-safe base64, no
padding), so the format can change later without guessing what an old row holds.
``v1`` is AES-256-GCM with a random 96-bit nonce; its 256-bit key is derived from the
configured ``store.encryption_key`` with HKDF-SHA256, so any string of enough entropy works.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "v1"
_NONCE_BYTES = 12
# Binds the derived key to this use: the same config string used elsewhere yields another key.
_HKDF_INFO = b"tokenbroker/sealing/v1/aes-256-gcm"
_HKDF_SALT = b"tokenbroker-sealing"


class SealError(Exception):
    """A value could not be sealed or unsealed; the message never holds key or data."""


def seal(plaintext: bytes, key: str, *, associated_data: bytes = b"") -> str:
    """Encrypt ``plaintext`` with a key derived from ``key``; return ``v1:<nonce>:<ct>``.

    ``associated_data`` (e.g. a row id) is authenticated, not stored: unseal must pass the same.
    """
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = AESGCM(_derive(key)).encrypt(nonce, plaintext, associated_data)
    return f"{_VERSION}:{_b64encode(nonce)}:{_b64encode(ciphertext)}"


def unseal(sealed: str, key: str, *, associated_data: bytes = b"") -> bytes:
    """Decrypt a value made by :func:`seal`; SealError on a wrong key, tampering or bad format."""
    parts = sealed.split(":")
    if len(parts) != 3:
        raise SealError("sealed value is malformed (expected 'v1:<nonce>:<ciphertext>')")
    version, nonce_text, ciphertext_text = parts
    if version != _VERSION:
        raise SealError(f"sealed value has unsupported format version {version[:8]!r}")
    try:
        nonce = _b64decode(nonce_text)
        ciphertext = _b64decode(ciphertext_text)
    except (binascii.Error, ValueError):
        raise SealError("sealed value is malformed (bad base64)") from None
    if len(nonce) != _NONCE_BYTES:
        raise SealError("sealed value is malformed (bad nonce length)")
    try:
        return AESGCM(_derive(key)).decrypt(nonce, ciphertext, associated_data)
    except InvalidTag:
        # `from None`: the cryptography exception adds nothing and must not chain into logs.
        raise SealError(
            "cannot unseal: wrong store.encryption_key or the sealed value was altered"
        ) from None


def _derive(key: str) -> bytes:
    if not key:
        raise SealError("store.encryption_key is empty")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO).derive(
        key.encode("utf-8")
    )


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
