"""The catalog written with plain sqlite3 (dr/catalog/lite.py: `jdr list`, a backup's new run) is the
catalog SQLAlchemy writes (dr/catalog/index.py): the same schema from one definition, the same rows, the
same run-set digest, and the same reactions to an older schema, another repository, a failing loader."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, update

from dr.catalog import Catalog, lite, run_set_digest
from dr.catalog import schema as s
from dr.catalog import tables as t
from dr.model import Manifest
from tests.contract.test_catalog import REPO, make_runs


def _shape(path: Path) -> dict[str, object]:
    """Every table's columns (name, declared type, NOT NULL, primary-key position) and indexes."""
    conn = sqlite3.connect(path)
    try:
        out: dict[str, object] = {}
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            cols = [(r[1], r[2], r[3], r[5]) for r in conn.execute(f'PRAGMA table_info("{name}")')]
            indexes = sorted((r[1], r[2], tuple(c[2] for c in conn.execute(f'PRAGMA index_info("{r[1]}")')))
                             for r in conn.execute(f'PRAGMA index_list("{name}")'))
            out[name] = (cols, indexes)
        return out
    finally:
        conn.close()


def test_one_schema_definition_both_writers_agree(tmp_path: Path) -> None:
    assert [x.name for x in s.TABLES] == [x.name for x in t.TABLES]
    engine = create_engine(f"sqlite:///{tmp_path / 'sqlalchemy.sqlite'}")
    s.metadata.create_all(engine)
    engine.dispose()
    conn = sqlite3.connect(tmp_path / "lite.sqlite")
    for table in t.TABLES:
        for statement in lite.ddl(table):
            conn.execute(statement)
    conn.commit()
    conn.close()
    mine, theirs = _shape(tmp_path / "lite.sqlite"), _shape(tmp_path / "sqlalchemy.sqlite")
    assert set(mine) == {"jdr_meta", "jdr_runs", "jdr_items", "jdr_artifacts"}
    assert mine == theirs


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_built_and_synced_with_sqlite3_equals_the_catalog(tmp_path: Path) -> None:
    manifests = make_runs(30)
    repo = {m.run: m for m in manifests[:20]}
    url = _url(tmp_path / "cache" / "lite.sqlite")  # its directory does not exist yet
    rows = lite.synced_runs(url, list(repo), repo.__getitem__, repository_url=REPO, repository_id="r1")
    assert rows is not None and [r.id for r in rows] == sorted(repo, reverse=True)
    # the repository moves on: three runs pruned, eight committed, two of them by this host's backups
    for m in manifests[:3]:
        del repo[m.run]
    repo.update({m.run: m for m in manifests[20:]})
    for m in manifests[20:22]:
        assert lite.add_run(url, m, repository_url=REPO, repository_id="r1")
    assert lite.add_run(url, manifests[21], repository_url=REPO, repository_id="r1")  # again: harmless
    assert lite.list_runs(url, repo, repository_url=REPO, repository_id="r1") is None  # still stale
    loaded: list[str] = []

    def load(run_id: str) -> Manifest:
        loaded.append(run_id)
        return repo[run_id]

    for user in (None, "carol", "émile@example.org", "nobody"):
        got = lite.synced_runs(url, list(repo), load, repository_url=REPO, repository_id="r1", user=user)
        with Catalog.sqlite(tmp_path / f"ref-{user}.sqlite", repository_url=REPO, repository_id="r1") as ref:
            ref.rebuild(repo.values())
            assert got == ref.runs(user=user)
    assert sorted(loaded) == sorted(m.run for m in manifests[22:])  # only what it lacked, once
    with Catalog(url, repository_url=REPO, repository_id="r1") as light, \
            Catalog.sqlite(tmp_path / "rebuilt.sqlite", repository_url=REPO, repository_id="r1") as rebuilt:
        rebuilt.rebuild(repo.values())
        assert light.dump() == rebuilt.dump()  # rows, digest and meta: a readable diff if they differ
        assert not light.is_stale(repo)
        assert light.manifest(manifests[25].run) == manifests[25]
        light.add_manifest(manifests[0])  # SQLAlchemy keeps writing the file sqlite3 made
    assert lite.list_runs(url, [*repo, manifests[0].run], repository_url=REPO, repository_id="r1") is not None
    assert run_set_digest(repo) != run_set_digest([*repo, manifests[0].run])


