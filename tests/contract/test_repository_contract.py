"""The repository on every store (``file://`` and the real S3 server): opening, committing manifests last,
reusing artifacts, resolving runs, locks, and cleaning up runs that never committed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from dr.errors import IntegrityError, LockHeldError, NotFoundError, RepositoryError, UsageError
from dr.model import Artifact, HubItem, Manifest, VolumeItem
from dr.repository import layout
from dr.repository.lock import LockInfo, list_locks, store_time
from dr.repository.repository import Repository
from dr.repository.store import Store
from dr.util.timefmt import utcnow

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def run_id(ts: datetime, suffix: str) -> str:
    return ts.strftime("%Y%m%dT%H%M%SZ") + "-" + suffix


def write_artifact(repo: Repository, key: str, run: str, data: bytes) -> Artifact:
    with repo.artifact_writer(key, run) as w:
        w.write(data)
    return w.artifact


def manifest(run: str, started: datetime, *arts: Artifact, user: str = "alice",
             reused_from: str | None = None) -> Manifest:
    archive, index = (*arts, None, None)[:2]
    vol = VolumeItem(key=f"{user}-x", user=user, archive=archive, index=index, reused_from=reused_from)
    return Manifest(run=run, started=started, finished=started + timedelta(seconds=5), status="complete",
                    deployment={"kind": "local"}, hub=HubItem(db=None, status="failed", error="test"),
                    volumes=(vol,))


def commit_run(repo: Repository, ts: datetime, suffix: str = "aaaaaa") -> tuple[str, list[Artifact]]:
    run = run_id(ts, suffix)
    arts = [write_artifact(repo, layout.volume_archive_key(run, "alice-x", False), run, b"archive " * 100),
            write_artifact(repo, layout.volume_index_key(run, "alice-x", False), run, b"index")]
    repo.commit_manifest(manifest(run, ts, *arts))
    return run, arts


@pytest.fixture
def repo(store: Store) -> Repository:
    return Repository.open(store, create=True)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def put_lock(store: Store, *, mode: str = "exclusive", pid: int, host: str | None = None,
             refreshed: datetime | None = None, lock_id: str = "20261120T000000Z-0123456789ab") -> LockInfo:
    ts = refreshed or utcnow()
    info = LockInfo(id=lock_id, mode=mode, operation="backup", host=host or socket.gethostname(), pid=pid,
                    run="20261120T000000Z-dead00", created=ts, refreshed=ts)
    store.put(layout.lock_key(info.id), json.dumps(info.to_dict()).encode())
    return info


# --- opening -----------------------------------------------------------------------------------------


def test_open_requires_a_repository_unless_create(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no jdr repository"):
        Repository.open(store)
    created = Repository.open(store, create=True)
    assert json.loads(store.get(layout.CONFIG))["format"] == "jdr-repository"
    again = Repository.open(store)
    assert again.id == created.id and len(again.id) == 32 and not again.encrypted
    assert again.run_ids() == []


def test_open_refuses_something_else(store: Store) -> None:
    store.put(layout.CONFIG, b'{"format": "restic"}')
    with pytest.raises(RepositoryError, match="not a jdr repository"):
        Repository.open(store)
    store.put(layout.CONFIG, b"{not json")
    with pytest.raises(RepositoryError, match="not valid JSON"):
        Repository.open(store)
    store.put(layout.CONFIG, json.dumps({"format": "jdr-repository", "version": 99}).encode())
    with pytest.raises(RepositoryError, match="newer than this jdr"):
        Repository.open(store)


# --- manifests last, artifacts immutable and reused -----------------------------------------------------


def test_commit_refuses_a_missing_artifact(repo: Repository) -> None:
    run = run_id(T0, "aaaaaa")
    present = write_artifact(repo, layout.volume_archive_key(run, "alice-x", False), run, b"data")
    missing = Artifact(key=layout.volume_index_key(run, "alice-x", False), size=5, sha256="0" * 64, run=run)
    with pytest.raises(IntegrityError, match="missing"):
        repo.commit_manifest(manifest(run, T0, present, missing))
    assert repo.run_ids() == []
    assert list(repo.store.list(layout.RUNS)) == []


def test_commit_refuses_an_artifact_of_the_wrong_size(repo: Repository) -> None:
    run = run_id(T0, "aaaaaa")
    art = write_artifact(repo, layout.volume_archive_key(run, "alice-x", False), run, b"data")
    wrong = Artifact(key=art.key, size=art.size + 1, sha256=art.sha256, run=run)
    with pytest.raises(IntegrityError, match="expected"):
        repo.commit_manifest(manifest(run, T0, wrong))
    assert repo.run_ids() == []
    repo.commit_manifest(manifest(run, T0, art))
    assert repo.run_ids() == [run]
    loaded = repo.load_manifest(run)
    assert loaded.volumes[0].archive == art and loaded.started == T0


def test_artifacts_record_size_and_sha256_and_read_back_verified(repo: Repository) -> None:
    import hashlib

    run = run_id(T0, "aaaaaa")
    data = os.urandom(100_000)
    art = write_artifact(repo, layout.volume_archive_key(run, "alice-x", False), run, data)
    assert art.size == len(data) and art.sha256 == hashlib.sha256(data).hexdigest() and art.run == run
    with repo.open_artifact(art) as f:
        assert f.read() == data
    repo.verify_artifact(art)
    repo.store.put(art.key, data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IntegrityError, match="SHA-256"):
        repo.verify_artifact(art)
    repo.store.put(art.key, data[:-10])
    with pytest.raises(IntegrityError, match="truncated"):
        repo.verify_artifact(art)


def test_a_run_reuses_artifacts_of_an_earlier_run(repo: Repository) -> None:
    first, arts = commit_run(repo, T0)
    second = run_id(T0 + timedelta(days=1), "bbbbbb")
    repo.commit_manifest(manifest(second, T0 + timedelta(days=1), *arts, reused_from=first))
    assert repo.run_ids() == [second, first]
    m = repo.load_manifest(second)
    assert [a.run for a in m.artifacts()] == [first, first]
    assert all(repo.artifact_exists(a) for a in m.artifacts())
    assert list(repo.store.list(layout.run_data_prefix(second))) == []
    # Cleaning up dead runs keeps what a committed run references, whoever wrote it.
    assert repo.sweep_dead_runs(run_id(T0 + timedelta(days=2), "cccccc")) == []
    assert all(repo.artifact_exists(a) for a in m.artifacts())


# --- resolving runs ----------------------------------------------------------------------------------


def test_resolve_run(repo: Repository) -> None:
    with pytest.raises(NotFoundError, match="no runs yet"):
        repo.resolve_run("latest")
    a, _ = commit_run(repo, T0, "aaaa11")
    b, _ = commit_run(repo, T0, "aaaa22")  # the same second: ids differ only in the random part
    c, _ = commit_run(repo, T0 + timedelta(hours=6), "cccccc")
    assert repo.run_ids() == [c, b, a]
    assert repo.resolve_run(None) == repo.resolve_run("latest") == repo.resolve_run("") == c
    assert repo.resolve_run(a) == a
    assert repo.resolve_run(c[:12]) == c  # a unique prefix
    with pytest.raises(UsageError, match="ambiguous"):
        repo.resolve_run(a[:20])
    with pytest.raises(NotFoundError, match="no run '2001"):
        repo.resolve_run("2001")
    assert repo.resolve_run(at=T0 + timedelta(hours=1)) in (a, b)
    assert repo.resolve_run(at=T0 + timedelta(hours=6)) == c  # at the very time
    assert repo.resolve_run("latest", at=T0 + timedelta(days=9)) == c
    with pytest.raises(NotFoundError, match="no run at or before"):
        repo.resolve_run(at=T0 - timedelta(seconds=1))
    with pytest.raises(UsageError, match="together"):
        repo.resolve_run(a, at=T0)


def test_unknown_run_and_unreadable_manifest(repo: Repository) -> None:
    with pytest.raises(NotFoundError):
        repo.load_manifest("20261120T020000Z-ffffff")
    repo.store.put(layout.manifest_key("20261120T020000Z-ffffff"), b"{}")
    with pytest.raises(IntegrityError, match="unreadable"):
        repo.load_manifest("20261120T020000Z-ffffff")


# --- locks -------------------------------------------------------------------------------------------


def test_a_second_exclusive_lock_is_refused_naming_the_holder(repo: Repository) -> None:
    with repo.lock("backup", run="20261120T020000Z-aaaaaa"):
        with pytest.raises(LockHeldError) as e:
            repo.lock("prune").acquire()
        msg = str(e.value)
        assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and "backup" in msg
        assert "20261120T020000Z-aaaaaa" in msg
        assert e.value.exit_code == 3 and e.value.hint and "jdr unlock" in e.value.hint
        with pytest.raises(LockHeldError):
            repo.lock("verify", exclusive=False).acquire()  # shared vs exclusive
        assert len(list_locks(repo.store)) == 1  # the refused ones left nothing behind
    assert list_locks(repo.store) == []


def test_shared_locks_coexist_and_keep_exclusive_out(repo: Repository) -> None:
    with repo.lock("restore", exclusive=False), repo.lock("verify", exclusive=False):
        assert len(list_locks(repo.store)) == 2
        with pytest.raises(LockHeldError, match=r"restore|verify"):
            repo.lock("backup").acquire()
    with repo.lock("backup"):
        pass
    assert list_locks(repo.store) == []


def test_a_lock_of_a_dead_process_on_this_host_is_broken(repo: Repository) -> None:
    dead = put_lock(repo.store, pid=dead_pid())
    with repo.lock("backup") as lock:
        assert [b.id for b in lock.broken] == [dead.id]
        assert [i.id for i in list_locks(repo.store)] == [lock.info.id]


def test_a_lock_not_refreshed_for_long_is_broken_and_a_fresh_foreign_one_is_not(repo: Repository) -> None:
    # "For long" by the store's own clock (the object's time), not by the holder's timestamp: see
    # tests/contract/test_lock_clocks.py for holders whose clocks are wrong.
    stale = put_lock(repo.store, pid=1, host="elsewhere.example", lock_id="20261120T000000Z-000000000001")
    (listed,) = list_locks(repo.store)
    assert listed.modified is not None
    while (now := store_time(repo.store)) is not None and (now - listed.modified).total_seconds() <= 3:
        time.sleep(0.3)
    quick = Repository(repo.store, repo.config, stale_after=3, refresh_every=1)
    with quick.lock("backup") as lock:
        assert [b.id for b in lock.broken] == [stale.id]
    # Another host's lock, refreshed just now: its process cannot be checked from here, so it holds.
    put_lock(repo.store, pid=1, host="elsewhere.example", lock_id="20261120T000000Z-000000000002")
    with pytest.raises(LockHeldError, match=r"elsewhere\.example"):
        repo.lock("backup").acquire()
    # A live process on this host holds too (pid 1 exists here).
    repo.store.delete(layout.lock_key("20261120T000000Z-000000000002"))
    put_lock(repo.store, pid=1, lock_id="20261120T000000Z-000000000003")
    with pytest.raises(LockHeldError):
        repo.lock("backup").acquire()


def test_a_shared_lock_does_not_break_or_wait_for_shared_ones(repo: Repository) -> None:
    put_lock(repo.store, mode="shared", pid=1)
    with repo.lock("verify", exclusive=False) as lock:
        assert lock.broken == []
        assert len(list_locks(repo.store)) == 2


# --- cleaning up runs that never committed ---------------------------------------------------------------


def test_sweep_removes_a_dead_runs_artifacts_and_incomplete_uploads_only(repo: Repository) -> None:
    committed, arts = commit_run(repo, T0)
    dead = run_id(T0 + timedelta(hours=1), "dddddd")
    current = run_id(T0 + timedelta(hours=2), "eeeeee")
    write_artifact(repo, layout.volume_archive_key(dead, "bob-x", False), dead, b"half a backup")
    write_artifact(repo, layout.hub_db_key(dead, False), dead, b"db")
    mine = write_artifact(repo, layout.hub_db_key(current, False), current, b"current run's db")
    # An upload the dead run never finished (large enough to be a real multipart upload on S3).
    w = repo.store.open_writer(layout.volume_archive_key(dead, "carol-x", False))
    w.write(os.urandom(9 << 20))

    assert repo.sweep_dead_runs(current) == [dead]
    assert list(repo.store.list(layout.run_data_prefix(dead))) == []
    assert all(repo.artifact_exists(a) for a in arts)
    assert repo.artifact_exists(mine)
    assert repo.run_ids() == [committed]
    assert _incomplete(repo.store) == []
    assert repo.sweep_dead_runs(current) == []  # nothing left to do


def _incomplete(store: Store) -> list[str]:
    from dr.repository.file import FileStore

    if isinstance(store, FileStore):
        d = store.root / ".incomplete"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []
    resp = store.client.list_multipart_uploads(Bucket=store.bucket)  # type: ignore[attr-defined]
    return [u["Key"] for u in resp.get("Uploads", [])]
