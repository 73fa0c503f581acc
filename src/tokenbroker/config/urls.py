"""URL rules for anything the broker fetches keys from or trusts as an issuer."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback_url(url: str) -> bool:
    """Tell whether the URL's host is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    host = urlsplit(url).hostname
    if host is None:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_trusted_url(url: str) -> str:
    """Return the URL if it is https, or http on a loopback host; raise ValueError otherwise.

    Keys and issuers are only trusted over TLS; the local stack and tests run on loopback.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("not an https URL")
    if parts.username or parts.password:
        raise ValueError("a URL must not carry credentials")
    if parts.scheme == "http" and not is_loopback_url(url):
        raise ValueError("not an https URL")
    return url
