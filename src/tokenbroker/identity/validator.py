"""Platform token validation: the first step of every exchange, and its hot path.

Cheap checks run before expensive ones: size, shape, issuer allow-list and algorithm come
before any key is fetched, and the signature before any claim is believed. Every failure is an
InvalidToken with a specific ``reason``; descriptions name the claim, kid or issuer, never the
token.

Validated tokens are remembered (``memo_size`` of them, by default 1024) because the same
token comes back again and again: CI runners retry with it, and the broker's idempotent-retry
path sees it on every retry, where parsing it and checking its signature again would learn
nothing new. A repeated token skips the base64/JSON parsing and the signature check, and
nothing else; that is as safe as validating it again:

- The memo is keyed by the SHA-256 of the exact token string, so a hit is the very same
  header, payload and signature bytes, which the same key verifies again. The memo holds the
  digest and the parsed claims, never the token (it must not become a store of bearer tokens).
- Every check before the key lookup (shape, issuer, size, algorithm, ``crit``, ``kid``) is a
  function of those bytes and of the issuers fixed when the validator was built.
- A hit asks the JWKS cache for the key exactly as a full validation does, and is used only
  when it returns the very ``Key`` object that verified the signature. The cache replaces its
  key objects whenever it refetches the issuer's JWKS, so a key that is removed or rotated out
  stops vouching for remembered tokens as soon as the cache lets go of it, as for new tokens.
- Time-dependent claims (``exp`` with leeway, ``nbf``, ``iat``, maximum age) and the audience
  and required claims are checked again on every use.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from joserfc.errors import JoseError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry

from tokenbroker.clock import Clock
from tokenbroker.config.models import IssuerSettings
from tokenbroker.errors import BrokerError, ConfigError, InvalidToken
from tokenbroker.identity.jwks import JwksCache
from tokenbroker.identity.models import Claims
from tokenbroker.identity.profiles import max_token_lifetime, profile_option_problems

# The largest max_token_bytes an issuer may configure; nothing bigger is even split.
ABSOLUTE_MAX_TOKEN_BYTES = 1024 * 1024
# Never accepted whatever the configuration says: `none` is unsigned, and HS* would let anyone
# holding the issuer's *public* key forge tokens with it as the shared secret.
FORBIDDEN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})
# Validated tokens remembered by default: the bound on the memo's memory (each entry is a
# token's parsed header and claims); expired entries make way as new tokens come in.
DEFAULT_MEMO_SIZE = 1024

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _reject_constant(name: str) -> object:
    # JSON has no NaN/Infinity; Python's parser accepts them, and `exp: Infinity` never expires.
    raise ValueError(f"{name} is not JSON")


_JSON = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass(frozen=True, slots=True)
class ValidatedToken:
    """A platform token whose signature and claims passed every check of its issuer.

    ``header`` and ``claims`` are shared with the validator's memo and with every later
    validation of the same token: read them, never change them (no caller does).
    """

    issuer: IssuerSettings
    header: Mapping[str, object]
    claims: Claims


@dataclass(frozen=True, slots=True)
class _CompiledIssuer:
    settings: IssuerSettings
    algorithms: Mapping[str, JWSAlgModel]
    audiences: frozenset[str]
    required_claims: tuple[tuple[str, tuple[object, ...]], ...]
    max_lifetime_seconds: int


@dataclass(frozen=True, slots=True)
class _Verified:
    """What a full validation established, remembered under the token's SHA-256."""

    compiled: _CompiledIssuer
    validated: ValidatedToken
    kid: str | None
    key: Key
    # exp + leeway: from then on the token is refused, so its entry can go.
    usable_until: float


def _compile(issuer: IssuerSettings) -> _CompiledIssuer:
    algorithms: dict[str, JWSAlgModel] = {}
    for name in issuer.algorithms:
        model = JWSRegistry.algorithms.get(name)
        if name in FORBIDDEN_ALGORITHMS or model is None:
            raise ConfigError([f"issuers.{issuer.name}.algorithms: {name!r} is not allowed"])
        algorithms[name] = model
    required = tuple(
        (name, tuple(value) if isinstance(value, list) else (value,))
        for name, value in issuer.required_claims.items()
    )
    return _CompiledIssuer(
        issuer, algorithms, frozenset(issuer.audiences), required, max_token_lifetime(issuer)
    )


def _issuer_key(url: str) -> str:
    return url.rstrip("/")


