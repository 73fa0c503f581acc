"""The broker's own OIDC issuer: signing keys, the key ring, minting, discovery documents."""
