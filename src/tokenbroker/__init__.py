"""tokenbroker: platform OIDC tokens in, short-lived Vault, AWS and GCP credentials out."""

__version__ = "0.1.0"