class TokenValidator:
    """Validates platform tokens against the configured issuers (allow-list, default deny)."""

    def __init__(
        self,
        issuers: Sequence[IssuerSettings],
        jwks: JwksCache,
        clock: Clock,
        *,
        memo_size: int = DEFAULT_MEMO_SIZE,
    ) -> None:
        problems = [p for issuer in issuers for p in profile_option_problems(issuer)]
        if problems:
            raise ConfigError(problems)
        if memo_size < 0:
            raise ValueError("memo_size must be 0 (no memo) or more")
        self._issuers = {_issuer_key(i.issuer): _compile(i) for i in issuers}
        self._jwks = jwks
        self._clock = clock
        # Before parsing, only the largest limit of any issuer is known.
        self._max_bytes = min(
            ABSOLUTE_MAX_TOKEN_BYTES,
            max((i.max_token_bytes for i in issuers), default=ABSOLUTE_MAX_TOKEN_BYTES),
        )
        self._memo_size = memo_size
        # SHA-256 of the token -> what validating it established; least recently used first.
        self._memo: OrderedDict[bytes, _Verified] = OrderedDict()

    async def validate_platform_token(self, token: str) -> ValidatedToken:
        """Check the token's size, shape, issuer, algorithm, key, signature and claims."""
        if len(token) > self._max_bytes:
            raise InvalidToken("token_too_large", f"the token is over {self._max_bytes} bytes")
        if not token.isascii():
            raise _malformed("the token is not ASCII", "encoding")
        if not self._memo_size:
            return (await self._verify(token)).validated
        digest = hashlib.sha256(token.encode("ascii")).digest()
        remembered = self._memo.get(digest)
        if remembered is not None:
            validated = await self._recall(digest, remembered)
            if validated is not None:
                return validated
        verified = await self._verify(token)
        self._remember(digest, verified)
        return verified.validated

    async def _recall(self, digest: bytes, remembered: _Verified) -> ValidatedToken | None:
        """The remembered answer when it still holds; None when the token must be verified."""
        issuer = remembered.compiled.settings
        try:
            # Raises exactly where a full validation would: every check before it depends
            # only on the token's bytes, which passed them.
            key = await self._jwks.key_for(issuer, remembered.kid)
        except BrokerError:
            self._forget(digest, remembered)
            raise
        if key is not remembered.key:
            # The JWKS was refetched since: only the signature check can vouch for the token.
            self._forget(digest, remembered)
            return None
        try:
            _check_claims(remembered.compiled, remembered.validated.claims, self._clock.now())
        except InvalidToken:
            self._forget(digest, remembered)
            raise
        if digest in self._memo:
            self._memo.move_to_end(digest)
        return remembered.validated

    def _remember(self, digest: bytes, verified: _Verified) -> None:
        memo = self._memo
        memo[digest] = verified
        memo.move_to_end(digest)
        # Refused tokens stop being used, so expired entries drift to the front: drop them
        # there, and the least recently used beyond the bound.
        now = self._clock.now()
        while memo and (
            len(memo) > self._memo_size or now >= next(iter(memo.values())).usable_until
        ):
            memo.popitem(last=False)

    def _forget(self, digest: bytes, remembered: _Verified) -> None:
        # Another validation of the token may have replaced the entry while this one awaited.
        if self._memo.get(digest) is remembered:
            del self._memo[digest]

    async def _verify(self, token: str) -> _Verified:
        """The full validation, past the size and ASCII checks."""
        segments = token.split(".")
        if len(segments) != 3:
            raise _malformed("the token is not three dot-separated segments", "segments")
        header_segment, payload_segment, signature_segment = segments
        header = _json_object(_b64decode(header_segment, "header"), "header")
        claims = _json_object(_b64decode(payload_segment, "payload"), "payload")
        signature = _b64decode(signature_segment, "signature")

        # Reading `iss` before the signature is checked is safe: it only selects which
        # configured issuer's keys and rules apply. A forged `iss` can at most pick another
        # trusted issuer, whose keys will not verify a signature the forger could not make,
        # and the exact `iss` comparison below runs on the verified payload.
        compiled = self._issuer_for(claims.get("iss"))
        issuer = compiled.settings
        if len(token) > issuer.max_token_bytes:
            raise InvalidToken(
                "token_too_large",
                f"the token is over issuer {issuer.name!r}'s {issuer.max_token_bytes} bytes",
            )
        alg = header.get("alg")
        algorithm = compiled.algorithms.get(alg) if isinstance(alg, str) else None
        if algorithm is None:
            raise InvalidToken(
                "algorithm_not_allowed",
                f"issuer {issuer.name!r} does not accept alg {_shown(alg)}",
            )
        if "crit" in header:
            raise _malformed("the token requires header extensions ('crit')", "header")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _malformed("the token's 'kid' header is not a string", "header")

        # Only the issuer's own JWKS supplies keys: `jku`, `x5u` and `jwk` headers are ignored.
        key = await self._jwks.key_for(issuer, kid)
        try:
            algorithm.check_key(key)
            key.check_alg(algorithm.name)
        except JoseError:
            raise InvalidToken(
                "key_mismatch",
                f"the key with kid {_shown(kid)} of issuer {issuer.name!r} "
                f"cannot verify alg {algorithm.name}",
            ) from None
        if not signature:
            raise InvalidToken("signature_invalid", "the token carries no signature")
        signing_input = token[: len(header_segment) + 1 + len(payload_segment)].encode("ascii")
        if not algorithm.verify(signing_input, signature, key):
            raise InvalidToken(
                "signature_invalid",
                f"the signature does not verify with issuer {issuer.name!r}'s key {_shown(kid)}",
            )
        usable_until = _check_claims(compiled, claims, self._clock.now())
        return _Verified(
            compiled=compiled,
            validated=ValidatedToken(issuer=issuer, header=header, claims=claims),
            kid=kid,
            key=key,
            usable_until=usable_until,
        )

    def _issuer_for(self, iss: object) -> _CompiledIssuer:
        if not isinstance(iss, str):
            raise InvalidToken("unknown_issuer", "the token has no 'iss' claim")
        compiled = self._issuers.get(_issuer_key(iss))
        if compiled is None:
            raise InvalidToken("unknown_issuer", f"issuer {_shown(iss)} is not trusted")
        return compiled


