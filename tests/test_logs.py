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
