"""The Catalog: add and remove manifests, list and find runs, know when it no longer matches the repository.

Staleness is cheap to check: the catalog stores the number of its runs and an order-independent digest of
their ids (:func:`run_set_digest`), maintained on every change, so comparing it with a listing of the
repository's manifests costs one hash per id and no query per run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event, func, insert, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from dr.catalog import schema as s
from dr.catalog.rows import MOD as _MOD
from dr.catalog.rows import USABLE, RunRow, SyncResult, run_set_digest
from dr.catalog.rows import from_us as _time
from dr.catalog.rows import id_hash as _id_hash
from dr.catalog.rows import make_digest as _digest
from dr.catalog.rows import manifest_rows as _rows
from dr.catalog.rows import parse_digest as _parse_digest
from dr.catalog.rows import to_us as _us
from dr.errors import ConfigError, RepositoryError
from dr.model import Manifest

log = logging.getLogger(__name__)

class Catalog:
    """An index of one repository's runs in the database at ``url`` (any SQLAlchemy URL).

    ``repository_url`` and ``repository_id`` name the repository it indexes: a catalog found holding
    another repository's runs is emptied (and so reads as stale). A catalog of an older or unknown schema
    is dropped and recreated. SQLite files are opened in WAL mode, so readers never block on a writer.
    """

    def __init__(self, url: str, *, repository_url: str = "", repository_id: str = "") -> None:
        self.url = url
        try:
            self.engine = _engine(url)
        except (SQLAlchemyError, ValueError) as e:  # a malformed URL, an unknown dialect
            raise ConfigError(f"catalog.url: cannot use {url!r}: {e}",
                              hint="a SQLAlchemy URL such as sqlite:////var/cache/jdr/catalog.sqlite") from e
        try:
            self._open(repository_url, repository_id)
        except SQLAlchemyError as e:
            self.engine.dispose()
            raise RepositoryError(
                f"cannot open the catalog at {make_url(url).render_as_string()}: {e}",
                hint="the catalog is only an index: delete it and it will be rebuilt") from e

    @classmethod
    def sqlite(cls, path: str | Path, **kwargs: str) -> Catalog:
        return cls(f"sqlite:///{Path(path)}", **kwargs)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- opening --------------------------------------------------------------------------------------

    def _open(self, repository_url: str, repository_id: str) -> None:
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    self._ensure_schema(conn)
                    self._ensure_repository(conn, repository_url, repository_id)
                return
            except OperationalError:
                # Two processes creating the schema at once: the loser sees "table already exists".
                if attempt == 2:
                    raise

    def _ensure_schema(self, conn: Connection) -> None:
        existing = set(inspect(conn).get_table_names())
        version: str | None = None
        if s.meta.name in existing:
            version = conn.execute(select(s.meta.c.value).where(s.meta.c.key == "schema_version")).scalar()
        if version != str(s.SCHEMA_VERSION):
            ours = [t for t in s.TABLES if t.name in existing]
            if ours:
                log.info("catalog schema %s is not %s: dropping it to rebuild", version, s.SCHEMA_VERSION)
                for table in reversed(ours):
                    table.drop(conn)
            s.metadata.create_all(conn)
            conn.execute(insert(s.meta).values(key="schema_version", value=str(s.SCHEMA_VERSION)))
            conn.execute(insert(s.meta).values(key="run_set", value=_digest(0, 0)))

    def _ensure_repository(self, conn: Connection, url: str, repo_id: str) -> None:
        stored = self._meta(conn)
        mine = {"repository_url": url, "repository_id": repo_id}
        clash = [k for k, v in mine.items() if v and stored.get(k) and stored[k] != v]
        if clash:
            log.info("catalog indexed another repository (%s differs): emptying it", ", ".join(clash))
            self._clear(conn)
        for key, value in mine.items():
            if value and stored.get(key) != value:
                self._set_meta(conn, key, value)

    @staticmethod
    def _meta(conn: Connection) -> dict[str, str]:
        return {row[0]: row[1] for row in conn.execute(select(s.meta.c.key, s.meta.c.value))}

    @staticmethod
    def _set_meta(conn: Connection, key: str, value: str) -> None:
        conn.execute(delete(s.meta).where(s.meta.c.key == key))
        conn.execute(insert(s.meta).values(key=key, value=value))

    # --- writing --------------------------------------------------------------------------------------

    def add_manifest(self, m: Manifest) -> None:
        """Index one run; indexing a run again replaces its rows."""
        self.add_manifests([m])

    def add_manifests(self, manifests: Iterable[Manifest]) -> int:
        """Index several runs in one transaction; returns how many."""
        with self.engine.begin() as conn:
            return self._add(conn, manifests)

    def remove_run(self, run_id: str) -> bool:
        """Forget one run; False if it was not indexed."""
        with self.engine.begin() as conn:
            return self._remove(conn, [run_id]) == 1

    def rebuild(self, manifests: Iterable[Manifest]) -> int:
        """Replace the whole index with these manifests, in one transaction; returns how many."""
        with self.engine.begin() as conn:
            self._clear(conn)
            return self._add(conn, manifests)

    def sync(self, run_ids: Iterable[str], load: Callable[[str], Manifest]) -> SyncResult:
        """Bring the index in line with the repository's list of runs: load and add the runs it lacks, drop
        the runs that are gone. Errors from ``load`` propagate and leave the index unchanged."""
        wanted = set(run_ids)
        have = self.run_ids()
        added = sorted(wanted - have)
        removed = sorted(have - wanted)
        loaded = [load(run_id) for run_id in added]
        with self.engine.begin() as conn:
            self._remove(conn, removed)
            self._add(conn, loaded)
        if added or removed:
            log.info("catalog synced: %d runs added, %d removed", len(added), len(removed))
        return SyncResult(tuple(added), tuple(removed))

    def _add(self, conn: Connection, manifests: Iterable[Manifest]) -> int:
        count, total = _parse_digest(self._meta(conn)["run_set"])
        present = set(conn.execute(select(s.runs.c.id)).scalars())
        run_rows: list[dict[str, Any]] = []
        item_rows: list[dict[str, Any]] = []
        art_rows: list[dict[str, Any]] = []
        replaced: list[str] = []
        seen: set[str] = set()
        for m in manifests:
            if m.run in seen:
                continue
            seen.add(m.run)
            if m.run in present:
                replaced.append(m.run)
            else:
                count, total = count + 1, (total + _id_hash(m.run)) % _MOD
            run, items, arts = _rows(m)
            run_rows.append(run)
            item_rows += items
            art_rows += arts
        self._delete_rows(conn, replaced)
        for table, rows in ((s.runs, run_rows), (s.items, item_rows), (s.artifacts, art_rows)):
            if rows:
                conn.execute(insert(table), rows)
        self._set_meta(conn, "run_set", _digest(count, total))
        return len(run_rows)

    def _remove(self, conn: Connection, run_ids: Sequence[str]) -> int:
        count, total = _parse_digest(self._meta(conn)["run_set"])
        present = set(conn.execute(select(s.runs.c.id).where(s.runs.c.id.in_(run_ids))).scalars()) \
            if run_ids else set()
        for run_id in present:
            count, total = count - 1, (total - _id_hash(run_id)) % _MOD
        self._delete_rows(conn, sorted(present))
        self._set_meta(conn, "run_set", _digest(count, total))
        return len(present)

    @staticmethod
    def _delete_rows(conn: Connection, run_ids: Sequence[str]) -> None:
        for i in range(0, len(run_ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = run_ids[i:i + 500]
            conn.execute(delete(s.artifacts).where(s.artifacts.c.run_id.in_(chunk)))
            conn.execute(delete(s.items).where(s.items.c.run_id.in_(chunk)))
            conn.execute(delete(s.runs).where(s.runs.c.id.in_(chunk)))

    def _clear(self, conn: Connection) -> None:
        for table in reversed(s.DATA_TABLES):
            conn.execute(delete(table))
        self._set_meta(conn, "run_set", _digest(0, 0))

    # --- reading --------------------------------------------------------------------------------------

    def run_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(s.runs.c.id)).scalars())

    def is_stale(self, run_ids: Iterable[str]) -> bool:
        """True when the index does not hold exactly these runs (the repository's manifests)."""
        with self.engine.connect() as conn:
            stored = self._meta(conn).get("run_set")
        return stored != run_set_digest(run_ids)

    def runs(self, user: str | None = None, newest_first: bool = True,
             status: Sequence[str] | None = None, limit: int | None = None) -> list[RunRow]:
        """Runs, newest first by default (ties broken by id). With ``user``: only runs holding a volume of
        that user (any server), with that volume's status in ``user_status``."""
        cols = [s.runs.c[name] for name in ("id", "time_us", "finished_us", "status", "users", "volumes",
                                            "failed", "bytes", "stored", "files", "hub", "jdr_version")]
        if user is None:
            query = select(*cols)
        else:
            # A user with several servers: report the worst of their items ("failed" < "ok" < "skipped").
            item_status = func.min(s.items.c.status).label("user_status")
            query = (select(*cols, item_status).join(s.items, s.items.c.run_id == s.runs.c.id)
                     .where(s.items.c.kind == "volume", s.items.c.user == user).group_by(*cols))
        if status is not None:
            query = query.where(s.runs.c.status.in_(list(status)))
        if newest_first:
            query = query.order_by(s.runs.c.time_us.desc(), s.runs.c.id.desc())
        else:
            query = query.order_by(s.runs.c.time_us, s.runs.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [RunRow(id=r.id, time=_time(r.time_us), finished=_time(r.finished_us), status=r.status,
                       users=r.users, volumes=r.volumes, failed=r.failed, bytes=r.bytes, stored=r.stored,
                       files=r.files, hub=bool(r.hub), jdr_version=r.jdr_version,
                       user_status=r.user_status if user is not None else None) for r in rows]

    def run_at(self, t: datetime, user: str | None = None,
               statuses: Sequence[str] = USABLE) -> str | None:
        """The newest run that started at or before ``t`` (aware) with one of ``statuses``; with ``user``,
        the newest such run holding a successfully backed-up volume of that user. None if there is none."""
        if t.tzinfo is None:
            raise ValueError("run_at needs an aware time")
        query = select(s.runs.c.id).where(s.runs.c.time_us <= _us(t), s.runs.c.status.in_(list(statuses)))
        if user is not None:
            has_user = select(s.items.c.run_id).where(
                s.items.c.kind == "volume", s.items.c.user == user, s.items.c.status == "ok")
            query = query.where(s.runs.c.id.in_(has_user))
        query = query.order_by(s.runs.c.time_us.desc(), s.runs.c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            found: str | None = conn.execute(query).scalar()
        return found

    def latest(self, user: str | None = None, statuses: Sequence[str] = USABLE) -> str | None:
        """The newest usable run (``latest``), optionally for one user."""
        return self.run_at(datetime.max.replace(tzinfo=UTC) - timedelta(days=1), user, statuses)

    def manifest(self, run_id: str) -> Manifest | None:
        """The indexed copy of a run's manifest (the repository's copy is the authority)."""
        with self.engine.connect() as conn:
            text = conn.execute(select(s.runs.c.manifest).where(s.runs.c.id == run_id)).scalar()
        return Manifest.from_dict(json.loads(text)) if text is not None else None

    def totals(self) -> tuple[int, int]:
        """(runs, bytes of the distinct artifacts they reference): what the repository holds for its runs."""
        distinct = select(s.artifacts.c.key, func.max(s.artifacts.c.size).label("size")).group_by(
            s.artifacts.c.key).subquery()
        with self.engine.connect() as conn:
            runs = conn.execute(select(func.count()).select_from(s.runs)).scalar() or 0
            size = conn.execute(select(func.coalesce(func.sum(distinct.c.size), 0))).scalar() or 0
        return int(runs), int(size)

    def artifact_refs(self) -> dict[str, set[str]]:
        """For each artifact key, the runs that reference it (what prune's mark phase needs)."""
        refs: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for key, run_id in conn.execute(select(s.artifacts.c.key, s.artifacts.c.run_id)):
                refs.setdefault(key, set()).add(run_id)
        return refs

    # --- comparing (tests, diagnostics) ---------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """Every row of every table, sorted, as plain data."""
        out: dict[str, Any] = {}
        with self.engine.connect() as conn:
            for table in s.TABLES:
                pk = list(table.primary_key.columns)
                rows = conn.execute(select(table).order_by(*pk)).mappings().all()
                out[table.name] = [{k: (bool(v) if k == "hub" else v) for k, v in r.items()} for r in rows]
        return out

    def fingerprint(self) -> str:
        """A SHA-256 of the whole index: equal for two catalogs built from the same manifests."""
        text = json.dumps(self.dump(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def equals(self, other: Catalog) -> bool:
        return self.fingerprint() == other.fingerprint()


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        if database and database != ":memory:":
            # WAL: readers see the last committed state and never block on (or block) the writer.
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine
