"""Inbound trust: configured platform issuers, their JWKS, token validation and profiles."""

from tokenbroker.identity.models import Claims, Identity

__all__ = ["Claims", "Identity"]
