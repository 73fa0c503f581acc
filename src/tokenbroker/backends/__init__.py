"""Credential backends: Vault, AWS, GCP, plain OIDC tokens, and any installed plugin."""

from tokenbroker.backends.base import Backend, BackendContext, IssuedCredential, RevocableBackend

__all__ = ["Backend", "BackendContext", "IssuedCredential", "RevocableBackend"]
