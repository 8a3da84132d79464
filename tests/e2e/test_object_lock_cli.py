"""``jdr backup``, ``prune`` and ``verify`` as an administrator runs them on a bucket with S3 Object Lock
(real SeaweedFS 4.48): every artifact and manifest of a real backup is locked, a second backup extends the
locks of what it reuses before its manifest exists, prune keeps a dropped run that is still locked and
says until when (exit 0), and verify finds every lock long enough. Without a lock length (a retention
policy with no longest keep, and no ``object_lock_days``) a backup is refused before it writes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dr.repository import layout
from tests.fixtures.s3 import S3Server
from tests.fixtures.sandbox import Sandbox, describe

pytestmark = [pytest.mark.s3]


@pytest.fixture
def locked_sandbox(s3_server: S3Server, make_sandbox: Callable[..., Sandbox],
                   monkeypatch: pytest.MonkeyPatch) -> tuple[Sandbox, str]:
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    bucket = f"jdr-lock-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return make_sandbox(f"s3://{bucket}/jdr"), bucket


def lock_of(server: S3Server, bucket: str, key: str) -> tuple[Any, Any]:
    h = server.client().head_object(Bucket=bucket, Key=f"jdr/{key}")
    return h.get("ObjectLockMode"), h.get("ObjectLockRetainUntilDate")


def test_backup_reuse_prune_and_verify_under_object_lock(locked_sandbox: tuple[Sandbox, str],
                                                         s3_server: S3Server) -> None:
    sb, bucket = locked_sandbox
    # A policy with no longest keep (keep_last: -1) gives no lock length: refused before anything is written.
    sb.write_config(retention={"keep_last": -1})
    refused = sb.run_jdr("backup")
    assert refused.returncode == 2, describe(refused)
    assert "object_lock_days" in refused.stderr
    assert sb.keys(layout.DATA) == [] and sb.keys(layout.RUNS) == []
    # keep_last 1 -> runs are locked 2 days (dr/policy/object_lock.py); the second backup locks longer.
    sb.write_config(retention={"keep_last": 1})
    first = sb.jdr_json("backup")
    m1 = first["manifest"]
    keys1 = [layout.manifest_key(first["run"])] + [k for k in sb.keys(layout.DATA) if first["run"] in k]
    assert len(keys1) > 4
    for key in keys1:
        mode, until = lock_of(s3_server, bucket, key)
        assert mode == "GOVERNANCE", key
        assert abs(until - (datetime.now(UTC) + timedelta(days=2))) < timedelta(minutes=5), key
    assert lock_of(s3_server, bucket, layout.CONFIG) == (None, None)
    assert lock_of(s3_server, bucket, layout.report_key(first["run"], "txt")) == (None, None)

    # The second run reuses the unchanged homes: their archives' locks follow it before it commits.
    sb.write_config(retention={"keep_last": 1}, repository={"url": sb.repo_url, "object_lock_days": 5})
    reused = [v["archive"]["key"] for v in m1["volumes"] if v.get("archive")]
    seen: dict[str, Any] = {}

    def at_commit() -> None:
        seen["runs"] = sb.keys(layout.RUNS)
        seen["locks"] = {k: lock_of(s3_server, bucket, k)[1] for k in reused}

    proc = sb.run_paused("backup-commit", at_commit, "--json", "backup")
    assert proc.returncode == 0, describe(proc)
    assert seen["runs"] == [layout.manifest_key(first["run"])]  # the second manifest did not exist yet
    soon = datetime.now(UTC) + timedelta(days=5)
    assert all(abs(u - soon) < timedelta(minutes=5) for u in seen["locks"].values()), seen["locks"]

    # Prune drops the first run by policy, but it is locked for two more days: kept, reported, exit 0.
    out = sb.run_jdr("prune")
    assert out.returncode == 0, describe(out)
    assert f"DROP {first['run']}" in out.stdout and "Object Lock until" in out.stdout
    assert "locked until" in out.stdout
    pruned = sb.jdr_json("prune")
    assert pruned["runs_deleted"] == [] and pruned["locked"]["runs"] == [first["run"]]
    assert pruned["locked"]["objects"] >= 1 and pruned["locked"]["until"]
    assert layout.manifest_key(first["run"]) in sb.keys(layout.RUNS)

    verified = sb.jdr_json("verify")
    assert verified["ok"] and verified["locks"]["short"] == []
