"""S3 Object Lock (docs/FORMAT.md, "Object Lock") on the real S3 servers that implement it: SeaweedFS 4.48
and moto. Buckets are made with ``ObjectLockEnabledForBucket=True``; locks are GOVERNANCE and short (1-3
days); nothing here waits for a date: an "expired" lock is one removed with BypassGovernanceRetention (moto
allows that; SeaweedFS refuses to remove a retention, so those tests run on moto only).

- every artifact and manifest jdr writes carries the run's retention; ``config.json`` and lock objects do
  not (they must stay replaceable and deletable);
- locked objects survive delete attempts (by version id, and through jdr's own ``purge``);
- an artifact a newer run references again is extended before that run's manifest exists, and when the
  extension fails it is not referenced (the volume is read again) and no run naming it commits;
- prune keeps what is locked (and says until when), deletes what is past its retention, every version;
- verify flags objects locked shorter than their runs need, or not at all, and ``extend`` fixes them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dr.deployments.base import BackupContext
from dr.deployments.reuse import decide_reuse
from dr.errors import RepositoryError
from dr.model import Artifact, HubItem, Manifest, VolumeItem, new_run_id
from dr.operations.prune import prune
from dr.operations.verify import verify_runs
from dr.policy.object_lock import ObjectLockPolicy
from dr.policy.retention import RetentionPolicy
from dr.repository import layout
from dr.repository.repository import Repository
from tests.faultproxy import FaultProxy, Rule
from tests.fixtures.s3 import S3Server

pytestmark = [pytest.mark.s3]

MiB = 1024 * 1024
ONE_DAY = ObjectLockPolicy("GOVERNANCE", 1)


@pytest.fixture(params=["seaweedfs", "moto"])
def server(request: pytest.FixtureRequest) -> S3Server:
    server: S3Server = request.getfixturevalue("s3_server" if request.param == "seaweedfs" else "moto_server")
    return server


@pytest.fixture
def moto(moto_server: S3Server) -> S3Server:
    return moto_server


def locked_bucket(server: S3Server) -> str:
    name = f"jdr-lock-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def open_repo(server: S3Server, bucket: str, policy: ObjectLockPolicy = ONE_DAY, **kw: Any) -> Repository:
    return Repository.open(server.store(f"s3://{bucket}/jdr", **kw), create=True, lock_policy=policy)


def head(server: S3Server, bucket: str, key: str, **kw: Any) -> dict[str, Any]:
    answer: dict[str, Any] = server.client().head_object(Bucket=bucket, Key=f"jdr/{key}", **kw)
    return answer


def until_of(server: S3Server, bucket: str, key: str) -> datetime | None:
    value: datetime | None = head(server, bucket, key).get("ObjectLockRetainUntilDate")
    return value


def write(repo: Repository, key: str, run: str, data: bytes) -> Artifact:
    with repo.artifact_writer(key, run) as w:
        w.write(data)
    return w.artifact


def volume_run(repo: Repository, started: datetime, *, big: bool = False,
               reuse: VolumeItem | None = None) -> tuple[Manifest, VolumeItem]:
    """A run with one volume: written afresh (``big``: a multipart archive), or ``reuse``'d."""
    run = new_run_id(started)
    if reuse is None:
        archive = write(repo, layout.volume_archive_key(run, "alice", False), run,
                        b"a" * (6 * MiB if big else 1000))
        index = write(repo, layout.volume_index_key(run, "alice", False), run, b"index")
        item = VolumeItem(key="alice", user="alice", archive=archive, index=index)
    else:
        item = VolumeItem(key="alice", user="alice", archive=reuse.archive, index=reuse.index,
                          reused_from=reuse.archive.run if reuse.archive else None)
    m = Manifest(run=run, started=started, finished=started + timedelta(seconds=1), status="complete",
                 deployment={"kind": "local"}, hub=HubItem(db=None, status="failed", error="test"),
                 volumes=(item,))
    return m, item


def keys_of(m: Manifest) -> list[str]:
    return [layout.manifest_key(m.run), *(a.key for a in m.artifacts())]


def near(value: datetime | None, expected: datetime) -> bool:
    return value is not None and abs((value - expected).total_seconds()) < 300


def test_every_artifact_and_manifest_is_locked_and_config_and_lock_objects_are_not(server: S3Server) -> None:
    bucket = locked_bucket(server)
    repo = open_repo(server, bucket, part_size=5 * MiB)
    assert repo.object_lock
    started = datetime.now(UTC)
    with repo.lock("backup") as lock:
        # The lock object must stay deletable: no retention on it.
        assert head(server, bucket, lock.key).get("ObjectLockMode") is None
        m, _ = volume_run(repo, started, big=True)  # a multipart archive (moto drops the lock on those)
        repo.commit_manifest(m)
    for key in keys_of(m):
        h = head(server, bucket, key)
        assert h.get("ObjectLockMode") == "GOVERNANCE", key
        assert near(h.get("ObjectLockRetainUntilDate"), started + timedelta(days=1)), (key, h)
    # One date for the whole run: its manifest's.
    assert len({until_of(server, bucket, k) for k in keys_of(m)}) == 1
    assert head(server, bucket, layout.CONFIG).get("ObjectLockMode") is None
    # A bucket without Object Lock: nothing is locked, nothing is asked of it.
    plain = server.new_bucket()
    prepo = open_repo(server, plain)
    assert not prepo.object_lock
    pm, _ = volume_run(prepo, started)
    prepo.commit_manifest(pm)
    assert head(server, plain, layout.manifest_key(pm.run)).get("ObjectLockMode") is None


def test_locked_objects_survive_delete_attempts(server: S3Server) -> None:
    bucket = locked_bucket(server)
    repo = open_repo(server, bucket)
    m, item = volume_run(repo, datetime.now(UTC))
    repo.commit_manifest(m)
    client = server.client()
    for key in keys_of(m):
        version = head(server, bucket, key)["VersionId"]
        with pytest.raises(ClientError) as refused:
            client.delete_object(Bucket=bucket, Key=f"jdr/{key}", VersionId=version)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        with pytest.raises(RepositoryError):
            repo.store.purge(key)  # what prune does, refused the same way
        repo.store.delete(key)  # without a version: only a delete marker
        assert head(server, bucket, key, VersionId=version)["ContentLength"] > 0
    # The data is still there, version by version, and verifies.
    assert item.archive is not None
    versions = client.list_object_versions(Bucket=bucket, Prefix=f"jdr/{item.archive.key}")["Versions"]
    assert len(versions) == 1
    body = client.get_object(Bucket=bucket, Key=f"jdr/{item.archive.key}", VersionId=versions[0]["VersionId"])
    assert body["Body"].read() == b"a" * 1000


def test_reuse_extends_retention_before_the_run_commits(server: S3Server) -> None:
    bucket = locked_bucket(server)
    first = open_repo(server, bucket)
    m1, item = volume_run(first, datetime.now(UTC) - timedelta(hours=1))
    first.commit_manifest(m1)
    before = until_of(server, bucket, m1.volumes[0].archive.key)  # type: ignore[union-attr]
    # A later run whose runs are locked longer (3 days): the reused artifacts must follow.
    later = open_repo(server, bucket, ObjectLockPolicy("GOVERNANCE", 3))
    run2 = new_run_id(datetime.now(UTC))
    ctx = BackupContext(repo=later, run=run2, previous=m1)
    assert decide_reuse(ctx, item, "alice").reusable
    wanted = later.run_retention(run2)
    assert wanted is not None and before is not None and wanted.until > before
    for art in m1.artifacts():  # extended now, before any manifest of run2 exists
        assert near(until_of(server, bucket, art.key), wanted.until)
    assert layout.manifest_key(run2) not in [o.key for o in later.store.list(layout.RUNS)]


