"""Capturing real JupyterHub databases (made by JupyterHub's ORM), live and at rest."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from jupyterhub import orm

from dr.errors import DeploymentError, IntegrityError, UsageError
from dr.hubdb import DbInfo, capture_database, check_integrity, head_revision, inspect_database
from tests.fixtures.hub import HubWriter

MakeDb = Callable[..., Path]


def _orm_users(db: Path) -> list[str]:
    """Open a database the way JupyterHub does (this also checks its alembic revision) and list users."""
    factory = orm.new_session_factory(f"sqlite:///{db}")
    session = factory()
    try:
        return sorted(u.name for u in session.query(orm.User))
    finally:
        session.close()
        factory.kw["bind"].dispose()


def _count(db: Path, table: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
def test_capture_while_the_hub_writes(make_hub_db: MakeDb, hub_writer: Callable[[Path], HubWriter],
                                      tmp_path: Path, wal: bool) -> None:
    src = make_hub_db(wal=wal, extra_users=150)
    expected_users = _orm_users(src)
    writer = hub_writer(src)
    start = writer.wait_for_commits(10)
    copies: list[tuple[Path, DbInfo]] = []
    # 40 captures, each started right after the hub committed again (an event, not a time), so the
    # writes and the captures interleave however loaded the machine is; in WAL mode the writer goes on
    # committing while a capture copies. (Captured back to back, a rollback-journal database starves
    # the writer.) Each copy is checked when made; only the last three files are kept.
    for _ in range(40):
        writer.wait_for_commits(writer.commits + 2)
        dest = tmp_path / f"copy-{len(copies)}.sqlite"
        info = capture_database(src, dest)
        assert info.integrity == "ok"
        assert info.revision == head_revision()
        assert info.size == dest.stat().st_size
        assert sorted(info.users) == expected_users
        assert 0 < _count(dest, "api_tokens") < 400  # the writer keeps ~50 tokens; a torn copy would not
        copies.append((dest, info))
        if len(copies) > 3:
            copies[-4][0].unlink()
    during = writer.stop() - start
    assert during >= 80, f"the writer committed only {during} transactions during the captures"
    for copy, _ in copies[-3:]:
        assert check_integrity(copy) == "ok"
        assert _orm_users(copy) == expected_users  # JupyterHub's ORM opens the copy
        # a self-contained file: no WAL mode, no side files
        conn = sqlite3.connect(copy)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        conn.close()
        assert not Path(f"{copy}-wal").exists()


def test_wal_frames_not_yet_checkpointed_are_captured(make_hub_db: MakeDb, tmp_path: Path) -> None:
    src = make_hub_db(wal=True)
    hub = sqlite3.connect(src)  # stands for the running hub: keeps the WAL open and unmerged
    try:
        hub.execute("PRAGMA wal_autocheckpoint=0")
        hub.execute("INSERT INTO users (name, admin, cookie_id) VALUES ('dora', 0, 'c00k1e')")
        hub.commit()
        assert Path(f"{src}-wal").stat().st_size > 0
        info = capture_database(src, tmp_path / "copy.sqlite")
    finally:
        hub.close()
    assert "dora" in info.users
    assert "dora" in _orm_users(tmp_path / "copy.sqlite")


def test_db_info_describes_users_and_servers(make_hub_db: MakeDb, tmp_path: Path) -> None:
    src = make_hub_db()
    info = capture_database(src, tmp_path / "copy.sqlite")
    assert sorted(info.users) == sorted(["alice", "bob", "alice@example.com", "Émile", "carol"])

    alice = info.server("alice")
    assert alice is not None
    assert alice.running and alice.pvc_name == "claim-alice"
    assert alice.last_activity == datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
    assert alice.started == datetime(2026, 11, 20, 13, 30, tzinfo=UTC)

    bob = info.server("bob")
    assert bob is not None and not bob.running and bob.pvc_name == "claim-bob"

    escaped = info.server("alice@example.com")
    assert escaped is not None and escaped.pvc_name == "claim-alice-40example-2ecom"

    emile = info.server("Émile")
    assert emile is not None
    assert emile.state == {} and emile.pvc_name is None and emile.started is None
    assert emile.last_activity is None and not emile.running

    carol = {s.server: s for s in info.servers_of("carol")}
    assert set(carol) == {"", "gpu"}
    assert not carol[""].running and carol[""].pvc_name == "claim-carol" and carol[""].started is None
    assert carol["gpu"].running and carol["gpu"].pvc_name == "claim-carol--gpu"
    assert carol["gpu"].state == {"pod_name": "jupyter-carol--gpu", "pvc_name": "claim-carol--gpu"}
    assert carol["gpu"].label == "carol:gpu"

    at_rest = inspect_database(src)
    assert at_rest == replace(info, size=src.stat().st_size)


def test_inspect_does_not_write_the_database(make_hub_db: MakeDb) -> None:
    src = make_hub_db()
    before = (src.stat().st_mtime_ns, src.read_bytes())
    info = inspect_database(src)
    assert info.revision == head_revision() and info.integrity == "ok"
    assert (src.stat().st_mtime_ns, src.read_bytes()) == before
    assert sorted(p.name for p in src.parent.iterdir()) == [src.name]


def test_a_missing_database_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "jupyterhub.sqlite"
    with pytest.raises(DeploymentError, match=r"nope/jupyterhub\.sqlite"):
        capture_database(missing, tmp_path / "copy.sqlite")
    with pytest.raises(DeploymentError, match="does not exist"):
        inspect_database(missing)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "jupyterhub.sqlite"
    bogus.write_text("c.JupyterHub.db_url = 'sqlite:///...'\n" * 100)
    with pytest.raises(UsageError, match=r"jupyterhub\.sqlite is not an SQLite database"):
        capture_database(bogus, tmp_path / "copy.sqlite")
    with pytest.raises(UsageError, match="not an SQLite database"):
        check_integrity(bogus)
    assert not (tmp_path / "copy.sqlite").exists()


def test_an_sqlite_file_that_is_not_a_hub_database_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "grafana.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE dashboards (id INTEGER PRIMARY KEY, title TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(UsageError, match=r"grafana\.db is an SQLite database but not a JupyterHub database"):
        capture_database(other, tmp_path / "copy.sqlite")
    assert not (tmp_path / "copy.sqlite").exists()


def _corrupt_users_table(db: Path) -> None:
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'users'").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(bytes((i * 37 + 11) % 256 for i in range(page_size)))


def test_a_corrupt_database_is_refused_and_nothing_is_written(make_hub_db: MakeDb, tmp_path: Path) -> None:
    src = make_hub_db(extra_users=150)
    _corrupt_users_table(src)
    dest = tmp_path / "out" / "copy.sqlite"
    with pytest.raises(IntegrityError) as caught:
        capture_database(src, dest)
    message = str(caught.value)
    assert str(src) in message
    assert "integrity_check" in message or "malformed" in message
    assert caught.value.hint
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir()] == []  # no partial copy left behind
    assert check_integrity(src) != "ok"


def test_capture_replaces_an_existing_copy(make_hub_db: MakeDb, tmp_path: Path) -> None:
    dest = tmp_path / "copy.sqlite"
    dest.write_bytes(b"an older copy")
    info = capture_database(make_hub_db(), dest)
    assert info.size == dest.stat().st_size and check_integrity(dest) == "ok"


def test_a_lock_held_too_long_fails_clearly(make_hub_db: MakeDb, tmp_path: Path) -> None:
    src = make_hub_db()
    hub = sqlite3.connect(src, isolation_level=None)
    hub.execute("BEGIN EXCLUSIVE")  # a hub stuck in a write transaction: readers get SQLITE_BUSY
    try:
        started = time.monotonic()
        with pytest.raises(DeploymentError, match=r"stayed locked through 2 backup attempts"):
            capture_database(src, tmp_path / "copy.sqlite", attempts=2, busy_timeout=0.1, deadline=0.5)
        assert time.monotonic() - started < 10
    finally:
        hub.execute("ROLLBACK")
        hub.close()
    assert not (tmp_path / "copy.sqlite").exists()


def test_a_lock_released_in_time_is_waited_for(make_hub_db: MakeDb, tmp_path: Path) -> None:
    src = make_hub_db()
    hub = sqlite3.connect(src, isolation_level=None, check_same_thread=False)
    hub.execute("BEGIN EXCLUSIVE")
    hub.execute("UPDATE users SET admin = 1 WHERE name = 'bob'")
    retries: list[str] = []

    class CommitOnFirstRetry(logging.Handler):
        """The hub commits when the capture says it will retry: an event, not a timer racing the load."""

        def emit(self, record: logging.LogRecord) -> None:
            if "is busy" in record.getMessage():
                retries.append(record.getMessage())
                if len(retries) == 1:
                    hub.execute("COMMIT")

    handler = CommitOnFirstRetry(level=logging.WARNING)
    capture_log = logging.getLogger("dr.hubdb.capture")
    capture_log.addHandler(handler)
    try:
        info = capture_database(src, tmp_path / "copy.sqlite", busy_timeout=0.2, deadline=0.6, attempts=6)
    finally:
        capture_log.removeHandler(handler)
        hub.close()
    assert len(retries) == 1  # locked once, waited for, then copied
    assert info.integrity == "ok"
    conn = sqlite3.connect(tmp_path / "copy.sqlite")
    assert conn.execute("SELECT admin FROM users WHERE name = 'bob'").fetchone()[0] == 1  # after the commit
    conn.close()