def test_a_backup_indexes_only_a_catalog_of_its_repository(tmp_path: Path) -> None:
    manifests = make_runs(4)
    missing = tmp_path / "missing.sqlite"
    assert not lite.add_run(_url(missing), manifests[0], repository_url=REPO, repository_id="r1")
    assert not missing.exists()  # the next listing builds it, not the backup
    assert not lite.add_run("sqlite://", manifests[0], repository_url=REPO, repository_id="r1")
    assert not lite.add_run("postgresql://h/db", manifests[0], repository_url=REPO, repository_id="r1")
    path = tmp_path / "catalog.sqlite"
    with Catalog.sqlite(path, repository_url=REPO, repository_id="r1") as c:
        c.rebuild(manifests[:2])
        before = c.dump()
        assert not lite.add_run(_url(path), manifests[2], repository_url=REPO, repository_id="r2")
        assert not lite.add_run(_url(path), manifests[2], repository_url="file:///elsewhere", repository_id="r1")
        assert c.dump() == before
        assert lite.add_run(_url(path), manifests[2], repository_url=REPO, repository_id="r1")
        assert [r.id for r in c.runs()] == [m.run for m in reversed(manifests[:3])]
        assert not c.is_stale(m.run for m in manifests[:3])
        with c.engine.begin() as conn:
            conn.execute(update(s.meta).where(s.meta.c.key == "schema_version").values(value="0"))
        assert not lite.add_run(_url(path), manifests[3], repository_url=REPO, repository_id="r1")
        assert c.run_ids() == {m.run for m in manifests[:3]}


def test_older_schema_other_repository_and_a_failing_loader(tmp_path: Path) -> None:
    manifests = make_runs(5)
    ids = [m.run for m in manifests]
    by_id = {m.run: m for m in manifests}
    path = tmp_path / "catalog.sqlite"
    with Catalog.sqlite(path, repository_url=REPO, repository_id="r1") as c:
        c.rebuild(manifests[:3])
        with c.engine.begin() as conn:
            conn.execute(update(s.meta).where(s.meta.c.key == "schema_version").values(value="0"))
    rows = lite.synced_runs(_url(path), ids[:2], by_id.__getitem__, repository_url=REPO, repository_id="r1")
    assert rows is not None and [r.id for r in rows] == ids[1::-1]  # dropped, recreated, rebuilt
    with Catalog.sqlite(path) as c:
        assert c.run_ids() == set(ids[:2])

    def broken(run_id: str) -> Manifest:
        raise OSError("unreadable")

    with pytest.raises(OSError):
        lite.synced_runs(_url(path), ids, broken, repository_url=REPO, repository_id="r1")
    with Catalog.sqlite(path) as c:
        assert c.run_ids() == set(ids[:2])  # unchanged
    other = lite.synced_runs(_url(path), ids[4:], by_id.__getitem__, repository_url="s3://other/b",
                             repository_id="r2")
    assert other is not None and [r.id for r in other] == ids[4:]  # another repository: emptied first
    with Catalog.sqlite(path) as c:
        assert c.run_ids() == {ids[4]} and not c.is_stale(ids[4:])
    assert lite.synced_runs("sqlite://", ids, by_id.__getitem__, repository_url=REPO, repository_id="r1") is None
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    assert lite.synced_runs(_url(tmp_path / "junk.sqlite"), ids, by_id.__getitem__, repository_url=REPO,
                            repository_id="r1") is None  # Catalog then reports it, with its hint
