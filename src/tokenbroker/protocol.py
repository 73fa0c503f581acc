"""Names on the wire that the broker and the runner's client share (standard library only).

The exchange answer's body is each format's own shape (env lines, AWS's credential_process
JSON, a bare token), so what a client needs to know about any answer travels in headers.
"""

from __future__ import annotations

# The lease a credential was issued under (absent when no credential was issued: a runner
# document, a dry run).
LEASE_ID_HEADER = "X-Tokenbroker-Lease-Id"
# When the answer stops being valid, RFC 3339 UTC: the credential's expiry, or for a runner
# document carrying a token, that token's.
EXPIRES_AT_HEADER = "X-Tokenbroker-Expires-At"
