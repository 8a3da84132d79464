"""The default SQLite catalog with plain :mod:`sqlite3`, without SQLAlchemy (issue 12: `jdr list` in 0.5 s).

Importing SQLAlchemy costs more than everything else ``jdr list`` does. When the catalog is a SQLite file
(the default, or a ``sqlite:///path`` URL), ``jdr list`` reads it (:func:`list_runs`), creates, checks and
syncs it (:func:`synced_runs`), and a backup indexes the run it committed (:func:`add_run`) with the
standard library alone. The tables come from their one definition, :mod:`dr.catalog.tables`; the rows from
:func:`dr.catalog.rows.manifest_rows`, which :class:`dr.catalog.Catalog` (SQLAlchemy, any database) uses
too, so both write the same catalog (tests/contract/test_catalog_lite.py).

Contracts, as :class:`dr.catalog.Catalog`'s: a catalog of an older or unknown schema is dropped and
recreated; one found indexing another repository is emptied; the ``run_set`` digest in ``jdr_meta`` always
matches the rows. Each write is one ``BEGIN IMMEDIATE`` transaction (a concurrent writer waits, up to the
30 s busy timeout), and the file is in WAL mode, so readers never wait. Manifests are loaded before the
write transaction starts; errors of the loader propagate and leave the catalog unchanged. Any SQLite error
makes these functions return None/False: the caller then uses :class:`dr.catalog.Catalog`, which reports
it (or, for a backup, leaves the catalog to the next listing).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from dr.catalog import tables as t
from dr.catalog.rows import (
    MOD,
    RunRow,
    SyncResult,
    from_us,
    id_hash,
    make_digest,
    manifest_rows,
    parse_digest,
    run_set_digest,
)
from dr.catalog.tables import SCHEMA_VERSION

if TYPE_CHECKING:
    from dr.model import Manifest

log = logging.getLogger(__name__)

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
_TYPES = {"text": "TEXT", "bigint": "BIGINT", "int": "INTEGER", "bool": "BOOLEAN"}  # SQLAlchemy's names
_CHUNK = 500  # run ids per DELETE: under SQLite's bound-parameter limit


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


def ddl(table: t.Table) -> list[str]:
    """``CREATE TABLE`` and ``CREATE INDEX`` statements of ``table``, as SQLAlchemy creates it on SQLite."""
    cols = [f'"{c.name}" ' + (f"VARCHAR({c.length})" if c.kind == "string" else _TYPES[c.kind])
            + ("" if c.nullable else " NOT NULL") for c in table.columns]
    pk = ", ".join(f'"{c.name}"' for c in table.columns if c.primary_key)
    out = [f'CREATE TABLE "{table.name}" ({", ".join(cols)}, PRIMARY KEY ({pk}))']
    out += [f'CREATE INDEX "{name}" ON "{table.name}" ("{column}")' for name, column in table.indexes]
    return out


# --- reading ------------------------------------------------------------------------------------------


def list_runs(url: str, run_ids: Iterable[str], *, repository_url: str, repository_id: str,
              user: str | None = None) -> list[RunRow] | None:
    """The runs :meth:`dr.catalog.Catalog.runs` would list (newest first; with ``user``, only runs holding
    that user's volume), read from the catalog at ``url`` if it is an up-to-date SQLite catalog of this
    repository whose runs are exactly ``run_ids``; None otherwise. Never writes, never creates a file."""
    path = sqlite_path(url)
    if path is None or not path.is_file():
        return None
    try:
        conn = _connect(path, create=False)
    except sqlite3.Error:
        return None
    try:
        meta = _meta(conn)
        if not _ours(meta, repository_url, repository_id) or meta.get("run_set") != run_set_digest(run_ids):
            return None
        return _query(conn, user)
    except sqlite3.Error:  # no table yet, not a catalog, a damaged file
        return None
    finally:
        conn.close()


def synced_runs(url: str, run_ids: Iterable[str], load: Callable[[str], Manifest], *, repository_url: str,
                repository_id: str, user: str | None = None) -> list[RunRow] | None:
    """As :func:`list_runs`, after creating the catalog (or recreating it: older schema, other repository)
    and syncing it with ``run_ids`` (``load`` reads the manifests of the runs it lacks). None when ``url``
    is not a SQLite file or SQLite fails (the caller then uses :class:`dr.catalog.Catalog`)."""
    path = sqlite_path(url)
    if path is None:
        return None
    ids = list(run_ids)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(path, create=True)
    except (OSError, sqlite3.Error) as e:
        log.debug("catalog %s: %s; using the full catalog", path, e)
        return None
    try:
        with _transaction(conn):
            _ensure(conn, repository_url, repository_id)
        result = _sync(conn, ids, load)
        if result.changed:
            log.info("catalog synced: %d runs added, %d removed", len(result.added), len(result.removed))
        return _query(conn, user)
    except sqlite3.Error as e:
        log.debug("catalog %s: %s; using the full catalog", path, e)
        return None
    finally:
        conn.close()


# --- writing ------------------------------------------------------------------------------------------


def add_run(url: str, manifest: Manifest, *, repository_url: str, repository_id: str) -> bool:
    """Index one run just committed, in an existing SQLite catalog of this repository (the backup's hook:
    the next ``jdr list`` then finds the catalog up to date). True when the run is indexed (now or
    already); False, changing nothing, when there is no such catalog (no file, another schema or
    repository, not SQLite, a SQLite error): the next listing builds or syncs it."""
    path = sqlite_path(url)
    if path is None or not path.is_file():
        return False
    try:
        conn = _connect(path, create=False)
    except sqlite3.Error:
        return False
    try:
        with _transaction(conn):
            meta = _meta(conn)
            if not _ours(meta, repository_url, repository_id) or "run_set" not in meta:
                return False
            _apply(conn, [manifest], [])
        return True
    except sqlite3.Error as e:
        log.debug("catalog %s: %s; the next listing syncs it", path, e)
        return False
    finally:
        conn.close()


# --- internals ----------------------------------------------------------------------------------------


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    # mode=rw never creates a file; a reader of a WAL database needs to be able to write its -shm.
    # isolation_level=None: transactions are explicit (_transaction), never opened implicitly.
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode={'rwc' if create else 'rw'}", uri=True, timeout=30,
                           isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        # As Catalog's engine: readers see the last committed state and never block the writer; a commit
        # needs no fsync (a cache may lose its last transaction in a power cut, never its consistency).
        if create:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, its lock taken at the start (a reader-turned-writer could meet a snapshot
    conflict that the busy timeout does not wait out)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute('SELECT "key", "value" FROM jdr_meta').fetchall())


def _ours(meta: dict[str, str], repository_url: str, repository_id: str) -> bool:
    """Whether ``meta`` is of our schema and records this repository (a catalog that does not record it
    yet is left to the full path, which records it)."""
    if meta.get("schema_version") != str(SCHEMA_VERSION):
        return False
    return all(not mine or meta.get(key) == mine
               for key, mine in (("repository_url", repository_url), ("repository_id", repository_id)))


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute('DELETE FROM jdr_meta WHERE "key" = ?', (key,))
    conn.execute('INSERT INTO jdr_meta ("key", "value") VALUES (?, ?)', (key, value))


def _ensure(conn: sqlite3.Connection, repository_url: str, repository_id: str) -> None:
    """As Catalog._ensure_schema and _ensure_repository (inside a transaction)."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    version = None
    if t.META.name in names:
        found = conn.execute("SELECT value FROM jdr_meta WHERE key = 'schema_version'").fetchone()
        version = found[0] if found else None
    if version != str(SCHEMA_VERSION):
        ours = [table for table in t.TABLES if table.name in names]
        if ours:
            log.info("catalog schema %s is not %s: dropping it to rebuild", version, SCHEMA_VERSION)
        for table in reversed(ours):
            conn.execute(f'DROP TABLE "{table.name}"')
        for table in t.TABLES:
            for statement in ddl(table):
                conn.execute(statement)
        _set_meta(conn, "schema_version", str(SCHEMA_VERSION))
        _set_meta(conn, "run_set", make_digest(0, 0))
    stored = _meta(conn)
    mine = {"repository_url": repository_url, "repository_id": repository_id}
    clash = [k for k, v in mine.items() if v and stored.get(k) and stored[k] != v]
    if clash:
        log.info("catalog indexed another repository (%s differs): emptying it", ", ".join(clash))
        for table in reversed(t.DATA_TABLES):
            conn.execute(f'DELETE FROM "{table.name}"')  # noqa: S608  (our own table names)
        _set_meta(conn, "run_set", make_digest(0, 0))
    for key, value in mine.items():
        if value and stored.get(key) != value:
            _set_meta(conn, key, value)


def _run_ids(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT id FROM jdr_runs")}


def _sync(conn: sqlite3.Connection, run_ids: Sequence[str], load: Callable[[str], Manifest]) -> SyncResult:
    """As Catalog.sync: load and add the runs the catalog lacks, drop the runs that are gone."""
    wanted = set(run_ids)
    have = _run_ids(conn)
    added, removed = sorted(wanted - have), sorted(have - wanted)
    if not added and not removed:
        return SyncResult((), ())
    loaded = [load(run_id) for run_id in added]  # before the write lock: reading may take a while
    with _transaction(conn):
        _apply(conn, loaded, removed)
    return SyncResult(tuple(added), tuple(removed))


def _apply(conn: sqlite3.Connection, manifests: Sequence[Manifest], removed: Sequence[str]) -> None:
    """Inside a transaction: drop the runs ``removed`` and add ``manifests``, keeping the run-set digest
    in step with what really changed (a run another process already added or removed is left as it is)."""
    count, total = parse_digest(_meta(conn)["run_set"])
    present = _run_ids(conn)
    gone = sorted(set(removed) & present)
    for i in range(0, len(gone), _CHUNK):
        chunk = gone[i:i + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        for name, column in (("jdr_artifacts", "run_id"), ("jdr_items", "run_id"), ("jdr_runs", "id")):
            conn.execute(f"DELETE FROM {name} WHERE {column} IN ({marks})", chunk)  # noqa: S608
    for run_id in gone:
        count, total = count - 1, (total - id_hash(run_id)) % MOD
    rows: tuple[list[dict[str, object]], ...] = ([], [], [])
    for m in manifests:
        if m.run in present:
            continue
        present.add(m.run)
        run, items, arts = manifest_rows(m)
        rows[0].append(run)
        rows[1].extend(items)
        rows[2].extend(arts)
        count, total = count + 1, (total + id_hash(m.run)) % MOD
    for table, table_rows in zip(t.DATA_TABLES, rows, strict=True):
        if table_rows:
            conn.executemany(_insert(table), table_rows)
    _set_meta(conn, "run_set", make_digest(count, total))


def _insert(table: t.Table) -> str:
    names = table.column_names
    quoted = ", ".join(f'"{n}"' for n in names)
    return f'INSERT INTO "{table.name}" ({quoted}) VALUES ({", ".join(":" + n for n in names)})'  # noqa: S608


def _query(conn: sqlite3.Connection, user: str | None) -> list[RunRow]:
    rows = (conn.execute(_ALL) if user is None else conn.execute(_OF_USER, (user,))).fetchall()
    return [RunRow(id=r[0], time=from_us(r[1]), finished=from_us(r[2]), status=r[3], users=r[4], volumes=r[5],
                   failed=r[6], bytes=r[7], stored=r[8], files=r[9], hub=bool(r[10]), jdr_version=r[11],
                   user_status=r[12]) for r in rows]
