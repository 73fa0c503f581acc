"""Inbound trust: configured platform issuers, their JWKS, token validation and profiles."""

from tokenbroker.identity.jwks import JwksCache
from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles import identify
from tokenbroker.identity.validator import TokenValidator, ValidatedToken

__all__ = ["Claims", "Identity", "JwksCache", "TokenValidator", "ValidatedToken", "identify"]
