"""A token's fingerprint: what logs and audit events hold instead of the token."""

from __future__ import annotations

import hashlib


def token_fingerprint(token: str) -> str:
    """SHA-256 of the token, hex: lets an operator match a token without storing it."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
