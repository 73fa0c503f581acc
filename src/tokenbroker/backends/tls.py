"""TLS trust for backends: a credential's own CA bundle (``ca_cert``), never verification off.

Shared by every credential type whose service may sit behind a private CA (an on-premises
Vault, a sovereign or test authority host), so each parses and caches bundles the same way.
"""

from __future__ import annotations

import hashlib
import ssl
from typing import Annotated

from cryptography import x509
from pydantic import AfterValidator


def _pem_bundle(value: str) -> str:
    try:
        certificates = x509.load_pem_x509_certificates(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("ca_cert must be PEM text holding one or more certificates") from exc
    if not certificates:
        raise ValueError("ca_cert must be PEM text holding one or more certificates")
    return value


PemBundle = Annotated[str, AfterValidator(_pem_bundle)]
"""A settings field holding PEM text of one or more CA certificates."""


class SslContexts:
    """Verified TLS contexts, one per CA bundle (building one parses every certificate)."""

    def __init__(self) -> None:
        self._by_bundle: dict[str, ssl.SSLContext] = {}

    def for_bundle(self, ca_cert: str | None) -> ssl.SSLContext | bool:
        """The context trusting ``ca_cert``, or the system's trust store (True) without one."""
        if ca_cert is None:
            return True  # aiohttp's default: verify against the system trust store.
        key = hashlib.sha256(ca_cert.encode()).hexdigest()
        context = self._by_bundle.get(key)
        if context is None:
            # create_default_context verifies certificates and host names; nothing turns that off.
            context = ssl.create_default_context(cadata=ca_cert)
            self._by_bundle[key] = context
        return context
