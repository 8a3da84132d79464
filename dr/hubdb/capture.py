"""Consistent copies of a live JupyterHub SQLite database, and checks of database files.

A hub writes to its database all the time (activity, tokens, spawner state). A raw file copy of a live
database can tear a transaction or miss what is still in the ``-wal`` file, so the copy is always made with
SQLite's online backup API from a read-only connection, then checked on the copy with
``PRAGMA integrity_check``. Only the standard library's ``sqlite3`` is used: jdr runs where JupyterHub is
not installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from dr.errors import DeploymentError, IntegrityError, UsageError
from dr.hubdb.info import DbInfo, integrity_problems, read_revision, read_servers, read_users, tables
from dr.util.testhooks import pause_at

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"

#: How long one connection waits on a lock held by the hub before SQLite reports SQLITE_BUSY.
BUSY_TIMEOUT = 10.0


def capture_database(
    src: Path,
    dest: Path,
    *,
    pages: int = 0,
    attempts: int = 5,
    busy_timeout: float = BUSY_TIMEOUT,
    deadline: float = 600.0,
) -> DbInfo:
    """Copy the (possibly live) hub database ``src`` to ``dest`` consistently and describe the copy.

    The copy is a single self-contained file (rollback-journal mode, even when ``src`` uses WAL) that
    passed ``PRAGMA integrity_check``; ``dest`` is replaced only once the copy is complete and sound.
    ``pages`` is the number of pages copied per backup step; the default (0) copies everything in one
    step, which holds a read lock only for the time of a local copy and cannot be restarted forever by a
    busy hub (SQLite restarts a multi-step backup whenever another connection writes to the source).

    Raises DeploymentError when ``src`` does not exist, UsageError when it is not an SQLite database or
    not a JupyterHub database, IntegrityError when it (and so the copy) is corrupt, and DeploymentError
    when the database stayed locked through every attempt.
    """
    _require_sqlite_file(Path(src))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        _backup_with_retries(src, tmp, pages=pages, attempts=attempts, busy_timeout=busy_timeout,
                             deadline=deadline)
        info = _describe(tmp, label=src)
        tmp.replace(dest)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    log.info("captured hub database %s (%d bytes, revision %s, %d users)", src, info.size,
             info.revision, len(info.users))
    return info


def inspect_database(path: Path) -> DbInfo:
    """Describe a hub database file at rest, opened read-only. Raises like capture_database."""
    _require_sqlite_file(Path(path))
    return _describe(Path(path), label=path, read_only=True)


def check_integrity(path: Path) -> str:
    """``"ok"`` when ``PRAGMA integrity_check`` passes on ``path``, else its first problems, joined.

    Raises DeploymentError for a missing file and UsageError for a file that is not an SQLite database.
    """
    _require_sqlite_file(Path(path))
    try:
        with _open_ro(Path(path)) as conn:
            problems = integrity_problems(conn)
    except sqlite3.DatabaseError as e:
        return f"unreadable: {e}"
    return "ok" if not problems else "; ".join(problems)


# --- internals ------------------------------------------------------------------------------------


def _require_sqlite_file(path: Path) -> None:
    if not path.exists():
        raise DeploymentError(f"hub database {path} does not exist",
                              hint="check deployment.hub_db in the configuration")
    if not path.is_file():
        raise UsageError(f"hub database {path} is not a regular file")
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise UsageError(f"{path} is not an SQLite database",
                         hint="point deployment.hub_db at the hub's jupyterhub.sqlite")


@contextlib.contextmanager
def _open_ro(path: Path, busy_timeout: float = BUSY_TIMEOUT) -> Iterator[sqlite3.Connection]:
    # mode=ro: never create, never write the source, yet still see the hub's committed WAL frames.
    uri = f"file:{urllib.parse.quote(str(Path(path).resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
    try:
        yield conn
    finally:
        conn.close()


def _is_busy(e: sqlite3.OperationalError) -> bool:
    text = str(e).lower()
    return "locked" in text or "busy" in text


def _backup_with_retries(src: Path, dest: Path, *, pages: int, attempts: int, busy_timeout: float,
                         deadline: float) -> None:
    delay = 0.2
    for attempt in range(1, attempts + 1):
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        try:
            _backup_once(src, dest, pages=pages, busy_timeout=busy_timeout, deadline=deadline)
            return
        except sqlite3.OperationalError as e:
            if not _is_busy(e):
                raise _translate(src, e) from e
            if attempt == attempts:
                raise DeploymentError(
                    f"hub database {src} stayed locked through {attempts} backup attempts: {e}",
                    hint="the hub may be stuck in a long transaction; retry later") from e
            log.warning("hub database %s is busy (%s); retrying in %.1fs (attempt %d of %d)",
                        src, e, delay, attempt, attempts)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        except sqlite3.DatabaseError as e:
            raise _translate(src, e) from e


class _DeadlineExceeded(Exception):
    pass


def _backup_once(src: Path, dest: Path, *, pages: int, busy_timeout: float, deadline: float) -> None:
    started = time.monotonic()

    def progress(status: int, remaining: int, total: int) -> None:
        # Python's backup loop retries SQLITE_BUSY forever; raising here is the only way to bound it.
        if time.monotonic() - started > deadline:
            raise _DeadlineExceeded

    with _open_ro(src, busy_timeout) as src_conn:
        pause_at("hubdb-capture")
        dst_conn = sqlite3.connect(str(dest))
        try:
            try:
                src_conn.backup(dst_conn, pages=pages, progress=progress, sleep=0.05)
            except _DeadlineExceeded:
                raise sqlite3.OperationalError(
                    f"database is locked (backup did not finish within {deadline:g}s)") from None
            # The copy keeps the source's WAL flag; make it one self-contained file.
            dst_conn.execute("PRAGMA journal_mode=DELETE").fetchone()
            dst_conn.commit()
        finally:
            dst_conn.close()


def _translate(path: Path, e: sqlite3.DatabaseError) -> Exception:
    text = str(e)
    if isinstance(e, sqlite3.OperationalError) and _is_busy(e):
        return DeploymentError(f"hub database {path} is locked: {text}",
                               hint="the hub may be stuck in a long transaction; retry later")
    if "not a database" in text:
        return UsageError(f"{path} is not an SQLite database ({text})")
    return IntegrityError(f"hub database {path} is damaged or unreadable: {text}",
                          hint="restore the hub database from an earlier backup")


def _describe(path: Path, *, label: Path, read_only: bool = False) -> DbInfo:
    try:
        with _open_ro(path) if read_only else contextlib.closing(sqlite3.connect(str(path))) as conn:
            problems = integrity_problems(conn)
            if problems:
                raise IntegrityError(
                    f"hub database {label} failed integrity_check: " + "; ".join(problems[:5]),
                    hint="restore the hub database from an earlier backup")
            found = tables(conn)
            if "users" not in found or "spawners" not in found:
                raise UsageError(f"{label} is an SQLite database but not a JupyterHub database "
                                 "(no users table)")
            return DbInfo(
                revision=read_revision(conn),
                integrity="ok",
                size=path.stat().st_size,
                users=read_users(conn),
                servers=read_servers(conn),
            )
    except sqlite3.DatabaseError as e:
        raise _translate(label, e) from e
