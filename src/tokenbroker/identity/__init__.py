"""Inbound trust: configured platform issuers, their JWKS, token validation and profiles.

Nothing is imported here, so that the runner's client can import ``identity.profiles`` (pure
data and functions) without the validator's server dependencies.
"""
