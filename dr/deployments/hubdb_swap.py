"""Replacing a hub database file in place, keeping the old one (and its -wal/-shm) beside it.

Shared by the local deployment (in-process) and the Kubernetes hub-restore mover (``jdr agent
restore-hub-db``), which runs it inside the ``hub-db-dir`` volume.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from dr.hubdb.capture import inspect_database
from dr.util.timefmt import utcnow


def swap_in_database(target: Path, db_file: Path) -> str:
    """Put a copy of ``db_file`` at ``target``; return where the old database was kept ("" if none).

    The copy is staged beside ``target`` and synced first; the old database keeps its name plus
    ``.jdr-previous-<time>``, and takes its ``-wal``/``-shm``/``-journal`` files along (they belong to it:
    applying them to the new database would corrupt it). The new file gets the old one's owner and mode.
    Raises like :func:`dr.hubdb.capture.inspect_database` if the result is not a sound hub database.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    staged = target.with_name(f".{target.name}.jdr-restore")
    shutil.copyfile(db_file, staged)
    with open(staged, "rb+") as f:
        os.fsync(f.fileno())
    old = target.with_name(f"{target.name}.jdr-previous-{stamp}")
    if target.exists():
        st = target.stat()
        with contextlib.suppress(OSError):
            os.chown(staged, st.st_uid, st.st_gid)
        os.chmod(staged, st.st_mode & 0o7777)
        os.rename(target, old)
        for suffix in ("-wal", "-shm", "-journal"):
            side = target.with_name(target.name + suffix)
            if side.exists():
                os.rename(side, old.with_name(old.name + suffix))
    os.rename(staged, target)
    inspect_database(target)  # refuses a file that is not a sound hub DB
    return str(old) if old.exists() else ""
