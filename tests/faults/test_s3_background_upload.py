"""Multipart parts uploaded in the background (dr/repository/s3_upload.py): a part that fails while the
next is filled fails the write, an abort waits for the parts still uploading, and the part schedule stays
valid for S3 at every boundary. Through tests/faultproxy.py, against SeaweedFS and moto; each test ends by
checking that nothing half-written is visible and no multipart upload is left behind."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

import dr.repository.s3_upload as upload
from dr.errors import ObjectNotFound, TransientStorageError
from dr.repository.s3 import S3Store
from tests.faultproxy import FaultProxy, Rule
from tests.fixtures.s3 import S3Server

pytestmark = [pytest.mark.faults, pytest.mark.s3]

MiB = 1024 * 1024


def _store(upstream: S3Server, bucket: str, proxy: FaultProxy, **kw: Any) -> S3Store:
    kw.setdefault("max_attempts", 3)
    return upstream.store(f"s3://{bucket}/repo", endpoint_url=proxy.url, **kw)


def _nothing_left(upstream: S3Server, bucket: str, store: S3Store, key: str) -> None:
    with pytest.raises(ObjectNotFound):
        store.stat(key)
    client = upstream.client()
    assert client.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_part_failing_in_the_background_fails_a_later_write_and_leaves_nothing(
        upstream: S3Server, bucket: str, proxy: FaultProxy) -> None:
    proxy.add(Rule(method="PUT", query="partNumber=1", status=500, code="InternalError", times=None))
    store = _store(upstream, bucket, proxy)
    w = store.open_writer("vol/frank.tar.zst")
    chunk = os.urandom(MiB)
    written = 0
    # Part 1 fails on every attempt in a worker while the next parts are filled: at the latest, handing
    # over the part after the PARTS_IN_FLIGHT in flight waits for part 1 and raises its error.
    limit = (upload.PARTS_IN_FLIGHT + 1) * 8 * MiB
    with pytest.raises(TransientStorageError, match=r"upload 'vol/frank\.tar\.zst'.*after retries") as exc:
        while written <= limit:
            w.write(chunk)
            written += len(chunk)
    assert written <= limit  # raised by a write, not left for commit
    assert exc.value.hint
    assert len(proxy.requests("PUT", "partNumber=1")) == 3  # botocore's retries still happen
    with pytest.raises(ValueError, match="after commit or abort"):
        w.commit()  # the failed writer aborted itself
    w.abort()  # and aborting again is harmless
    _nothing_left(upstream, bucket, store, "vol/frank.tar.zst")


def test_the_last_part_failing_fails_the_commit_and_leaves_nothing(
        upstream: S3Server, bucket: str, proxy: FaultProxy) -> None:
    proxy.add(Rule(method="PUT", query="partNumber=2", status=503, code="SlowDown", times=None))
    store = _store(upstream, bucket, proxy)
    w = store.open_writer("vol/gina.tar.zst")
    w.write(os.urandom(12 * MiB))  # part 1 (8 MiB) goes in the background; 4 MiB stay buffered
    with pytest.raises(TransientStorageError, match=r"vol/gina\.tar\.zst"):
        w.commit()  # part 2 is the rest: it fails, so nothing is completed
    assert proxy.requests("POST", "uploadId=") == []  # CompleteMultipartUpload never sent
    _nothing_left(upstream, bucket, store, "vol/gina.tar.zst")


def test_abort_waits_for_the_parts_still_uploading(upstream: S3Server, bucket: str, proxy: FaultProxy) -> None:
    # Part 2 is held by the proxy, so that it is certainly in flight when abort is called: were the
    # upload aborted before part 2 arrived, the server could keep the part (and the upload) behind.
    held = proxy.add(Rule(method="PUT", query="partNumber=2", action="delay", delay=1.0))
    store = _store(upstream, bucket, proxy)
    w = store.open_writer("vol/hank.tar.zst")
    w.write(os.urandom(17 * MiB))  # parts 1 and 2 handed to the workers, 1 MiB buffered
    w.abort()
    assert held.fired == 1
    [part2] = proxy.requests("PUT", "partNumber=2")
    [abort] = proxy.requests("DELETE", "uploadId=")
    assert part2.answered is not None and part2.answered < abort.arrived  # stored, then aborted
    _nothing_left(upstream, bucket, store, "vol/hank.tar.zst")


def _expected_parts(total: int, first: int) -> list[int]:
    """The parts a writer must send for ``total`` bytes: full parts of the growing schedule, then the rest;
    [] for an object smaller than the first part (one PutObject)."""
    if total < first:
        return []
    parts: list[int] = []
    left = total
    while left >= (size := upload.part_size(first, len(parts))):
        parts.append(size)
        left -= size
    return [*parts, left] if left else parts


@pytest.mark.parametrize("total", [0, 1, 5 * MiB - 1, 5 * MiB, 5 * MiB + 1, 10 * MiB + 1, 20 * MiB, 21 * MiB + 3])
def test_part_boundaries_and_growth(moto_server: S3Server, monkeypatch: pytest.MonkeyPatch, total: int) -> None:
    # The part size doubles every 2 parts here (every 1000 in production) so that growth is reached in a
    # few MiB: parts of 5, 5, 10, 10, 20 … MiB.
    monkeypatch.setattr(upload, "PARTS_PER_SIZE_STEP", 2)
    bucket = moto_server.new_bucket()
    with FaultProxy(moto_server.endpoint_url) as proxy:
        store = moto_server.store(f"s3://{bucket}/repo", endpoint_url=proxy.url, part_size=5 * MiB)
        data = hashlib.sha256(str(total).encode()).digest() * (total // 32 + 1)
        data = data[:total]
        w = store.open_writer("k")
        for at in range(0, total, 3 * MiB + 7):  # writes that straddle the part boundaries
            w.write(data[at:at + 3 * MiB + 7])
        w.commit()
        sent = sorted(proxy.requests("PUT", "partNumber="),
                      key=lambda s: int(s.query.split("partNumber=")[1].split("&")[0]))
        sizes = [int(s.headers.get("x-amz-decoded-content-length") or s.headers["content-length"]) for s in sent]
        expected = _expected_parts(total, 5 * MiB)
        assert sizes == expected
        assert all(s >= upload.MIN_PART_SIZE for s in sizes[:-1])
        puts = [p for p in proxy.requests("PUT") if "partNumber=" not in p.query]
        assert len(puts) == (0 if expected else 1)  # one PutObject exactly when no part was sent
        assert hashlib.sha256(store.get("k")).digest() == hashlib.sha256(data).digest()
        assert store.incomplete_uploads() == []
