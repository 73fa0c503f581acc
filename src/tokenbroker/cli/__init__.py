"""The ``tokenbroker`` command."""
