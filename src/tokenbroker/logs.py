"""Logging: a request id on every line, text or JSON lines, nothing secret."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Stamp every record with the request id of the task that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


# What a credential looks like wherever a library might print it: a bearer value, the value of
# an Authorization header (up to the quote or line end that closes a repr'd header line), and
# anything JWT-shaped (a JOSE header is base64url JSON, so it starts with "eyJ").
_SECRET = re.compile(
    r"(?P<keep>\b(?i:bearer)\s+)[^\s'\"]+"
    r"|(?P<header>\b(?i:authorization)[\"']?\s*[:=]\s*)[^\r\n'\"]+"
    r"|eyJ[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*){0,2}"
)
REDACTED = "[redacted]"


def _replacement(match: re.Match[str]) -> str:
    return (match.group("keep") or match.group("header") or "") + REDACTED


def redact(text: str) -> str:
    """``text`` with bearer values, Authorization header values and JWT-shaped strings cut out."""
    return _SECRET.sub(_replacement, text)


class RedactingFilter(logging.Filter):
    """Cut credentials out of every record, the libraries' included, before it is formatted.

    aiohttp's HTTP parser, for one, puts a whole header line in its exception when the line
    holds a byte it refuses; the message, its arguments and the traceback are all rewritten.
    """

    _traceback = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops one."""
        message = record.getMessage()
        redacted = redact(message)
        if record.args or redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._traceback.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the record's ``extra`` fields."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a JSON line."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send the broker's logs to stderr, as text or JSON lines, each with its request id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Neither format shows the caller's file and line, thread or process: the logging module's
    # documented switches stop every record from collecting them (a stack walk among them).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # At DEBUG, botocore logs whole request and response bodies: the web identity token and
    # the AWS secret key among them. Those loggers never go below INFO, whatever the level.
    for name in _BODY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.getLevelName(level), logging.INFO))


_BODY_LOGGERS = ("botocore", "boto3", "urllib3")