def test_an_artifact_whose_lock_cannot_be_extended_is_not_reused_nor_committed(
        server: S3Server) -> None:
    bucket = locked_bucket(server)
    first = open_repo(server, bucket)
    m1, item = volume_run(first, datetime.now(UTC) - timedelta(hours=1))
    first.commit_manifest(m1)
    with FaultProxy(server.endpoint_url) as proxy:
        proxy.add(Rule(method="PUT", query="retention", status=403, code="AccessDenied", times=None))
        later = open_repo(server, bucket, ObjectLockPolicy("GOVERNANCE", 3), endpoint_url=proxy.url,
                          max_attempts=1)
        m2, _ = volume_run(later, datetime.now(UTC), reuse=item)
        decision = decide_reuse(BackupContext(repo=later, run=m2.run, previous=m1), item, "alice")
        assert not decision.reusable and decision.reason == "retention not extended"
        with pytest.raises(RepositoryError, match="could not be locked as long as the run"):
            later.commit_manifest(m2)
    assert m2.run not in later.run_ids()


def test_prune_keeps_what_is_locked_and_deletes_every_version_of_what_expired(moto: S3Server) -> None:
    bucket = locked_bucket(moto)
    repo = open_repo(moto, bucket)
    now = datetime.now(UTC)
    runs = []
    for days in (3, 2, 1):
        m, _ = volume_run(repo, now - timedelta(days=days))
        repo.commit_manifest(m)
        runs.append(m)
    expired, locked, newest = runs
    client = moto.client()
    for key in keys_of(expired):  # its lock has passed
        client.put_object_retention(Bucket=bucket, Key=f"jdr/{key}", Retention={}, BypassGovernanceRetention=True)
    result = prune(repo, RetentionPolicy(keep_last=1), UTC, now=now)
    assert result.exit_code == 0
    assert result.runs_deleted == [expired.run]
    assert set(result.locked_runs) == {locked.run}
    assert result.locked_objects == 3  # its manifest and its two artifacts
    assert result.locked_bytes >= sum(a.size for a in locked.artifacts())
    assert near(result.locked_until, now + timedelta(days=1))
    assert result.to_dict()["locked"]["objects"] == 3
    assert repo.run_ids() == [newest.run, locked.run]
    for key in keys_of(expired):  # gone, every version, no delete marker left behind
        listed = client.list_object_versions(Bucket=bucket, Prefix=f"jdr/{key}")
        assert not listed.get("Versions") and not listed.get("DeleteMarkers"), key
    for key in keys_of(locked) + keys_of(newest):
        assert head(moto, bucket, key)["ContentLength"] > 0


