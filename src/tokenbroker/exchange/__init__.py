"""The exchange: one run per request (validate, identify, decide, outbound, backend, audit)."""
