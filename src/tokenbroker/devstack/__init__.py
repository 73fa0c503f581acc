"""The local stack for ``tokenbroker dev`` and the tests: real parts, started on loopback."""
