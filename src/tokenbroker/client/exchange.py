"""One ``tokenbroker exchange``: find the token, ask the broker (with retries), write the answer."""

from __future__ import annotations

import asyncio
import json
import math
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiohttp

from tokenbroker.client.broker import (
    broker_attempt,
    exchange_query,
    exchange_url,
    failure_for_reply,
    read_trace,
)
from tokenbroker.client.discovery import (
    EnvVariableSource,
    FileSource,
    PlatformToken,
    RequestedTokenSource,
    TokenSource,
    choose_token_source,
    parse_token_response,
    read_token_file,
    token_from_text,
    token_request_attempt,
    token_request_failure,
)
from tokenbroker.client.envfiles import (
    AppendTarget,
    find_append_target,
    replace_private,
    resolve_format,
    write_private,
)
from tokenbroker.client.failures import (
    EXIT_DENIED,
    EXIT_OK,
    Unavailable,
    UsageFailure,
)
from tokenbroker.client.retry import (
    Attempt,
    Deadline,
    HttpReply,
    Notify,
    is_retryable_status,
    send_with_retries,
)
from tokenbroker.client.trace import render_trace
from tokenbroker.clock import Clock
from tokenbroker.retry import Sleep

BROKER_URL_VARIABLE = "TOKENBROKER_URL"
DEFAULT_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ExchangeOptions:
    """What the command line asked for."""

    broker_url: str | None
    credential: str | None = None
    fmt: str | None = None
    output: Path | None = None
    append_env: bool = False
    dry_run: bool = False
    token_env: str | None = None
    token_file: Path | None = None
    audience: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    ca_cert: Path | None = None
    # --watch only: leave the job's leases to expire on exit instead of revoking them.
    keep: bool = False


@dataclass(frozen=True, slots=True)
class ClientRuntime:
    """The client's edges, passed in so tests can freeze time and capture output."""

    clock: Clock
    stdout: TextIO
    notify: Notify
    sleep: Sleep = asyncio.sleep
    rng: random.Random | None = None

    async def send(
        self,
        attempt: Attempt,
        *,
        what: str,
        deadline: Deadline,
        private_ca: str = "pass --ca-cert",
    ) -> HttpReply:
        """``send_with_retries`` on this runtime's clock, randomness, sleep and notices."""
        return await send_with_retries(
            attempt,
            what=what,
            deadline=deadline,
            clock=self.clock,
            rng=self.rng,
            sleep=self.sleep,
            notify=self.notify,
            private_ca=private_ca,
        )


def broker_url_from(options: ExchangeOptions, env: Mapping[str, str]) -> str:
    """``--broker``, else ``$TOKENBROKER_URL``."""
    url = options.broker_url or env.get(BROKER_URL_VARIABLE, "").strip()
    if not url:
        raise UsageFailure(f"no broker: pass --broker URL or set ${BROKER_URL_VARIABLE}")
    return url


def ssl_context(ca_cert: Path | None, *, source: str = "--ca-cert ") -> ssl.SSLContext | bool:
    """The system trust store, or a private CA bundle; verification is always on.

    ``source`` names where the bundle's path came from, in the message when it is unusable.
    """
    if ca_cert is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_cert))
    except (OSError, ssl.SSLError) as exc:
        raise UsageFailure(f"{source}{ca_cert}: not a readable PEM CA bundle ({exc})") from None


async def read_platform_token(
    source: TokenSource,
    env: Mapping[str, str],
    *,
    http: aiohttp.ClientSession,
    audience: str | None,
    deadline: Deadline,
    runtime: ClientRuntime,
) -> PlatformToken:
    """Read the token from its source; an ID-token endpoint is asked (with retries)."""
    described = source.describe()
    if isinstance(source, FileSource):
        return PlatformToken(read_token_file(source.path), described)
    if isinstance(source, EnvVariableSource):
        return PlatformToken(token_from_text(env.get(source.variable, ""), described), described)
    assert isinstance(source, RequestedTokenSource)
    reply = await runtime.send(
        token_request_attempt(http, source, audience), what=source.endpoint(), deadline=deadline
    )
    if reply.status == 200:
        return PlatformToken(parse_token_response(reply.body, source), described)
    if is_retryable_status(reply.status):
        raise Unavailable(f"{source.endpoint()} is unavailable (HTTP {reply.status}); retry later")
    raise token_request_failure(reply, source)


def write_credential_file(
    path: Path, body: str, *, append: bool = False, replace: bool = False
) -> None:
    """Write the broker's answer to ``path`` (0600): in place, appended, or replaced at once
    (``replace``, for a file a job keeps reading); a failure is a ``UsageFailure``."""
    try:
        if replace:
            replace_private(path, body)
        else:
            write_private(path, body, append=append)
    except OSError as exc:
        raise UsageFailure(
            f"cannot write the credential to {path} ({exc.strerror or type(exc).__name__})"
        ) from None


