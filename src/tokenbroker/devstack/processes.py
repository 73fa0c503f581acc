"""Child processes of the local stack: stopped the same way everywhere."""

from __future__ import annotations

import subprocess
from pathlib import Path


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, wait up to ``timeout`` seconds, SIGKILL if still running; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def log_tail(path: Path | None, characters: int) -> str:
    """The last ``characters`` of a child's log file, for failure messages."""
    try:
        return path.read_text(errors="replace")[-characters:] if path else "(no output)"
    except OSError:  # not written yet, or gone
        return "(no output)"
