"""Reading requests strictly: one value per name, UTF-8 only, JSON without duplicate keys.

A request the broker could read two ways is refused rather than read one way: two
``Authorization`` headers, a key twice in a JSON object, a query or form parameter given twice,
a boolean other than ``true|false|1|0``. Every refusal here is a ``RefusedWhileReading``; the
runner-facing routes wrap their handlers in ``audits_refusals`` (web/refused.py), so each such
request leaves an audit event like every decision of the exchange service.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import parse_qsl

from aiohttp import web

from tokenbroker.errors import BrokerError, InvalidRequest, InvalidTarget

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
# An RFC 8693 request has at most a dozen fields; this bounds the work a junk body can cause.
MAX_FORM_FIELDS = 64
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


class RefusedWhileReading(BrokerError):
    """A request refused while it was read, before the exchange service saw it.

    ``credential`` is the credential name the request asked for, when it got that far.
    """

    def __init__(self, reason: str, description: str, *, credential: str | None = None) -> None:
        super().__init__(reason, description)
        self.credential = credential


class MalformedRequest(RefusedWhileReading, InvalidRequest):
    """400 ``invalid_request``: the request cannot be read one way only."""


class UnsupportedTarget(RefusedWhileReading, InvalidTarget):
    """400 ``invalid_target`` (RFC 8693): a target parameter the broker does not take."""


def single_header(request: web.Request, name: str) -> str | None:
    """The one value of header ``name``, None when absent; 400 when it is sent twice."""
    values = request.headers.getall(name, ())
    if len(values) > 1:
        raise MalformedRequest(f"{name.lower()}_repeated", f"send one {name} header")
    return values[0] if values else None


def single_query_value(request: web.Request, name: str) -> str | None:
    """The one value of query parameter ``name``, None when absent; 400 when given twice."""
    found = request.query.getall(name, ())
    if len(found) > 1:
        raise MalformedRequest("query_invalid", f"{name} must be given once")
    return found[0] if found else None


def query_bool(request: web.Request, name: str) -> bool:
    """Query parameter ``name`` as a boolean: ``true|1`` or ``false|0``, absent is false."""
    value = single_query_value(request, name)
    if value is None or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise MalformedRequest("query_invalid", f"{name} must be given once, as true, false, 1 or 0")


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


class _DuplicateKey(Exception):
    pass


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _DuplicateKey
    return found


def loads_json(raw: bytes, *, reason: str = "body_malformed") -> object:
    """A UTF-8 JSON document; 400 ``reason`` when it is not one, repeats a key, nests too deep."""
    try:
        return json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
        )
    except _DuplicateKey:
        raise MalformedRequest(reason, "a key is given twice in a JSON object") from None
    except (ValueError, RecursionError):
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; RecursionError is what the
        # decoder raises for a body of nothing but '[' (nesting beyond the interpreter's stack).
        raise MalformedRequest(reason, "the body must be UTF-8 JSON") from None


def is_utf8_text(value: str) -> bool:
    """Whether ``value`` is text UTF-8 can carry: not a lone surrogate (a JSON ``\\ud800``)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def read_form_fields(request: web.Request) -> list[tuple[str, str]]:
    """An ``application/x-www-form-urlencoded`` UTF-8 body as (name, value) pairs in order,
    repeats kept; else 400."""
    if request.content_type != FORM_CONTENT_TYPE:
        raise MalformedRequest("body_malformed", f"send the request as {FORM_CONTENT_TYPE}")
    charset = request.charset
    if charset is not None and charset.lower() not in {"utf-8", "utf8"}:
        raise MalformedRequest("charset_unsupported", "the form must be UTF-8")
    try:
        return parse_qsl(
            (await request.read()).decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:
        # Not UTF-8 before or after percent-decoding (UnicodeDecodeError), or too many fields.
        raise MalformedRequest("body_malformed", "the form must be UTF-8, urlencoded") from None


async def read_form(request: web.Request) -> Mapping[str, str]:
    """An ``application/x-www-form-urlencoded`` UTF-8 body, each field at most once; else 400."""
    pairs = await read_form_fields(request)
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise MalformedRequest("parameter_repeated", "a form field is given more than once")
    return fields
