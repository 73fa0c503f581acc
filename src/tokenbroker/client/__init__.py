"""The runner's client: find the platform token, exchange it at the broker, write the result.

``tokenbroker exchange`` and ``tokenbroker revoke`` (in ``cli/``) only wire these modules; the
decisions (which token source, whether to retry, where to write, how to show a trace) are small
functions here, tested on their own.
"""
