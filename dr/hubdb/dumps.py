"""Checks of a hub database dump at rest (downloaded from a run), before anything is restored from it.

A PostgreSQL dump (``pg_dump --format=custom``) must list with ``pg_restore --list`` and hold table data; a
MySQL/MariaDB dump (``mysqldump``, SQL text) must end with the ``-- Dump completed`` line mysqldump writes
last, so a truncated file is refused. What the dump holds (users, revision) is what the run's manifest
recorded when it was made; the restore checks the restored database against it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from dr.errors import IntegrityError, UsageError
from dr.hubdb.info import DbInfo
from dr.model import HubItem

KINDS = {"pg_dump-custom": "postgresql", "mysqldump-sql": "mysql"}


def check_dump(path: Path, dump_format: str) -> None:
    """Raise IntegrityError when ``path`` is not a complete dump of ``dump_format``."""
    if dump_format == "pg_dump-custom":
        _check_pg_dump(path)
    elif dump_format == "mysqldump-sql":
        _check_mysqldump(path)
    else:
        raise UsageError(f"unknown hub database dump format {dump_format!r} (a newer jdr wrote this run?)")


def dump_info(path: Path, hub: HubItem) -> DbInfo:
    """Check the dump at ``path`` and describe it from the manifest's hub record."""
    check_dump(path, hub.dump_format)
    return DbInfo(revision=hub.alembic_revision, integrity="ok", size=path.stat().st_size,
                  users=list(hub.users), kind=KINDS[hub.dump_format], server_version=hub.server_version,
                  dump_format=hub.dump_format)


def _check_pg_dump(path: Path) -> None:
    from dr.hubdb.server import require_tool

    tool = require_tool("pg_restore", "postgresql-client")
    with open(path, "rb") as f:
        magic = f.read(5)
    proc = subprocess.run([tool, "--list", str(path)], capture_output=True, text=True, check=False) \
        if magic == b"PGDMP" else None
    if proc is None or proc.returncode != 0 or "TABLE DATA" not in proc.stdout:
        why = "not a pg_dump custom archive" if proc is None else \
            (proc.stderr.strip()[-300:] or "it holds no table data")
        raise IntegrityError(f"the hub database dump {path.name} is not a complete pg_dump archive: {why}",
                             hint="restore from another run")


def _check_mysqldump(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(200)
        f.seek(max(0, path.stat().st_size - 400))
        tail = f.read()
    if b"dump" not in head.lower() or b"-- Dump completed" not in tail:
        raise IntegrityError(f"the hub database dump {path.name} is not a complete mysqldump output "
                             "(no '-- Dump completed' at its end)", hint="restore from another run")
