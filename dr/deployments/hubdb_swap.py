"""Replacing a hub database file in place, keeping the old one (and its -wal/-shm) beside it.

Shared by the local deployment (in-process) and the Kubernetes hub-restore mover (``jdr agent
restore-hub-db``), which runs it inside the ``hub-db-dir`` volume.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from pathlib import Path

from dr.hubdb.capture import inspect_database
from dr.util import fsops
from dr.util.timefmt import utcnow


def swap_in_database(target: Path, db_file: Path) -> str:
    """Put a copy of ``db_file`` at ``target``; return where the old database was kept ("" if none).

    The copy is staged beside ``target`` and synced first; the old database keeps its name plus
    ``.jdr-previous-<time>``, and takes its ``-wal``/``-shm``/``-journal`` files along (they belong to it:
    applying them to the new database would corrupt it). The new file gets the old one's owner and mode.
    Raises like :func:`dr.hubdb.capture.inspect_database` if the result is not a sound hub DB.

    The directory may be writable by the hub's own user while this runs as root: everything is done
    relative to the directory's descriptor; the staged copy is a fresh ``O_EXCL | O_NOFOLLOW`` file with a
    random name, owner and mode are set through its descriptor, and no rename replaces an existing name
    (a kept ``.jdr-previous-…`` is never overwritten; a taken name gets ``-<n>``).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        staged = f".{target.name}.jdr-restore-{secrets.token_hex(8)}"
        out = os.open(staged, fsops.NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            with open(db_file, "rb") as src, open(out, "wb", closefd=False) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(out)
            current = fsops.lstat_at(target.name, dir_fd)
            if current is not None and stat.S_ISREG(current.st_mode):
                with contextlib.suppress(OSError):
                    os.fchown(out, current.st_uid, current.st_gid)
                os.fchmod(out, current.st_mode & 0o777)
        finally:
            os.close(out)
        old = ""
        if fsops.lstat_at(target.name, dir_fd) is not None:
            old = _keep(dir_fd, target.name, f"{target.name}.jdr-previous-{stamp}")
            for suffix in ("-wal", "-shm", "-journal"):
                if fsops.lstat_at(target.name + suffix, dir_fd) is not None:
                    _keep(dir_fd, target.name + suffix, old + suffix)
        fsops.rename_noreplace(dir_fd, staged, dir_fd, target.name)
    finally:
        os.close(dir_fd)
    inspect_database(target)  # refuses a file that is not a sound hub DB
    return str(target.with_name(old)) if old else ""


def _keep(dir_fd: int, name: str, wanted: str) -> str:
    """Rename ``name`` to ``wanted`` (or ``wanted-<n>`` when taken) without replacing anything."""
    for n in range(1000):
        candidate = wanted if n == 0 else f"{wanted}-{n}"
        try:
            fsops.rename_noreplace(dir_fd, name, dir_fd, candidate)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot keep {name}: every name is taken")
