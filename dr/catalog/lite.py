"""The listing of runs from the default SQLite catalog with plain :mod:`sqlite3`, without SQLAlchemy.

``jdr list`` over a repository of 1,000 runs spent half its time importing SQLAlchemy (issue 12). When the
catalog is an existing SQLite file of our schema, indexing this repository, and not stale, the listing is
one query with the standard library. In every other case (another database, a missing, older or foreign
catalog, a stale one that must be synced) :func:`list_runs` returns None and the caller uses
:class:`dr.catalog.Catalog`, which creates, checks and syncs it. Nothing here writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from dr.catalog.rows import RunRow, from_us, run_set_digest

SCHEMA_VERSION = 1  # dr.catalog.schema.SCHEMA_VERSION (checked equal by tests/contract/test_catalog.py)
_COLS = ("jdr_runs.id, jdr_runs.time_us, jdr_runs.finished_us, jdr_runs.status, jdr_runs.users, "
         "jdr_runs.volumes, jdr_runs.failed, jdr_runs.bytes, jdr_runs.stored, jdr_runs.files, jdr_runs.hub, "
         "jdr_runs.jdr_version")
_ORDER = " ORDER BY jdr_runs.time_us DESC, jdr_runs.id DESC"
# Constant text (S608 below): the only value, the user, is a bound parameter.
_ALL = "SELECT " + _COLS + ", NULL FROM jdr_runs" + _ORDER  # noqa: S608
# As Catalog.runs with a user: the worst of the user's items ("failed" < "ok" < "skipped").
_OF_USER = ("SELECT " + _COLS  # noqa: S608
            + ", min(jdr_items.status) FROM jdr_runs JOIN jdr_items ON jdr_items.run_id = "
            "jdr_runs.id WHERE jdr_items.kind = 'volume' AND jdr_items.user = ? GROUP BY " + _COLS + _ORDER)


def sqlite_path(url: str) -> Path | None:
    """The file of a plain ``sqlite:///path`` URL (SQLAlchemy's form: four slashes for an absolute path);
    None for any other URL (another database, a driver, in-memory, query options)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url or "#" in url:
        return None
    path = url[len(prefix):]
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def list_runs(url: str, run_ids: Iterable[str], *, repository_url: str, repository_id: str,
              user: str | None = None) -> list[RunRow] | None:
    """The runs :meth:`dr.catalog.Catalog.runs` would list (newest first; with ``user``, only runs holding
    that user's volume), read from the catalog at ``url`` if it is an up-to-date SQLite catalog of this
    repository whose runs are exactly ``run_ids``; None if the full catalog is needed."""
    path = sqlite_path(url)
    if path is None or not path.is_file():
        return None
    try:
        # mode=rw: never create a file; a reader of a WAL database needs to be able to write its -shm.
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=rw", uri=True, timeout=30)
    except sqlite3.Error:
        return None
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        try:
            meta = dict(conn.execute("SELECT key, value FROM jdr_meta").fetchall())
        except sqlite3.Error:  # no table yet, or not a catalog
            return None
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            return None
        for key, mine in (("repository_url", repository_url), ("repository_id", repository_id)):
            if mine and meta.get(key) != mine:  # another repository, or not yet recorded: the full path
                return None
        if meta.get("run_set") != run_set_digest(run_ids):
            return None
        rows = (conn.execute(_ALL) if user is None else conn.execute(_OF_USER, (user,))).fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return [RunRow(id=r[0], time=from_us(r[1]), finished=from_us(r[2]), status=r[3], users=r[4], volumes=r[5],
                   failed=r[6], bytes=r[7], stored=r[8], files=r[9], hub=bool(r[10]), jdr_version=r[11],
                   user_status=r[12]) for r in rows]
