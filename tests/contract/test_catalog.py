"""The catalog: built incrementally from manifests, rebuilt from scratch by another process from manifest
files, and the two are equal; lookups (run_at, user filter), staleness, schema and repository changes,
readers during a write, and a listing of thousands of runs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, update

from dr.catalog import Catalog, run_set_digest
from dr.catalog import schema as s
from dr.model import Artifact, HubItem, Manifest, VolumeItem, new_run_id, volume_key

REPO = "file:///srv/backups/jdr"
T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
USERS = ["alice", "bob", "émile@example.org", "carol"]


def _art(key: str, writer: str, size: int) -> Artifact:
    return Artifact(key=key, size=size, sha256=hashlib.sha256(key.encode()).hexdigest(), run=writer)


def make_runs(n: int, start: datetime = T0, step: timedelta = timedelta(days=1)) -> list[Manifest]:
    """n runs: alice changes every run, bob (with a named server) every third run and otherwise reuses his
    archive, émile never changes after the first run, carol fails every fourth run; an orphan PVC appears in
    every fifth run; every fourth run is partial."""
    manifests: list[Manifest] = []
    last: dict[str, VolumeItem] = {}
    for i in range(n):
        started = start + i * step
        run = new_run_id(started)
        volumes = []
        for user in USERS:
            server = "gpu" if user == "bob" else ""
            key = volume_key(user, server)
            changed = user == "alice" or (user == "bob" and i % 3 == 0) or key not in last
            if user == "carol" and i % 4 == 3:
                volumes.append(VolumeItem(key=key, user=user, status="failed", error="permission denied"))
                continue
            if changed:
                item = VolumeItem(
                    key=key, user=user, server=server, source={"path": f"/home/jupyter-{user}"},
                    archive=_art(f"data/{run}/{key}.tar.zst", run, 1000 + i),
                    index=_art(f"data/{run}/{key}.index.json.zst", run, 100 + i),
                    fingerprint=f"fp-{user}-{i}", files=10 + i, bytes=5000 + i, seconds=1.25)
                last[key] = item
            else:
                prev = last[key]
                item = VolumeItem(key=key, user=user, server=server, source=prev.source, archive=prev.archive,
                                  index=prev.index, fingerprint=prev.fingerprint, files=prev.files,
                                  bytes=prev.bytes, reused_from=prev.archive.run if prev.archive else None)
            volumes.append(item)
        if i % 5 == 4:
            volumes.append(VolumeItem(key=volume_key(None, claim="claim-orphan"), user=None,
                                      source={"pvc": {"name": "claim-orphan"}},
                                      archive=_art(f"data/{run}/orphan.tar.zst", run, 7)))
        hub = HubItem(db=_art(f"data/{run}/hub.sqlite.zst", run, 4096), alembic_revision="4621fec11365",
                      users=tuple(USERS), db_bytes=65536)
        status = "partial" if i % 4 == 3 else "complete"
        manifests.append(Manifest(run=run, started=started, finished=started + timedelta(minutes=3),
                                  status=status, deployment={"kind": "local"}, hub=hub,
                                  volumes=tuple(volumes), jdr_version="0.1.0",
                                  failures=("carol: permission denied",) if status == "partial" else ()))
    return manifests


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog.sqlite(tmp_path / "cat" / "catalog.sqlite", repository_url=REPO, repository_id="r1") as c:
        yield c


REBUILD = """
import json, pathlib, sys
from dr.catalog import Catalog
from dr.model import Manifest
url, folder = sys.argv[1], pathlib.Path(sys.argv[2])
manifests = [Manifest.from_dict(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
with Catalog(url, repository_url=sys.argv[3], repository_id=sys.argv[4]) as c:
    c.rebuild(manifests)
    print(c.fingerprint())
"""


def test_rebuilt_by_another_process_equals_live(catalog: Catalog, tmp_path: Path) -> None:
    manifests = make_runs(30)
    for m in manifests:  # the live catalog grows one run at a time, as backups commit
        catalog.add_manifest(m)
    gone = manifests[7]
    assert catalog.remove_run(gone.run)  # as prune would
    assert not catalog.remove_run(gone.run)
    catalog.add_manifest(manifests[3])  # indexing a run again is harmless
    kept = [m for m in manifests if m.run != gone.run]

    folder = tmp_path / "manifests"
    folder.mkdir()
    for m in kept:
        (folder / f"{m.run}.json").write_text(json.dumps(m.to_dict()))
    other_url = f"sqlite:///{tmp_path / 'rebuilt.sqlite'}"
    result = subprocess.run([sys.executable, "-c", REBUILD, other_url, str(folder), REPO, "r1"],
                            capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
    with Catalog(other_url) as rebuilt:
        assert rebuilt.dump() == catalog.dump()  # a readable diff if they differ
        assert result.stdout.strip() == rebuilt.fingerprint() == catalog.fingerprint()
        assert rebuilt.equals(catalog)
    assert not catalog.is_stale(m.run for m in kept)
    assert catalog.manifest(manifests[5].run) == manifests[5]
    assert catalog.manifest(gone.run) is None


def test_listing_and_user_filter(catalog: Catalog) -> None:
    manifests = make_runs(8)
    catalog.rebuild(reversed(manifests))
    rows = catalog.runs()
    assert [r.id for r in rows] == [m.run for m in reversed(manifests)]
    assert [r.id for r in catalog.runs(newest_first=False)] == [m.run for m in manifests]
    first = rows[-1]
    assert (first.time, first.status, first.users, first.volumes, first.failed, first.hub) == (
        T0, "complete", 4, 4, 0, True)
    assert first.bytes == 4 * 5000 and first.files == 40
    assert first.stored == 4 * (1000 + 100) + 4096
    second = rows[-2]  # bob and émile reused their archives: only alice's and the hub's bytes are new
    assert second.stored == (1001 + 101) + 4096
    partial = catalog.runs(status=["partial"])
    assert [r.id for r in partial] == [manifests[7].run, manifests[3].run]
    assert partial[0].failed == 1
    carol = catalog.runs(user="carol")
    assert len(carol) == 8
    assert [r.user_status for r in carol if r.status == "partial"] == ["failed", "failed"]
    assert catalog.runs(user="nobody") == []
    assert len(catalog.runs(user="émile@example.org", limit=3)) == 3
    assert catalog.runs(limit=1)[0].to_dict()["time"] == "2026-11-08T02:00:00Z"


def test_run_at(catalog: Catalog) -> None:
    manifests = make_runs(8)
    catalog.rebuild(manifests)
    assert catalog.run_at(T0 - timedelta(seconds=1)) is None
    assert catalog.run_at(T0) == manifests[0].run
    assert catalog.run_at(T0 + timedelta(days=2, hours=5)) == manifests[2].run
    assert catalog.run_at(datetime(2030, 1, 1, tzinfo=UTC)) == manifests[7].run == catalog.latest()
    # carol's volume failed in runs 3 and 7: her newest good copy at those times is in the run before
    assert catalog.run_at(T0 + timedelta(days=3, hours=1), user="carol") == manifests[2].run
    assert catalog.latest(user="carol") == manifests[6].run
    assert catalog.run_at(T0 + timedelta(days=3, hours=1), statuses=("complete",)) == manifests[2].run
    berlin = datetime(2026, 11, 3, 3, 30, tzinfo=UTC).astimezone(ZoneInfo("Europe/Berlin"))
    assert catalog.run_at(berlin) == manifests[2].run  # any aware time zone
    with pytest.raises(ValueError, match="aware"):
        catalog.run_at(datetime(2026, 11, 3))


def test_artifact_refs_follow_sharing(catalog: Catalog) -> None:
    manifests = make_runs(6)
    catalog.rebuild(manifests)
    refs = catalog.artifact_refs()
    bob0 = manifests[0].volume_for("bob", "gpu")
    assert bob0 is not None and bob0.archive is not None
    assert refs[bob0.archive.key] == {m.run for m in manifests[:3]}  # reused by runs 1 and 2
    emile = manifests[0].volume_for("émile@example.org")
    assert emile is not None and emile.archive is not None
    assert refs[emile.archive.key] == {m.run for m in manifests}
    every = {a.key for m in manifests for a in m.artifacts()}
    assert set(refs) == every
    catalog.remove_run(manifests[0].run)
    assert catalog.artifact_refs()[emile.archive.key] == {m.run for m in manifests[1:]}


def test_staleness_and_sync(catalog: Catalog) -> None:
    manifests = make_runs(10)
    repo = {m.run: m for m in manifests[:6]}
    assert catalog.is_stale(repo)  # empty catalog, non-empty repository
    assert not catalog.is_stale([])
    result = catalog.sync(repo, repo.__getitem__)
    assert result.added == tuple(sorted(repo)) and result.removed == ()
    assert not catalog.is_stale(repo)
    # the repository moves on: two runs pruned, four new ones committed (by another host)
    del repo[manifests[0].run], repo[manifests[1].run]
    repo.update({m.run: m for m in manifests[6:]})
    assert catalog.is_stale(repo)
    loaded: list[str] = []

    def load(run_id: str) -> Manifest:
        loaded.append(run_id)
        return repo[run_id]

    result = catalog.sync(repo, load)
    assert sorted(loaded) == sorted(m.run for m in manifests[6:])  # only the missing ones are read
    assert result.removed == (manifests[0].run, manifests[1].run)
    assert not catalog.is_stale(list(repo))
    assert not catalog.sync(repo, load).changed
    assert catalog.run_ids() == set(repo)

    def broken(run_id: str) -> Manifest:
        raise OSError("unreadable")

    with pytest.raises(OSError):
        catalog.sync([*repo, "20991231T000000Z-ffffff"], broken)
    assert catalog.run_ids() == set(repo)  # unchanged
    assert run_set_digest(["a", "b"]) == run_set_digest(["b", "a", "a"])
    assert run_set_digest(["a", "b"]) != run_set_digest(["a", "c"])


def test_old_schema_is_dropped_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    with Catalog.sqlite(path, repository_url=REPO) as c:
        c.rebuild(make_runs(3))
        with c.engine.begin() as conn:
            conn.execute(update(s.meta).where(s.meta.c.key == "schema_version").values(value="0"))
    with Catalog.sqlite(path, repository_url=REPO) as c:
        assert c.runs() == []
        assert c.is_stale([m.run for m in make_runs(3)])
        c.rebuild(make_runs(3))
        assert len(c.runs()) == 3


def test_other_repository_empties_it(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    manifests = make_runs(3)
    with Catalog.sqlite(path, repository_url=REPO, repository_id="r1") as c:
        c.rebuild(manifests)
    with Catalog.sqlite(path, repository_url=REPO, repository_id="r1") as c:
        assert len(c.runs()) == 3  # same repository: kept
    with Catalog.sqlite(path) as c:
        assert len(c.runs()) == 3  # no identity given: kept
    with Catalog.sqlite(path, repository_url="s3://other/bucket", repository_id="r2") as c:
        assert c.runs() == []
        assert c.is_stale([m.run for m in manifests])


def test_readers_are_not_blocked_by_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    manifests = make_runs(4)
    with Catalog.sqlite(path) as writer, Catalog.sqlite(path) as reader:
        writer.rebuild(manifests[:2])
        with writer.engine.connect() as conn:
            tx = conn.begin()
            conn.execute(insert(s.meta).values(key="in-flight", value="x"))
            conn.execute(update(s.runs).values(status="failed"))
            started = time.monotonic()
            rows = reader.runs()  # sees the last committed state, immediately
            # A blocked reader would wait out the catalog's 30 s busy timeout (then fail); a loaded machine
            # may be slow, never that slow.
            assert time.monotonic() - started < 15
            assert [r.status for r in rows] == ["complete", "complete"]
            tx.rollback()
        writer.add_manifests(manifests[2:])
        assert len(reader.runs()) == 4


def test_two_thousand_runs(tmp_path: Path) -> None:
    manifests = make_runs(2000, step=timedelta(hours=6))
    with Catalog.sqlite(tmp_path / "big.sqlite") as c:
        started = time.perf_counter()
        c.rebuild(manifests)
        built = time.perf_counter() - started
        started = time.perf_counter()
        rows = c.runs()
        listed = time.perf_counter() - started
        started = time.perf_counter()
        found = c.run_at(T0 + timedelta(days=250, hours=1), user="carol")
        lookup = time.perf_counter() - started
        stale_started = time.perf_counter()
        assert not c.is_stale(m.run for m in manifests)
        stale = time.perf_counter() - stale_started
        print(f"\n2000 runs: rebuild {built:.2f}s, list {listed * 1000:.1f}ms, run_at(user) "
              f"{lookup * 1000:.1f}ms, is_stale {stale * 1000:.1f}ms")
        assert len(rows) == 2000 and rows[0].id == manifests[-1].run
        assert found is not None
        assert listed < 5  # generous: the point is the printed figure, not a tight bound


def test_lite_listing_equals_the_catalog_and_steps_aside_when_it_cannot(catalog: Catalog, tmp_path: Path) -> None:
    """dr.catalog.lite (plain sqlite3, for `jdr list`) lists exactly what Catalog.runs does, and returns
    None (the caller uses Catalog) for a stale, foreign, missing, older or non-file catalog."""
    from dr.catalog import lite

    assert lite.SCHEMA_VERSION == s.SCHEMA_VERSION
    manifests = make_runs(30)
    catalog.add_manifests(manifests)
    ids = [m.run for m in manifests]
    url = catalog.url
    for user in (None, "alice", "bob", "carol", "émile@example.org", "nobody"):
        got = lite.list_runs(url, ids, repository_url=REPO, repository_id="r1", user=user)
        assert got == catalog.runs(user=user)
    assert lite.list_runs(url, ids, repository_url=REPO, repository_id="r1")  # not vacuous
    assert lite.list_runs(url, ids[1:], repository_url=REPO, repository_id="r1") is None  # stale
    assert lite.list_runs(url, ids, repository_url="file:///elsewhere", repository_id="r1") is None
    assert lite.list_runs(url, ids, repository_url=REPO, repository_id="r2") is None
    assert lite.list_runs(f"sqlite:///{tmp_path / 'missing.sqlite'}", ids, repository_url=REPO,
                          repository_id="r1") is None
    assert not (tmp_path / "missing.sqlite").exists()  # never created
    assert lite.list_runs("sqlite://", ids, repository_url=REPO, repository_id="r1") is None
    assert lite.list_runs("postgresql://h/db", ids, repository_url=REPO, repository_id="r1") is None
    with catalog.engine.begin() as conn:
        conn.execute(update(s.meta).where(s.meta.c.key == "schema_version").values(value="0"))
    assert lite.list_runs(url, ids, repository_url=REPO, repository_id="r1") is None
