"""URL rules for anything the broker fetches keys from, trusts as an issuer or sends tokens to.

Outbound URLs set by an administrator (backend addresses, issuers, JWKS) must not make the
broker a proxy into its own network: https only, and never a loopback, private, link-local,
metadata or otherwise non-global address, unless ``[security] allow_private_backends`` is on
(then http to loopback is allowed too, for the local stack). The URL is checked when it is
configured (:func:`require_trusted_url`), and the address actually connected to is checked
again at connect time (the outbound session's socket factory, ``web/app.py``), so a name that
resolves to a private address (DNS rebinding, ``127.0.0.1.nip.io``) is refused as well.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from pydantic import ValidationInfo

_LOOPBACK_NAMES = frozenset({"localhost"})
# Cloud instance metadata services by name; by address they are link-local or private.
_METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
# An IPv4 address written into a host name (127.0.0.1.nip.io, 10-0-0-1.sslip.io).
_EMBEDDED_IPV4 = re.compile(r"(?<![0-9])((?:[0-9]{1,3}[.-]){3}[0-9]{1,3})(?![0-9])")
# Shorthand IPv4 forms the C resolver accepts: 2130706433, 0x7f000001, 127.1, 0177.0.0.1.
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}$")
# The key a pydantic validation context carries the policy under (see url_context).
ALLOW_PRIVATE_CONTEXT_KEY = "allow_private_backends"
PRIVATE_ADDRESS_HINT = (
    "must not point at a loopback, private, link-local or metadata address "
    "(a local stack sets [security] allow_private_backends = true)"
)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def is_private_address(address: IpAddress) -> bool:
    """Tell whether an address is anything but a public unicast one (loopback, private, ...)."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return is_private_address(mapped)
    return not address.is_global or address.is_multicast


def is_private_host(host: str) -> bool:
    """Tell whether a URL host names, embeds or spells a non-public address (no DNS lookup)."""
    name = host.lower().rstrip(".")
    if name in _LOOPBACK_NAMES or name.endswith(".localhost") or name in _METADATA_NAMES:
        return True
    try:
        return is_private_address(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    if _NUMERIC_HOST.match(name):
        try:
            return is_private_address(ipaddress.IPv4Address(socket.inet_aton(name)))
        except OSError:
            return True  # not an address a resolver agrees on: refuse rather than guess
    for embedded in _EMBEDDED_IPV4.findall(name):
        try:
            if is_private_address(ipaddress.IPv4Address(embedded.replace("-", "."))):
                return True
        except ValueError:
            continue
    return False


def require_trusted_url(url: str, *, allow_private: bool = False) -> str:
    """Return the URL if it is https to a public host; raise ValueError otherwise.

    With ``allow_private`` any host is accepted over https, and loopback hosts over http too
    (the local stack and tests run on loopback).
    """
    parts = urlsplit(url)
    try:
        host = parts.hostname
    except ValueError:
        host = None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("not an https URL")
    if parts.username or parts.password:
        raise ValueError("a URL must not carry credentials")
    if parts.scheme == "http" and not (allow_private and is_loopback_url(url)):
        raise ValueError("not an https URL")
    if not allow_private and is_private_host(host):
        raise ValueError(PRIVATE_ADDRESS_HINT)
    return url


def url_context(*, allow_private_backends: bool) -> dict[str, object]:
    """The pydantic validation context that tells backend URL validators the policy."""
    return {ALLOW_PRIVATE_CONTEXT_KEY: allow_private_backends}


def require_backend_url(url: str, info: ValidationInfo) -> str:
    """:func:`require_trusted_url` for a credential's settings, under the context's policy.

    Admission (config load, admin API) always validates with :func:`url_context`. Without a
    context (settings already admitted, parsed again for an exchange) only the URL's shape is
    checked: the connect-time check still refuses a private address.
    """
    context = info.context
    if context is None:
        return require_trusted_url(url, allow_private=True)
    allowed = isinstance(context, dict) and context.get(ALLOW_PRIVATE_CONTEXT_KEY) is True
    return require_trusted_url(url, allow_private=allowed)
