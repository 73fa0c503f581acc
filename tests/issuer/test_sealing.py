"""Encryption at rest of the issuer's private keys (and any other stored secret)."""

from __future__ import annotations

import base64

import pytest

from tokenbroker.issuer.sealing import SealError, seal, unseal

KEY = "correct horse battery staple, but longer and from config"
SECRET = b'{"kty":"EC","d":"very-private-scalar"}'


def _flip_last_byte(part: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    raw[-1] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_sealed_value_round_trips_with_the_same_key() -> None:
    assert unseal(seal(SECRET, KEY), KEY) == SECRET


def test_sealed_value_is_versioned_and_does_not_contain_the_plaintext() -> None:
    sealed = seal(SECRET, KEY)
    version, nonce, ciphertext = sealed.split(":")
    assert version == "v1"
    assert len(base64.urlsafe_b64decode(nonce + "==")) == 12
    assert b"very-private-scalar" not in sealed.encode()
    assert "very-private-scalar" not in ciphertext


def test_sealing_twice_gives_different_output() -> None:
    # A fresh nonce each time: equal secrets must not be recognisable in the database.
    assert seal(SECRET, KEY) != seal(SECRET, KEY)


def test_unseal_with_a_wrong_key_raises_seal_error_without_leaking() -> None:
    sealed = seal(SECRET, KEY)
    with pytest.raises(SealError) as caught:
        unseal(sealed, "another key entirely")
    message = str(caught.value) + repr(caught.value)
    assert "wrong store.encryption_key" in message
    assert "very-private-scalar" not in message
    assert KEY not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_tampered_ciphertext_is_refused() -> None:
    version, nonce, ciphertext = seal(SECRET, KEY).split(":")
    with pytest.raises(SealError):
        unseal(f"{version}:{nonce}:{_flip_last_byte(ciphertext)}", KEY)


def test_tampered_nonce_is_refused() -> None:
    version, nonce, ciphertext = seal(SECRET, KEY).split(":")
    with pytest.raises(SealError):
        unseal(f"{version}:{_flip_last_byte(nonce)}:{ciphertext}", KEY)


def test_associated_data_must_match_to_unseal() -> None:
    sealed = seal(SECRET, KEY, associated_data=b"kid-1")
    assert unseal(sealed, KEY, associated_data=b"kid-1") == SECRET
    with pytest.raises(SealError):
        unseal(sealed, KEY, associated_data=b"kid-2")


@pytest.mark.parametrize(
    "sealed",
    ["", "v1:abc", "v1:a:b:c", "v2:AAAAAAAAAAAAAAAA:AAAA", "v1:!!!!:AAAA", "v1:AAAA:AAAA"],
)
def test_malformed_sealed_values_are_refused(sealed: str) -> None:
    with pytest.raises(SealError):
        unseal(sealed, KEY)


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(SealError, match="empty"):
        seal(SECRET, "")


def test_empty_plaintext_round_trips() -> None:
    assert unseal(seal(b"", KEY), KEY) == b""