def _check_claims(compiled: _CompiledIssuer, claims: Claims, now: float) -> float:
    """Refuse claims the issuer's rules reject at ``now``; return when ``exp`` + leeway is."""
    issuer = compiled.settings
    # Issuers are looked up with a trailing '/' ignored; the claim must still match exactly.
    if claims.get("iss") != issuer.issuer:
        raise InvalidToken(
            "issuer_invalid", f"'iss' is not exactly issuer {issuer.name!r}'s {issuer.issuer!r}"
        )
    _check_audience(compiled, claims.get("aud"))
    leeway = issuer.leeway_seconds
    exp = _numeric_claim(claims, "exp")
    if exp is None:
        raise InvalidToken("claim_missing", "the token has no 'exp' claim")
    if now >= exp + leeway:
        raise InvalidToken("token_expired", "the token has expired ('exp')")
    nbf = _numeric_claim(claims, "nbf")
    if nbf is not None and now + leeway < nbf:
        raise InvalidToken("token_not_yet_valid", "the token is not valid yet ('nbf')")
    iat = _numeric_claim(claims, "iat")
    if iat is None:
        raise InvalidToken("claim_missing", "the token has no 'iat' claim")
    if iat > now + leeway:
        raise InvalidToken("token_issued_in_future", "the token's 'iat' is in the future")
    # A correctly signed token may still claim to live for ages (exp = 10^30): the platform's
    # published lifetime bounds both how long it was issued for and how long it has left.
    if exp - iat > compiled.max_lifetime_seconds or exp - now > compiled.max_lifetime_seconds:
        raise InvalidToken(
            "token_lifetime_too_long",
            f"the token's lifetime ('exp') is over issuer {issuer.name!r}'s "
            f"{compiled.max_lifetime_seconds} s maximum",
        )
    if now - iat > issuer.max_token_age_seconds:
        raise InvalidToken(
            "token_too_old",
            f"the token was issued over issuer {issuer.name!r}'s "
            f"{issuer.max_token_age_seconds} s maximum age ago ('iat')",
        )
    for name, accepted in compiled.required_claims:
        if name not in claims:
            raise InvalidToken("required_claim_missing", f"the token has no {name!r} claim")
        value = claims[name]
        # Compare types too: in Python True == 1, in a policy they are different values.
        if not any(type(value) is type(ok) and value == ok for ok in accepted):
            raise InvalidToken(
                "required_claim_mismatch",
                f"the {name!r} claim does not have a value issuer {issuer.name!r} requires",
            )
    return exp + leeway


def _check_audience(compiled: _CompiledIssuer, aud: object) -> None:
    if isinstance(aud, str) and aud in compiled.audiences:
        return
    if isinstance(aud, list) and any(isinstance(a, str) and a in compiled.audiences for a in aud):
        return
    raise InvalidToken(
        "audience_invalid",
        f"'aud' names none of issuer {compiled.settings.name!r}'s accepted audiences",
    )


def _numeric_claim(claims: Claims, name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken("claim_invalid", f"the {name!r} claim is not a NumericDate")
    return float(value)


def _b64decode(segment: str, part: str) -> bytes:
    # Strict base64url without padding (RFC 7515 §2); the stdlib decoder would skip junk.
    if len(segment) % 4 == 1 or _B64URL.fullmatch(segment) is None:
        raise _malformed(f"the token's {part} is not base64url", "base64")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_object(data: bytes, part: str) -> dict[str, object]:
    try:
        value = _JSON.decode(data.decode("utf-8"))
    except (ValueError, RecursionError):
        raise _malformed(f"the token's {part} is not JSON", "json") from None
    if not isinstance(value, dict):
        raise _malformed(f"the token's {part} is not a JSON object", "json")
    return value


def _malformed(description: str, problem: str) -> InvalidToken:
    return InvalidToken("token_malformed", description, details={"problem": problem})


def _shown(value: object) -> str:
    # Header and claim values are caller-controlled: show a bounded repr, never the token.
    if isinstance(value, str):
        return repr(value[:100])
    return "(none)" if value is None else f"of type {type(value).__name__}"
