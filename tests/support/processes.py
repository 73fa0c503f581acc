"""Which processes exist, read from /proc: for tests asserting that nothing is left running."""

from __future__ import annotations

from pathlib import Path


def _ppid(stat: str) -> int:
    # The command name (field 2) may hold spaces and parentheses: parse after its last ')'.
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def child_pids(parent: int) -> list[int]:
    """Ids of the live processes whose parent is ``parent``."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if _ppid(stat) == parent and ") Z " not in stat:
            children.append(int(entry.name))
    return children


def pids_with_argument(text: str) -> list[int]:
    """Ids of the live processes with ``text`` in one of their command-line arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if ") Z " not in stat and any(text.encode() in argument for argument in arguments):
            found.append(int(entry.name))
    return found


def command_line(pid: int) -> list[str]:
    """A live process's arguments, or [] when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pids_using(directory: Path) -> list[int]:
    """Ids of the live processes working in ``directory`` or naming it in their arguments."""
    found = set(pids_with_argument(str(directory)))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = (entry / "cwd").resolve(strict=True)
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if ") Z " not in stat and cwd.is_relative_to(directory.resolve()):
            found.add(int(entry.name))
    return sorted(found)
