"""Storage faults injected between the real client (boto3 in S3Store) and a real S3 server (SeaweedFS
and moto), through tests/faultproxy.py: each test ends by checking that nothing half-written is visible
and no multipart upload is left behind."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from typing import Any

import pytest

import dr.repository.s3 as s3mod
from dr.errors import ObjectNotFound, RepositoryError, TransientStorageError
from dr.repository.s3 import S3Store
from tests.faultproxy import FaultProxy, Rule
from tests.fixtures.s3 import S3Server, free_port

pytestmark = [pytest.mark.faults, pytest.mark.s3]

MiB = 1024 * 1024


def _store(upstream: S3Server, bucket: str, proxy: FaultProxy, **kw: Any) -> S3Store:
    kw.setdefault("max_attempts", 3)
    return upstream.store(f"s3://{bucket}/repo", endpoint_url=proxy.url, **kw)


def _uploads(upstream: S3Server, bucket: str) -> list[Any]:
    return list(upstream.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _objects(upstream: S3Server, bucket: str) -> list[str]:
    return [o["Key"] for o in upstream.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def _payload(size: int) -> bytes:
    return os.urandom(size)


def test_transient_503_on_one_upload_part_is_retried(
    upstream: S3Server, bucket: str, proxy: FaultProxy
) -> None:
    rule = proxy.add(Rule(method="PUT", query="partNumber=2", status=503, code="SlowDown"))
    store = _store(upstream, bucket, proxy)
    data = _payload(20 * MiB)  # parts of 8 + 8 + 4 MiB
    w = store.open_writer("vol/alice.tar.zst")
    w.write(data)
    w.commit()
    assert rule.fired == 1
    assert len(proxy.requests("PUT", "partNumber=2")) == 2  # the failure, then the retry
    assert hashlib.sha256(store.get("vol/alice.tar.zst")).digest() == hashlib.sha256(data).digest()
    assert _uploads(upstream, bucket) == []


def test_persistent_upload_part_failure_aborts_and_leaves_nothing(
    upstream: S3Server, bucket: str, proxy: FaultProxy
) -> None:
    proxy.add(Rule(method="PUT", query="partNumber=2", status=500, code="InternalError", times=None))
    store = _store(upstream, bucket, proxy)
    w = store.open_writer("vol/bob.tar.zst")
    w.write(_payload(9 * MiB))  # part 1 is sent
    with pytest.raises(TransientStorageError, match=r"vol/bob\.tar\.zst") as exc:
        # Part 2 fails on every attempt, in the background: its error surfaces at the latest at commit.
        w.write(_payload(8 * MiB))
        w.commit()
    assert exc.value.hint
    assert len(proxy.requests("PUT", "partNumber=2")) == 3  # max_attempts
    w.abort()  # safe after a failure, and again
    with pytest.raises(ObjectNotFound):
        store.stat("vol/bob.tar.zst")
    assert _objects(upstream, bucket) == []
    assert _uploads(upstream, bucket) == []


def test_failing_complete_multipart_upload_leaves_nothing(
    upstream: S3Server, bucket: str, proxy: FaultProxy
) -> None:
    proxy.add(Rule(method="POST", query="uploadId=", status=503, times=None))
    store = _store(upstream, bucket, proxy)
    w = store.open_writer("vol/carol.tar.zst")
    w.write(_payload(12 * MiB))
    with pytest.raises(TransientStorageError):
        w.commit()
    assert _objects(upstream, bucket) == []
    assert _uploads(upstream, bucket) == []


def test_failing_small_put_raises_and_leaves_nothing(
    upstream: S3Server, bucket: str, proxy: FaultProxy
) -> None:
    proxy.add(Rule(method="PUT", status=503, times=None))
    store = _store(upstream, bucket, proxy)
    with pytest.raises(TransientStorageError, match="after retries"):
        store.put("runs/1/manifest.json", b"{}")
    assert _objects(upstream, bucket) == []


def test_connection_dropped_mid_read_resumes_with_range(
    upstream: S3Server, bucket: str, proxy: FaultProxy
) -> None:
    store = _store(upstream, bucket, proxy)
    data = _payload(10 * MiB + 17)
    store.put("vol/dave.tar.zst", data)
    # The first GET is cut after 3 MiB, the first resumed one after 1 MiB more.
    proxy.add(Rule(method="GET", path="dave", drop_after=3 * MiB, action="drop_body", times=2))
    h = hashlib.sha256()
    with store.open_reader("vol/dave.tar.zst") as r:
        while chunk := r.read(256 * 1024):
            h.update(chunk)
    assert h.digest() == hashlib.sha256(data).digest()
    gets = proxy.requests("GET")
    ranges = [g.headers.get("range") for g in gets if "dave" in g.path]
    assert ranges[0] is None
    assert len(ranges) == 3
    assert all(r is not None and r.startswith("bytes=") for r in ranges[1:])
    offsets = [int(r.removeprefix("bytes=").split("-")[0]) for r in ranges[1:] if r]
    assert offsets[0] > 0
    assert offsets[1] > offsets[0]


def test_connection_dropped_on_every_read_gives_up(
    upstream: S3Server, bucket: str, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3mod, "READ_RESUME_BACKOFF", 0.01)
    store = _store(upstream, bucket, proxy)
    store.put("vol/erin.tar.zst", _payload(2 * MiB))
    # The first response carries 1 MiB; every resumed one breaks before any byte.
    proxy.add(Rule(method="GET", path="erin", drop_after=MiB, action="drop_body", times=1))
    proxy.add(Rule(method="GET", path="erin", has_header="Range", action="reset", times=None))
    with store.open_reader("vol/erin.tar.zst") as r, pytest.raises(TransientStorageError, match="byte"):
        while r.read(64 * 1024):
            pass


def test_slow_response_times_out_and_is_retried(upstream: S3Server, bucket: str, proxy: FaultProxy) -> None:
    # The undelayed retry must answer within read_timeout even on a loaded machine: 2 s, against a 6 s delay.
    store = _store(upstream, bucket, proxy, read_timeout=2.0)
    store.put("runs/2/manifest.json", b'{"run": 2}')
    proxy.add(Rule(method="GET", path="manifest", action="delay", delay=6.0))
    assert store.get("runs/2/manifest.json") == b'{"run": 2}'
    assert len(proxy.requests("GET")) == 2


def test_transient_500_on_get_is_retried(upstream: S3Server, bucket: str, proxy: FaultProxy) -> None:
    store = _store(upstream, bucket, proxy)
    store.put("k", b"value")
    proxy.add(Rule(method="GET", status=500, code="InternalError"))
    assert store.get("k") == b"value"


def test_endpoint_down_is_transient_with_clear_message() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = S3Store.from_url("s3://some-bucket/repo", endpoint_url=endpoint, access_key="a",
                             secret_key="b", region="us-east-1", max_attempts=2, connect_timeout=1)
    with pytest.raises(TransientStorageError, match="cannot reach S3 endpoint") as exc:
        store.get("runs/latest")
    assert endpoint in str(exc.value)
    assert exc.value.hint
    with pytest.raises(TransientStorageError, match=endpoint):
        list(store.list(""))
    w = store.open_writer("x")
    w.write(b"small")
    with pytest.raises(TransientStorageError):
        w.commit()


def test_wrong_credentials_are_a_repository_error(s3_server: S3Server) -> None:
    # SeaweedFS checks signatures (moto does not by default).
    bucket = s3_server.new_bucket()
    store = s3_server.store(f"s3://{bucket}/repo", secret_key="not-the-secret")
    for action in (lambda: store.put("k", b"v"), lambda: store.get("k"), lambda: list(store.list(""))):
        with pytest.raises(RepositoryError) as exc:
            action()
        assert not isinstance(exc.value, (TransientStorageError, ObjectNotFound))
        assert "credentials" in str(exc.value)
        assert exc.value.hint
    unknown = s3_server.store(f"s3://{bucket}/repo", access_key="nobody")
    with pytest.raises(RepositoryError, match="credentials"):
        unknown.put("k", b"v")


def test_missing_bucket_is_named(upstream: S3Server) -> None:
    store = upstream.store("s3://jdr-no-such-bucket/repo")
    checks = [
        lambda: store.get("k"),
        lambda: store.stat("k"),
        lambda: store.put("k", b"v"),
        lambda: list(store.list("")),
        lambda: store.open_reader("k"),
        lambda: store.cleanup_incomplete(datetime.now(UTC)),
    ]
    for check in checks:
        with pytest.raises(RepositoryError, match="bucket 'jdr-no-such-bucket' does not exist") as exc:
            check()
        assert not isinstance(exc.value, ObjectNotFound)
        assert "jdr-no-such-bucket" in (exc.value.hint or "")
    w = store.open_writer("big")
    with pytest.raises(RepositoryError, match="jdr-no-such-bucket"):
        w.write(_payload(9 * MiB))
