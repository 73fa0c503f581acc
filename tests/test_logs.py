"""Log lines: a request id on each, JSON on request, no library that logs bodies at DEBUG."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from tokenbroker.logs import JsonFormatter, RequestIdFilter, configure_logging, request_id_var


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    switches = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
    saved = {name: getattr(logging, name) for name in switches}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in saved.items():
        setattr(logging, name, value)
    logging.getLogger("botocore").setLevel(logging.NOTSET)


def test_every_record_carries_the_current_request_id() -> None:
    record = logging.makeLogRecord({"msg": "hello"})
    token = request_id_var.set("abc123")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    assert record.request_id == "abc123"


def test_json_lines_hold_the_message_and_the_extra_fields() -> None:
    record = logging.makeLogRecord({"msg": "exchange decided", "outcome": "success"})
    RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "exchange decided"
    assert line["outcome"] == "success"
    assert line["request_id"] == "-"


@pytest.mark.usefixtures("restore_logging")
def test_debug_logging_never_turns_on_botocores_body_logging() -> None:
    configure_logging("DEBUG", "json")
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("botocore").getEffectiveLevel() == logging.INFO


@pytest.mark.usefixtures("restore_logging")
def test_a_configured_text_line_holds_time_level_logger_request_id_and_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "text")
    token = request_id_var.set("req-42")
    try:
        logging.getLogger("tokenbroker.exchange.service").info("exchange decided")
    finally:
        request_id_var.reset(token)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith(" INFO tokenbroker.exchange.service [req-42] exchange decided")
    # Records no longer collect the caller, thread or process (neither format shows them).
    record = logging.getLogger("x").makeRecord("x", logging.INFO, "f", 1, "m", (), None)
    assert (record.threadName, record.processName) == (None, None)


JWT_CANARY = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImNhbmFyeSJ9"
    ".eyJzdWIiOiJjYW5hcnkiLCJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIn0"
    ".c2lnbmF0dXJlLWNhbmFyeS0wMTIzNDU2Nzg5"
)
ADMIN_CANARY = "admin-canary-7e3d9a0c51b24f86"


def _log_a_parser_error_like_aiohttp(canary: str) -> None:
    # What aiohttp's HTTP parser raises and aiohttp.server logs: the header line in the message.
    try:
        raise ValueError(f"Invalid header value char:\n\n  b'Authorization: Bearer {canary}\\x7f'")
    except ValueError:
        logging.getLogger("aiohttp.server").exception(
            "Error handling request from %s with %r", "127.0.0.1", f"Bearer {canary}\x01"
        )
    logging.getLogger("some.library").warning("retrying with bearer %s", canary)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("canary", [JWT_CANARY, ADMIN_CANARY])
def test_no_log_line_of_any_logger_holds_a_bearer_value_or_a_jwt(
    capsys: pytest.CaptureFixture[str], fmt: str, canary: str
) -> None:
    configure_logging("DEBUG", fmt)
    _log_a_parser_error_like_aiohttp(canary)
    err = capsys.readouterr().err
    assert "Error handling request from 127.0.0.1" in err
    assert "ValueError: Invalid header value char" in err
    assert "[redacted]" in err
    for part in (canary, canary.rsplit(".", 1)[-1]):
        assert part not in err


@pytest.mark.usefixtures("restore_logging")
def test_a_json_lines_extra_field_is_redacted_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("x").info("sent", extra={"header": f"Bearer {ADMIN_CANARY}"})
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["header"] == "Bearer [redacted]"
