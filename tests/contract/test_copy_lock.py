"""``jdr copy`` to a destination bucket with S3 Object Lock (SeaweedFS, and moto for multipart; docs/FORMAT.md, "Object Lock"):

- every artifact and manifest of a copied run carries the copy's retention, at least the date the lock
  policy requires from the copy's start; ``config.json`` carries none;
- a newer run that names an artifact copied before has that artifact's lock extended *before* its
  manifest is written at the destination; when the store refuses the extension, the run fails and its
  manifest is never written;
- a copied object cannot be deleted by version id;
- a locked destination and no lock length: refused before anything is written;
- a multipart upload that the store commits without its lock (moto) is locked before the manifest.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dr import wiring
from dr.cli import jobs
from dr.errors import ConfigError
from dr.model import Manifest, VolumeItem, new_run_id
from dr.operations.copy import CopyOptions, copy_runs
from dr.policy.object_lock import ObjectLockPolicy
from dr.repository import layout
from dr.repository.file import FileStore
from dr.repository.repository import Repository
from dr.settings import load_settings
from dr.util import testhooks
from tests.contract.test_copy_contract import make_run
from tests.faultproxy import FaultProxy, Rule
from tests.fixtures.s3 import S3Server

pytestmark = [pytest.mark.s3]

ONE_DAY = ObjectLockPolicy("GOVERNANCE", 1)
TWO_DAYS = ObjectLockPolicy("GOVERNANCE", 2)


def locked_bucket(server: S3Server) -> str:
    name = f"jdr-copylock-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def keys_of(repo: Repository, run: str) -> list[str]:
    return [layout.manifest_key(run), *(a.key for a in repo.load_manifest(run).artifacts())]


def head(server: S3Server, bucket: str, key: str) -> dict[str, Any]:
    answer: dict[str, Any] = server.client().head_object(Bucket=bucket, Key=f"copy/{key}")
    return answer


def test_a_copy_locks_every_artifact_and_manifest_and_extends_what_it_reuses(
        s3_server: S3Server, tmp_path: Path) -> None:
    # The source (a file:// repository, no Object Lock) has the lock policy a copy uses by default.
    source = Repository.open(FileStore(tmp_path / "src"), create=True, lock_policy=ONE_DAY)
    now = datetime.now(UTC)
    first, shared = make_run(source, now - timedelta(days=3))
    bucket = locked_bucket(s3_server)
    destination = s3_server.store(f"s3://{bucket}/copy")

    before = datetime.now(UTC)
    result = copy_runs(source, destination, CopyOptions(runs=(first,)))
    after = datetime.now(UTC)
    assert result.status == "complete" and result.copied == [first]
    # Not from the run's own (three days old) time: from the copy's, like a backup's first write.
    required, latest = ONE_DAY.until(before), ONE_DAY.until(after)
    for key in keys_of(source, first):
        h = head(s3_server, bucket, key)
        assert h.get("ObjectLockMode") == "GOVERNANCE", key
        assert required <= h["ObjectLockRetainUntilDate"] <= latest, (key, h)
    assert head(s3_server, bucket, layout.CONFIG).get("ObjectLockMode") is None
    assert not list(destination.list("locks/"))

    # Nobody deletes a copied object, not even by version id (the delete a versioned bucket cannot undo).
    version = head(s3_server, bucket, shared.key)["VersionId"]
    with pytest.raises(ClientError) as refused:
        s3_server.client().delete_object(Bucket=bucket, Key=f"copy/{shared.key}", VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"

    # A newer run references the copied artifact; this copy locks for two days (object_lock_days raised):
    # the shared artifact is extended before the newer run's manifest exists at the destination.
    second, _ = make_run(source, now, reuse=shared)
    seen: dict[str, Any] = {}

    def at(point: str, progress: int) -> None:
        if point == "copy-commit":
            seen["shared"] = head(s3_server, bucket, shared.key)["ObjectLockRetainUntilDate"]
            seen["manifest"] = [o.key for o in destination.list(layout.RUNS)]

    testhooks.set_listener(at)
    try:
        before = datetime.now(UTC)
        again = copy_runs(source, destination, CopyOptions(), lock_policy=TWO_DAYS)
    finally:
        testhooks.set_listener(None)
    assert again.status == "complete" and again.copied == [second]
    (rc,) = again.runs
    assert (rc.artifacts_copied, rc.artifacts_present) == (1, 1)
    assert seen["shared"] >= TWO_DAYS.until(before)
    assert seen["manifest"] == [layout.manifest_key(first)]
    for key in keys_of(source, second):
        assert head(s3_server, bucket, key)["ObjectLockRetainUntilDate"] >= TWO_DAYS.until(before), key


def test_a_run_whose_artifact_cannot_be_locked_long_enough_is_not_copied(
        s3_server: S3Server, tmp_path: Path) -> None:
    source = Repository.open(FileStore(tmp_path / "src"), create=True)
    first, shared = make_run(source, datetime.now(UTC) - timedelta(hours=1))
    second, _ = make_run(source, datetime.now(UTC), reuse=shared)
    bucket = locked_bucket(s3_server)
    destination = s3_server.store(f"s3://{bucket}/copy")
    assert copy_runs(source, destination, CopyOptions(runs=(first,)), lock_policy=ONE_DAY).copied == [first]

    with FaultProxy(s3_server.endpoint_url) as proxy:
        rule = proxy.add(Rule(method="PUT", query="retention", status=403, code="AccessDenied", times=None))
        via_proxy = s3_server.store(f"s3://{bucket}/copy", endpoint_url=proxy.url, max_attempts=1)
        result = copy_runs(source, via_proxy, CopyOptions(), lock_policy=TWO_DAYS)
        assert rule.fired >= 1
    assert result.status == "partial" and result.exit_code == 1 and result.copied == []
    (rc,) = result.failed
    assert rc.run == second and "could not be locked" in rc.error and shared.key in rc.error
    assert [o.key for o in destination.list(layout.RUNS)] == [layout.manifest_key(first)]


def test_a_locked_destination_without_a_lock_length_is_refused_before_writing(
        s3_server: S3Server, tmp_path: Path) -> None:
    source = Repository.open(FileStore(tmp_path / "src"), create=True)
    make_run(source, datetime.now(UTC))
    bucket = locked_bucket(s3_server)
    destination = s3_server.store(f"s3://{bucket}/copy")
    unknown = ObjectLockPolicy("GOVERNANCE", None, reason="retention.keep_last is unlimited (-1)")
    with pytest.raises(ConfigError, match="Object Lock"):  # a dry run says so too
        copy_runs(source, destination, CopyOptions(dry_run=True), lock_policy=unknown)
    with pytest.raises(ConfigError, match="Object Lock") as refused:
        copy_runs(source, destination, CopyOptions(), lock_policy=unknown)
    assert "object_lock_days" in refused.value.hint and refused.value.exit_code == 2
    assert not list(destination.list(""))  # not even config.json


def test_jdr_copy_takes_its_lock_length_from_the_configuration(
        s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring of ``jdr copy``: ``repository.object_lock_days`` sets how long the copy is locked."""
    source = Repository.open(FileStore(tmp_path / "src"), create=True)
    run, _ = make_run(source, datetime.now(UTC))
    bucket = locked_bucket(s3_server)
    settings = load_settings(None, environ={
        "JDR_REPOSITORY": f"file://{tmp_path / 'src'}", "JDR_REPOSITORY_OBJECT_LOCK_DAYS": "3",
        "JDR_COPY_TO": f"s3://{bucket}/copy", "JDR_COPY_ENDPOINT_URL": s3_server.endpoint_url,
        "JDR_COPY_REGION": s3_server.region})
    assert wiring.object_lock_policy(settings).days == 3
    monkeypatch.setenv("JDR_COPY_AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("JDR_COPY_AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    three_days = ObjectLockPolicy("GOVERNANCE", 3)
    before = datetime.now(UTC)
    result = jobs.copy(settings)
    assert result.copied == [run]
    for key in keys_of(source, run):
        assert head(s3_server, bucket, key)["ObjectLockRetainUntilDate"] >= three_days.until(before), key


def test_a_multipart_artifact_is_locked_even_where_the_upload_drops_the_lock(
        moto_server: S3Server, tmp_path: Path) -> None:
    """moto commits a multipart upload without the retention asked for: the copy's stat sees that and
    locks the object before the run's manifest is written."""
    source = Repository.open(FileStore(tmp_path / "src"), create=True)
    run = new_run_id(datetime.now(UTC))
    with source.artifact_writer(f"data/{run}/volumes/v.tar.zst", run) as w:
        w.write(b"m" * (6 * 1024 * 1024))
    source.commit_manifest(Manifest(run=run, started=datetime.now(UTC), finished=datetime.now(UTC),
                                    status="complete", deployment={}, hub=None,
                                    volumes=(VolumeItem(key="v", user="v", archive=w.artifact),)))
    bucket = locked_bucket(moto_server)
    destination = moto_server.store(f"s3://{bucket}/copy", part_size=5 * 1024 * 1024)
    before = datetime.now(UTC)
    assert copy_runs(source, destination, CopyOptions(), lock_policy=ONE_DAY).copied == [run]
    for key in keys_of(source, run):
        h = head(moto_server, bucket, key)
        assert h.get("ObjectLockMode") == "GOVERNANCE", key
        assert h["ObjectLockRetainUntilDate"] >= ONE_DAY.until(before), key
