"""``tokenbroker token``: the dev platform issuer (mint, serve-issuer) and ``decode``."""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import os
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from tokenbroker.cli.common import EXIT_FAILURE, EXIT_OK, CliError
from tokenbroker.clock import SystemClock
from tokenbroker.config.models import IssuerSettings
from tokenbroker.devstack.platform_issuer import (
    DEFAULT_BASE_URL,
    DEV_PROFILES,
    DevPlatformIssuer,
    create_issuer_app,
)
from tokenbroker.errors import BrokerError
from tokenbroker.identity.jwks import JwksCache
from tokenbroker.identity.validator import TokenValidator

DEFAULT_KEYS_DIR = Path(".tokenbroker") / "dev-issuer"
DEFAULT_PORT = 8401


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``token`` verb and its ``mint``, ``decode`` and ``serve-issuer`` actions."""
    parser = subparsers.add_parser("token", help="dev platform tokens: mint, decode, serve keys")
    actions = parser.add_subparsers(dest="token_action", metavar="ACTION", required=True)

    mint = actions.add_parser("mint", help="print a signed, platform-shaped dev token")
    mint.add_argument("--profile", required=True, choices=DEV_PROFILES)
    mint.add_argument("--org", required=True, help="platform organization id")
    mint.add_argument("--project", required=True, help="platform project id")
    mint.add_argument("--environment", help="environment id (for platforms whose tokens name one)")
    mint.add_argument("--audience", help="aud (default: the platform's usual one)")
    mint.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="K=V",
        help="set a claim; V is parsed as JSON when it is JSON (repeatable)",
    )
    mint.add_argument("--lifetime", type=int, metavar="SECONDS", help="exp - iat")
    _add_issuer_arguments(mint)
    mint.set_defaults(handler=run_mint)

    decode = actions.add_parser(
        "decode", help="print a token's header and claims (NOT verified unless --verify)"
    )
    decode.add_argument("token", help="the JWT, or '-' to read it from stdin")
    decode.add_argument("--verify", action="store_true", help="verify signature and times")
    decode.add_argument("--jwks-uri", help="JWKS to verify against (with --verify)")
    decode.add_argument("--audience", action="append", help="accepted aud (with --verify)")
    decode.set_defaults(handler=run_decode)

    serve = actions.add_parser("serve-issuer", help="serve the dev issuers' discovery and JWKS")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--keys-dir", type=Path, default=_default_keys_dir())
    serve.set_defaults(handler=run_serve_issuer)


def _default_keys_dir() -> Path:
    return Path(os.environ.get("TOKENBROKER_DEV_KEYS_DIR", DEFAULT_KEYS_DIR))


def _add_issuer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys-dir", type=Path, default=_default_keys_dir())
    parser.add_argument(
        "--issuer-base",
        default=os.environ.get("TOKENBROKER_DEV_ISSUER_BASE", DEFAULT_BASE_URL),
        help=f"base URL the dev issuer is served at (default {DEFAULT_BASE_URL})",
    )


def parse_claim(text: str) -> tuple[str, object]:
    """``k=v`` -> (k, v), with v parsed as JSON when it is JSON and kept a string otherwise."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise CliError(f"--claim {text!r}: expected NAME=VALUE")
    try:
        value: object = json.loads(raw)
    except ValueError:
        value = raw
    return name, value


def run_mint(args: argparse.Namespace) -> int:
    """Print a dev token for the profile."""
    issuer = DevPlatformIssuer(args.keys_dir, args.issuer_base)
    claims = dict(parse_claim(text) for text in args.claim)
    token = issuer.mint(
        args.profile,
        org=args.org,
        project=args.project,
        audience=args.audience,
        claims=claims,
        lifetime_seconds=args.lifetime,
        environment=args.environment,
    )
    print(token)
    return EXIT_OK


def decode_unverified(token: str) -> tuple[dict[str, object], dict[str, object]]:
    """Header and claims of a compact JWT, without checking anything (for display only)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise CliError("not a JWT: expected three dot-separated segments")
    try:
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
    except (ValueError, binascii.Error):
        raise CliError("not a JWT: header or payload is not base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise CliError("not a JWT: header or payload is not a JSON object")
    return header, claims


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def run_decode(args: argparse.Namespace) -> int:
    """Print header and claims; verify them only when ``--verify`` is given."""
    token = sys.stdin.read().strip() if args.token == "-" else args.token.strip()
    header, claims = decode_unverified(token)
    verified = False
    if args.verify:
        if not args.jwks_uri:
            raise CliError("--verify needs --jwks-uri")
        asyncio.run(_verify(token, claims, args.jwks_uri, args.audience))
        verified = True
    else:
        print("tokenbroker: signature NOT verified (use --verify --jwks-uri URL)", file=sys.stderr)
    print(json.dumps({"verified": verified, "header": header, "claims": claims}, indent=2))
    return EXIT_OK


async def _verify(
    token: str, claims: dict[str, object], jwks_uri: str, audiences: list[str] | None
) -> None:
    iss, aud = claims.get("iss"), claims.get("aud")
    token_audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    try:
        # The token's own iss and aud are trusted here: --verify answers "is this signature
        # good and the token current", not "would the broker accept it".
        issuer = IssuerSettings(
            name="cli",
            issuer=str(iss),
            jwks_uri=jwks_uri,
            audiences=audiences or [str(a) for a in token_audiences] or ["-"],
            profile="generic",
            options={"org_pointer": "/iss"},
        )
    except ValueError as exc:
        raise CliError(f"cannot verify: {exc}") from None
    clock = SystemClock()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        # The user's own command on their own token: a local dev issuer is fine to fetch from.
        jwks = JwksCache(http, clock, allow_private_backends=True)
        validator = TokenValidator([issuer], jwks, clock)
        try:
            await validator.validate_platform_token(token)
        except BrokerError as exc:
            raise CliError(f"verification failed: {exc.reason}: {exc.description}") from None


def run_serve_issuer(args: argparse.Namespace) -> int:
    """Serve the dev issuers' discovery documents and JWKS until interrupted."""
    base_url = f"http://{args.host}:{args.port}"
    issuer = DevPlatformIssuer(args.keys_dir, base_url)
    for profile in DEV_PROFILES:
        # One issuer per organization where the platform has that: shown with `<org>`.
        print(f"{profile}: {issuer.issuer_url(profile, org='<org>')}", file=sys.stderr)
    try:
        web.run_app(create_issuer_app(issuer), host=args.host, port=args.port, print=None)
    except OSError as exc:
        print(f"tokenbroker: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