def test_verify_flags_short_and_missing_locks_and_extends_them(moto: S3Server) -> None:
    bucket = locked_bucket(moto)
    repo = open_repo(moto, bucket, ObjectLockPolicy("GOVERNANCE", 2))
    m, item = volume_run(repo, datetime.now(UTC))
    repo.commit_manifest(m)
    assert verify_runs(repo, None, deep=False).ok
    assert item.archive is not None and item.index is not None
    client = moto.client()
    short = datetime.now(UTC) + timedelta(hours=1)
    client.put_object_retention(Bucket=bucket, Key=f"jdr/{item.archive.key}", BypassGovernanceRetention=True,
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": short})
    client.put_object_retention(Bucket=bucket, Key=f"jdr/{item.index.key}", Retention={},
                                BypassGovernanceRetention=True)
    result = verify_runs(repo, None, deep=False)
    assert result.exit_code == 1
    assert {f.key for f in result.lock_findings} == {item.archive.key, item.index.key}
    assert any("shorter than run" in p and item.archive.key in p for p in result.problems)
    assert any("not locked" in p and item.index.key in p for p in result.problems)
    assert any("--extend-locks" in s for s in result.next_steps)
    fixed = verify_runs(repo, None, deep=False, extend=True)
    assert fixed.ok and fixed.locks_extended == 2
    manifest_until = until_of(moto, bucket, layout.manifest_key(m.run))
    assert until_of(moto, bucket, item.archive.key) == manifest_until
    assert verify_runs(repo, None, deep=False).ok


def test_credentials_that_may_not_read_the_lock_configuration_get_a_warning(
        moto: S3Server, caplog: pytest.LogCaptureFixture) -> None:
    bucket = locked_bucket(moto)
    with FaultProxy(moto.endpoint_url) as proxy:
        rule = proxy.add(Rule(method="GET", query="object-lock", status=403, code="AccessDenied", times=None))
        store = moto.store(f"s3://{bucket}/jdr", endpoint_url=proxy.url, max_attempts=1)
        assert not store.object_lock_enabled()
        assert not store.object_lock_enabled()  # asked once per store
        assert rule.fired == 1
    assert "s3:GetBucketObjectLockConfiguration" in caplog.text


def test_purge_frees_every_version_of_an_unlocked_object(server: S3Server) -> None:
    bucket = locked_bucket(server)
    store = server.store(f"s3://{bucket}/jdr")
    store.put("reports/r.txt", b"one")
    store.put("reports/r.txt", b"two")
    store.put("reports/r.txt.json", b"a longer key with the same prefix")
    store.delete("reports/r.txt")  # a delete marker on top of two versions
    assert store.purge("reports/r.txt") == 3
    listed = server.client().list_object_versions(Bucket=bucket, Prefix="jdr/reports/")
    assert [v["Key"] for v in listed.get("Versions", [])] == ["jdr/reports/r.txt.json"]
    assert not listed.get("DeleteMarkers")


def test_artifacts_a_mover_wrote_unlocked_are_locked_before_the_run_commits(moto: S3Server) -> None:
    """Kubernetes movers write with a deferred lock (dr/cli/agent.py); the committing backup locks them."""
    bucket = locked_bucket(moto)
    main = open_repo(moto, bucket)
    mover = Repository.open(moto.store(f"s3://{bucket}/jdr"), lock_policy=ObjectLockPolicy(deferred=True))
    m, _ = volume_run(mover, datetime.now(UTC))
    assert all(until_of(moto, bucket, a.key) is None for a in m.artifacts())
    main.commit_manifest(m)
    wanted = main.run_retention(m.run)
    assert wanted is not None
    assert {until_of(moto, bucket, k) for k in keys_of(m)} == {wanted.until}


def test_prune_counts_a_delete_the_store_still_refuses_as_locked(moto: S3Server) -> None:
    """Our clock says the lock has passed, the store (its clock behind, or a legal hold) still refuses the
    version delete: the run is kept and reported, exit 0. Refused without any retention: a permission
    problem, raised (exit 3)."""
    bucket = locked_bucket(moto)
    repo = open_repo(moto, bucket)
    now = datetime.now(UTC)
    old, _ = volume_run(repo, now - timedelta(days=2))
    repo.commit_manifest(old)
    newest, _ = volume_run(repo, now - timedelta(days=1))
    repo.commit_manifest(newest)
    client = moto.client()
    passed = now - timedelta(hours=1)  # moto accepts a date in the past: "expired" by any clock of ours
    for key in keys_of(old):
        client.put_object_retention(Bucket=bucket, Key=f"jdr/{key}", BypassGovernanceRetention=True,
                                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": passed})
    with FaultProxy(moto.endpoint_url) as proxy:
        proxy.add(Rule(method="DELETE", query="versionId=", status=403, code="AccessDenied", times=None))
        via_proxy = open_repo(moto, bucket, endpoint_url=proxy.url, max_attempts=1)
        result = prune(via_proxy, RetentionPolicy(keep_last=1), UTC, now=now)
        assert result.exit_code == 0 and result.runs_deleted == []
        assert list(result.locked_runs) == [old.run] and result.locked_objects == 3
        assert repo.run_ids() == [newest.run, old.run]
        client.put_object_retention(Bucket=bucket, Key=f"jdr/{layout.manifest_key(old.run)}", Retention={},
                                    BypassGovernanceRetention=True)
        with pytest.raises(RepositoryError):  # the S3 adapter's words for the refusal
            prune(via_proxy, RetentionPolicy(keep_last=1), UTC, now=now)
    assert prune(repo, RetentionPolicy(keep_last=1), UTC, now=now).runs_deleted == [old.run]
