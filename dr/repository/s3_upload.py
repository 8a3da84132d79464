"""Streaming uploads to S3 (:class:`S3Writer`): multipart uploads whose parts are sent in the background.

The writer fills one part while up to :data:`PARTS_IN_FLIGHT` earlier parts are uploaded by worker
threads, so the backup's compression (the caller of ``write``) does not wait for every PUT. Memory is
bounded by (1 + PARTS_IN_FLIGHT) parts. The contract of :class:`dr.repository.store.ObjectWriter` is kept:
nothing is visible under the key before :meth:`S3Writer.commit` returns, and a failed or aborted write
aborts the multipart upload. A part that fails in the background (after botocore's retries) is not lost:
its error is raised by the next ``write``, ``flush`` or ``commit``, which aborts the upload first.

An object smaller than one part is sent with a single ``PutObject`` at commit.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from dr.errors import RepositoryError
from dr.repository import s3_lock
from dr.repository.store import Retention

if TYPE_CHECKING:
    from dr.repository.s3 import S3Store

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: First part size of a multipart upload; S3's minimum for every part but the last is 5 MiB.
DEFAULT_PART_SIZE = 8 * MiB
MIN_PART_SIZE = 5 * MiB
#: The part size doubles every this many parts, so that an object of up to 5 TiB needs fewer than
#: S3's 10,000 parts (8 MiB x 1000 x (1 + 2 + … + 512) ≈ 8 TiB) while small objects keep small parts.
PARTS_PER_SIZE_STEP = 1000
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * 1024 * MiB
#: Parts uploaded at once by one writer while the next is filled. One already takes the PUTs off the
#: compressing thread (benchmarks/RESULTS.md, "Session 6 — helper s3overlap": time blocked in the writer
#: 6-7 s -> 1.3-1.9 s with 1 or 2); each more adds a part's memory per volume archived at once, and the
#: backup's peak RSS is held to restic's.
PARTS_IN_FLIGHT = 1


def part_size(first: int, parts_done: int) -> int:
    """Size of the part after ``parts_done`` parts: ``first``, doubled every PARTS_PER_SIZE_STEP parts."""
    return min(first << (parts_done // PARTS_PER_SIZE_STEP), MAX_PART_SIZE)


class S3Writer:
    """A streaming upload (:class:`dr.repository.store.ObjectWriter`) holding at most 1 + PARTS_IN_FLIGHT
    parts in memory: the one being filled and those being uploaded."""

    def __init__(self, store: S3Store, key: str, s3_key: str, retention: Retention | None = None) -> None:
        self._store = store
        self._key = key
        self._s3_key = s3_key
        self._lock = s3_lock.lock_args(retention)
        self._part_size = part_size(store.part_size, 0)
        # The part being filled. It grows as bytes come: allocated whole up front, every writer (a small
        # index too) would touch a part's worth of memory (calloc zeroes recycled heap memory).
        self._buf = bytearray()
        self._sent = 0  # parts handed to the workers
        self._parts: list[dict[str, Any]] = []  # done, in order: what CompleteMultipartUpload lists
        self._in_flight: deque[Future[dict[str, Any]]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._upload_id: str | None = None
        self._written = 0
        self._closed = False

    @property
    def upload_id(self) -> str | None:
        """The multipart upload's id once the first part has been sent (None for a small object)."""
        return self._upload_id

    def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError("write after commit or abort")
        self._reap(wait=False)
        view = memoryview(data).cast("B")
        n = len(view)
        while view:
            room = self._part_size - len(self._buf)
            self._buf += view[:room]
            view = view[room:]
            if len(self._buf) >= self._part_size:
                self._send_part()
        self._written += n
        return n

    def flush(self) -> None:
        """Wait until every part sent so far is stored (or raise its error, the upload aborted). The
        bytes of a part not yet full stay buffered: S3 takes no part under 5 MiB but the last."""
        if self._closed:
            raise ValueError("flush after commit or abort")
        while self._in_flight:
            self._reap(wait=True)

    def _send_part(self) -> None:
        """Hand the full buffer to a worker as the next part (waiting for a slot), start a new buffer."""
        store = self._store
        try:
            if self._upload_id is None:
                # In the caller's thread: a missing bucket or refused credentials surface right here.
                with store._errors("upload", self._key):
                    resp = store.client.create_multipart_upload(Bucket=store.bucket, Key=self._s3_key,
                                                                **self._lock)
                self._upload_id = resp["UploadId"]
                self._pool = ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT,
                                                thread_name_prefix="jdr-s3-upload")
            number = self._sent + 1
            if number > MAX_PARTS:
                raise RepositoryError(f"object {self._key!r} needs more than {MAX_PARTS} parts")
            while len(self._in_flight) >= PARTS_IN_FLIGHT:
                self._reap(wait=True)
            assert self._pool is not None
            self._in_flight.append(self._pool.submit(self._upload_part, number, self._buf))
        except BaseException:
            self.abort()
            raise
        self._sent = number
        self._part_size = part_size(store.part_size, self._sent)
        # A fresh buffer: the old one is the worker's request body until its part is stored.
        self._buf = bytearray()

    def _upload_part(self, number: int, body: bytearray) -> dict[str, Any]:
        """In a worker thread: store one part (botocore retries it); errors are translated to dr.errors."""
        store = self._store
        with store._errors("upload", self._key):
            part = store.client.upload_part(
                Bucket=store.bucket, Key=self._s3_key, UploadId=cast(str, self._upload_id),
                PartNumber=number, Body=_body(body),
            )
        return {"PartNumber": number, "ETag": part["ETag"]}

    def _reap(self, *, wait: bool) -> None:
        """Record the parts stored, oldest first (waiting for the oldest if ``wait``); a failed part
        aborts the upload and raises its error."""
        while self._in_flight and (wait or self._in_flight[0].done()):
            future = self._in_flight.popleft()
            try:
                self._parts.append(future.result())
            except BaseException:
                self.abort()
                raise
            wait = False

    def commit(self) -> None:
        if self._closed:
            raise ValueError("commit after commit or abort")
        store = self._store
        try:
            if self._upload_id is None:
                with store._errors("write", self._key):
                    store.client.put_object(Bucket=store.bucket, Key=self._s3_key, Body=_body(self._buf),
                                            **self._lock)
            else:
                if self._buf:
                    self._send_part()
                self.flush()
                with store._errors("complete the upload of", self._key):
                    store.client.complete_multipart_upload(
                        Bucket=store.bucket, Key=self._s3_key, UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts},  # type: ignore[typeddict-item]
                    )
                self._upload_id = None
                with store._errors("check the upload of", self._key):
                    size = store.client.head_object(Bucket=store.bucket, Key=self._s3_key)["ContentLength"]
                if size != self._written:
                    raise RepositoryError(
                        f"S3 stored {size} bytes for {self._key!r} in {store.url}, "
                        f"but {self._written} were written"
                    )
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._release()

    def abort(self) -> None:
        """Discard the upload. Never raises: if S3 cannot be told (it is down, say), the multipart
        upload stays behind, invisible, until :meth:`S3Store.cleanup_incomplete` removes it.

        Parts still uploading are waited for first (their own errors are dropped: the upload is being
        discarded): S3 may store a part that arrives after the abort, which would leave it behind."""
        self._closed = True
        in_flight, self._in_flight = self._in_flight, deque()
        for future in in_flight:
            try:
                future.result()
            except Exception as e:  # discarded with the upload
                log.debug("part of %s failed while its upload is aborted: %s", self._key, e)
        self._release()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            store = self._store
            try:
                with store._errors("abort the upload of", self._key):
                    store._abort_upload(self._s3_key, upload_id)
            except RepositoryError as e:
                log.warning("could not abort the upload of %s (left to cleanup_incomplete): %s", self._key, e)

    def _release(self) -> None:
        self._buf = bytearray()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)  # its parts are done (commit and abort waited for them)


def _body(buf: bytearray) -> bytes:
    """The part buffer as a request body, without a copy: botocore sends any bytes-like object, and
    copying a part would double the writer's memory (the stubs only name ``bytes``)."""
    return cast(bytes, buf)