def credential_text(reply: HttpReply) -> str:
    """The body of a successful answer, as text."""
    try:
        return reply.body.decode("utf-8")
    except UnicodeDecodeError:
        raise Unavailable("the broker's answer is not UTF-8 text") from None


def _write_credential(
    body: str,
    fmt: str,
    options: ExchangeOptions,
    target: AppendTarget | None,
    runtime: ClientRuntime,
) -> None:
    if target is None and options.output is None:
        runtime.stdout.write(body if body.endswith("\n") else body + "\n")
        runtime.stdout.flush()
        return
    path = target.path if target is not None else options.output
    assert path is not None
    # A file gets the answer exactly as the broker sent it: a bare token (a federated
    # token file, read without stripping) must not gain a newline its reader sends along.
    write_credential_file(path, body, append=target is not None)
    if target is not None:
        runtime.notify(f"appended the credential to ${target.variable} ({fmt} lines)")
    else:
        runtime.notify(f"wrote the credential to {path} ({fmt})")


async def ask_broker(
    http: aiohttp.ClientSession,
    url: str,
    source: TokenSource,
    options: ExchangeOptions,
    env: Mapping[str, str],
    runtime: ClientRuntime,
    *,
    query: dict[str, str],
) -> HttpReply:
    """Read the platform token from ``source`` afresh, then POST the exchange (with retries).

    Returns the broker's last answer, whatever its status; the deadline is ``--timeout``.
    """
    deadline = Deadline(runtime.clock, options.timeout)
    token = await read_platform_token(
        source, env, http=http, audience=options.audience, deadline=deadline, runtime=runtime
    )
    runtime.notify(f"using the platform token from {token.source}")
    return await runtime.send(
        broker_attempt(
            http,
            url,
            token.value,
            body={"credential": options.credential} if options.credential else None,
            query=query,
        ),
        what="the broker",
        deadline=deadline,
    )


async def revoke_at_broker(
    options: ExchangeOptions, env: Mapping[str, str], runtime: ClientRuntime
) -> dict[str, object]:
    """Ask the broker to revoke what it issued for this job's platform token.

    The broker then never hands those credentials to a retry; it revokes Vault tokens itself
    and lists the credentials that can only expire.
    """
    url = exchange_url(broker_url_from(options, env), "/v1/leases/revoke")
    source = choose_token_source(env, token_env=options.token_env, token_file=options.token_file)
    deadline = Deadline(runtime.clock, options.timeout)
    connector = aiohttp.TCPConnector(ssl=ssl_context(options.ca_cert))
    async with aiohttp.ClientSession(connector=connector) as http:
        token = await read_platform_token(
            source, env, http=http, audience=options.audience, deadline=deadline, runtime=runtime
        )
        reply = await runtime.send(
            broker_attempt(http, url, token.value, body={"job": True}),
            what="the broker",
            deadline=deadline,
        )
    if reply.status != 200:
        raise failure_for_reply(reply)
    try:
        answer = json.loads(reply.body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise Unavailable("the broker's answer to the revocation is not JSON")
    return answer


def revocation_lines(answer: Mapping[str, object]) -> list[str]:
    """What the broker's answer to a revocation says it did, one line per lease."""
    lines = []
    for key, told in (("revoked", "the broker revoked"), ("not_revocable", "left to expire:")):
        leases = answer.get(key)
        for lease in leases if isinstance(leases, list) else []:
            if isinstance(lease, dict):
                name, lease_id = lease.get("credential"), lease.get("id")
                lines.append(f"{told} {name} (lease {lease_id})")
    return lines


def check_timeout(options: ExchangeOptions) -> None:
    """``--timeout`` is a positive, finite number of seconds."""
    if not 0 < options.timeout < math.inf:
        raise UsageFailure("--timeout must be a positive number of seconds")


async def run_exchange(
    options: ExchangeOptions, env: Mapping[str, str], runtime: ClientRuntime
) -> int:
    """Do one exchange; return the exit code, or raise a ``ClientFailure`` with its own."""
    url = exchange_url(broker_url_from(options, env))
    check_timeout(options)
    target = find_append_target(env) if options.append_env and not options.dry_run else None
    fmt = resolve_format(options.fmt, target)
    source = choose_token_source(env, token_env=options.token_env, token_file=options.token_file)
    connector = aiohttp.TCPConnector(ssl=ssl_context(options.ca_cert))
    async with aiohttp.ClientSession(connector=connector) as http:
        reply = await ask_broker(
            http,
            url,
            source,
            options,
            env,
            runtime,
            query=exchange_query(fmt, dry_run=options.dry_run),
        )
    if reply.status != 200:
        raise failure_for_reply(reply)
    if options.dry_run:
        trace = read_trace(reply)
        runtime.stdout.write(render_trace(trace))
        runtime.stdout.flush()
        return EXIT_OK if trace.get("allowed") is True else EXIT_DENIED
    _write_credential(credential_text(reply), fmt, options, target, runtime)
    return EXIT_OK
