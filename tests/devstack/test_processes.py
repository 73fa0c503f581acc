"""The helpers every child process of the local stack and the bench share."""

from __future__ import annotations

from pathlib import Path

from tokenbroker.devstack.processes import log_tail


def test_a_log_tail_is_the_end_of_the_file(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    log.write_text("early line\n" + "x" * 50 + "\nlast line\n")
    assert log_tail(log, 10) == "last line\n"
    assert log_tail(log, 10_000) == log.read_text()


def test_a_log_not_written_or_not_given_says_so(tmp_path: Path) -> None:
    assert log_tail(tmp_path / "never-written.log", 100) == "(no output)"
    assert log_tail(None, 100) == "(no output)"
