"""Processes on this host, read from /proc: liveness, and who works with which files."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


def pids_with_links(match: Callable[[str], bool], *, cwd: bool = False) -> list[int]:
    """Pids (other than ours) with an open file — or, with ``cwd``, a current directory — whose path
    satisfies ``match``. Empty where /proc is not available."""
    me = os.getpid()
    found = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        pid = int(pid_dir.name)
        if pid == me:
            continue
        try:
            links = [*([pid_dir / "cwd"] if cwd else []), *(pid_dir / "fd").iterdir()]
        except OSError:
            continue
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if match(target):
                found.append(pid)
                break
    return found
