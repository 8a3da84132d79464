"""``s3://bucket/prefix`` repositories on any S3-compatible endpoint (AWS, SeaweedFS, MinIO, Ceph …).

boto3's own configuration chain decides endpoint (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, config
files), region and credentials; an explicit ``endpoint_url`` overrides it. Requests are retried by botocore
(``standard`` mode); whatever still fails is translated into :mod:`dr.errors`.

Streaming writes (:mod:`dr.repository.s3_upload`) are multipart uploads whose parts are sent in the
background while the next is filled; an object smaller than one part is sent with a single ``PutObject`` at
commit. Nothing is visible under the key before commit, and an upload abandoned by a killed process is found
and aborted by :meth:`S3Store.cleanup_incomplete`.
"""

from __future__ import annotations

import builtins
import http.client
import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, cast
from urllib.parse import urlparse

import boto3
import botocore.session
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from dr.errors import (
    ObjectNotFound,
    PermissionDeniedError,
    RepositoryError,
    TransientStorageError,
    UnreadableObjectError,
)
from dr.repository import readahead, s3_lock
from dr.repository.s3_upload import (
    DEFAULT_PART_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    PARTS_IN_FLIGHT,
    S3Writer,
    part_size,
)
from dr.repository.store import ObjectInfo, Retention, check_key

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["DEFAULT_PART_SIZE", "MAX_PARTS", "MAX_PART_SIZE", "MIN_PART_SIZE", "PARTS_IN_FLIGHT", "S3Reader",
           "S3Store", "S3Writer", "part_size"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024

#: The work a streaming read may spend on one object when its body keeps breaking (S3Reader). A break
#: resumes with a Range GET from the current offset. The budget is not renewed by every partial read: a
#: server that sends a little and breaks again (SeaweedFS on a chunk that fails its CRC sends 256 KiB, then
#: stalls 13 s and cuts the body) would otherwise be resumed until the end of the object, minutes later.
#: - READ_RESUMES: failures in a row without PROGRESS_RESET bytes read between them;
#: - READ_STREAK_DEADLINE: seconds such a run of failures may last, from its first failure;
#: - READ_MAX_RESUMES: resumes of one object in all;
#: - SAME_PLACE_LIMIT: body breaks or server errors (500) within SAME_PLACE bytes of the previous one,
#:   in a row, after which the object is taken as damaged in the store (UnreadableObjectError);
#: - READ_RESUME_BACKOFF: the first pause before resuming (doubling with each failure in a row, at most 5 s).
READ_RESUMES = 5
READ_STREAK_DEADLINE = 20.0
READ_MAX_RESUMES = 50
PROGRESS_RESET = 8 * MiB
SAME_PLACE = 1 * MiB
SAME_PLACE_LIMIT = 2
READ_RESUME_BACKOFF = 0.2

#: Objects larger than this are read ahead by a thread (open_reader); smaller ones are not worth one.
READ_AHEAD_FROM = 1 * MiB

_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                    "InvalidClientTokenId", "AuthorizationHeaderMalformed"}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled", "AccountProblem"}
#: The S3 permission (IAM action) each of this module's requests needs, by the ``action`` word it uses.
_PERMISSIONS = {
    "write": "s3:PutObject", "upload": "s3:PutObject", "complete the upload of": "s3:PutObject",
    "read": "s3:GetObject", "stat": "s3:GetObject", "check the upload of": "s3:GetObject",
    "list": "s3:ListBucket", "delete": "s3:DeleteObject", "abort the upload of": "s3:AbortMultipartUpload",
    "list incomplete uploads in": "s3:ListBucketMultipartUploads", "create bucket for": "s3:CreateBucket",
    "delete a version of": "s3:DeleteObjectVersion", "extend the retention of": "s3:PutObjectRetention",
    "list the versions of": "s3:ListBucketVersions",
    "read the Object Lock configuration of": "s3:GetBucketObjectLockConfiguration",
}
_BUCKET_PERMISSIONS = {"s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:ListBucketVersions",
                       "s3:GetBucketObjectLockConfiguration", "s3:CreateBucket"}
_TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
              "InternalError", "ServiceUnavailable", "503", "500", "502", "504"}
# Errors raised while a response body streams in: the connection broke or stalled mid-read.
_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    ResponseStreamingError, IncompleteReadError, HTTPClientError, BotoConnectionError,
    urllib3.exceptions.HTTPError, http.client.HTTPException, OSError,
)
_RESUMABLE: tuple[type[BaseException], ...] = (*_STREAM_ERRORS, TransientStorageError)


_shared_loader: Any = None


def _botocore_session() -> botocore.session.Session:
    """A new botocore session that shares one data loader with every other store of this process.

    The loader caches the parsed service model and endpoint rules (megabytes of JSON); a fresh session
    parses them again, which cost 0.5-2 s per store (a worker makes stores job after job; the season test
    hundreds). Credentials and configuration stay per session."""
    global _shared_loader
    session = botocore.session.Session()
    if _shared_loader is None:
        _shared_loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _shared_loader)
    return session


class S3Store:
    """A :class:`dr.repository.store.Store` in an S3 bucket, under an optional key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        """Connect lazily (no request is made here) to ``bucket``; keys are stored under ``prefix/``.

        ``endpoint_url``, ``region`` and the keys override boto3's configuration chain; leave them unset
        to use ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``AWS_*`` credentials, profiles, IMDS …
        ``max_attempts`` counts the first try (botocore standard retry mode).
        """
        if not bucket:
            raise ValueError("an S3 repository needs a bucket name")
        if part_size < MIN_PART_SIZE or part_size > MAX_PART_SIZE:
            raise ValueError(f"part size must be between 5 MiB and 5 GiB, not {part_size}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.part_size = part_size
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region,
            botocore_session=_botocore_session(),
        )

        def make_client(path_style: bool, attempts: int = max_attempts) -> S3Client:
            config = Config(
                # "total_max_attempts" counts the first try; botocore's "max_attempts" key counts retries.
                retries={"mode": "standard", "total_max_attempts": attempts},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                s3={"addressing_style": "path"} if path_style else None,
            )
            return session.client("s3", endpoint_url=endpoint_url, config=config)

        client = make_client(path_style=False)
        self.endpoint = client.meta.endpoint_url
        # Endpoints other than AWS (SeaweedFS, MinIO, Ceph) rarely resolve bucket.host names: use
        # path-style addressing for them. boto3 resolves the endpoint itself (arguments, environment,
        # config files), so look at what it chose rather than repeating its rules.
        host = urlparse(self.endpoint).hostname or ""
        path_style = not (host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn"))
        if path_style:
            client = make_client(path_style=True)
        self.client = client
        # Resumed reads retry in S3Reader, within its budget: botocore's own retries (up to ~30 s of
        # back-off per request) would multiply it.
        self.resume_client = make_client(path_style=path_style, attempts=1)
        self._bucket_checked = False
        self._lock_enabled: bool | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3Store:
        """``s3://bucket[/prefix]`` → S3Store; keyword arguments go to the constructor."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        if parsed.query or parsed.fragment:
            raise ValueError(f"an s3:// repository URL takes no query or fragment: {url!r}")
        return cls(parsed.netloc, parsed.path, **kwargs)

    # -- keys ---------------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _base(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    # -- errors -------------------------------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Translate botocore errors raised inside the block into dr.errors (``raise … from e``)."""
        try:
            yield
        except ClientError as e:
            self._raise_client_error(e, action, key)
        except (NoCredentialsError, PartialCredentialsError) as e:
            raise RepositoryError(
                f"no usable S3 credentials to {action} {self.url}: {e}",
                hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance/pod role",
            ) from e
        except (BotoConnectionError, HTTPClientError) as e:
            # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError …
            # botocore has already retried these.
            raise TransientStorageError(
                f"cannot reach S3 endpoint {self.endpoint} to {action} {self._what(key)}: {e}",
                hint="check the endpoint URL (AWS_ENDPOINT_URL) and the network, then run again",
            ) from e
        except BotoCoreError as e:
            raise RepositoryError(f"cannot {action} {self._what(key)}: {e}") from e

    def _what(self, key: str | None) -> str:
        return f"{key!r} in {self.url}" if key is not None else self.url

    def _raise_client_error(self, e: ClientError, action: str, key: str | None) -> NoReturn:
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        message = err.get("Message") or code
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        what = self._what(key)
        if code == "NoSuchBucket" or (code in _NOT_FOUND and not self._bucket_exists()):
            raise RepositoryError(
                f"S3 bucket {self.bucket!r} does not exist at {self.endpoint}",
                hint=f"create the bucket {self.bucket!r} or fix the repository URL {self.url}",
            ) from e
        if code in _NOT_FOUND and key is not None:
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from e
        if code in _BAD_CREDENTIALS:
            raise RepositoryError(
                f"S3 rejected the credentials to {action} {what} ({code}: {message})",
                hint="check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the profile) for this endpoint",
            ) from e
        if code in _DENIED:
            raise self._denied(action, key, f"{code}: {message}") from e
        if code in _TRANSIENT or status >= 500 or status == 429:
            raise TransientStorageError(
                f"S3 failed to {action} {what} after retries ({code or status}: {message})",
                hint="the storage service is unavailable or throttling; run again later",
            ) from e
        raise RepositoryError(f"S3 failed to {action} {what} ({code or status}: {message})") from e

    def _denied(self, action: str, key: str | None, said: str) -> PermissionDeniedError:
        """The error for a refused request, naming the S3 permission it needs (docs/CREDENTIALS.md)."""
        permission = _PERMISSIONS.get(action, "s3:" + action.title().replace(" ", ""))
        resource = f"arn:aws:s3:::{self.bucket}"
        if key is not None and permission not in _BUCKET_PERMISSIONS:
            resource += "/" + self._key(key)
        hint = (f"grant the repository's credentials {permission} on {resource}, as the role that runs "
                "this command needs: see docs/CREDENTIALS.md")
        if permission == "s3:DeleteObject":
            hint = ("prune needs the prune role's credentials (the backup role may delete only under "
                    "locks/): see docs/CREDENTIALS.md and cronjobs/README.md")
        return PermissionDeniedError(
            f"the repository's credentials may not {action} {self._what(key)} ({permission} on {resource}; "
            f"S3 said {said})", permission=permission, hint=hint)

    def _bucket_exists(self) -> bool:
        """Whether the bucket exists; a HEAD answers 404 for a missing bucket and a missing key alike."""
        if self._bucket_checked:
            return True
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchBucket", "404", "NotFound"):
                return False
            # Denied (no s3:ListBucket) is no proof that the bucket is missing; do not ask again.
            self._bucket_checked = code in _DENIED
            return True
        except BotoCoreError:
            return True
        self._bucket_checked = True
        return True

    # -- the Store port -----------------------------------------------------------------------------

    def put(self, key: str, data: bytes, retention: Retention | None = None) -> None:
        k = self._key(key)
        with self._errors("write", key):
            self.client.put_object(Bucket=self.bucket, Key=k, Body=data, **s3_lock.lock_args(retention))

    def open_writer(self, key: str, retention: Retention | None = None) -> S3Writer:
        return S3Writer(self, key, self._key(key), retention)

    def get(self, key: str) -> bytes:
        with S3Reader(self, key, self._key(key)) as f:
            return f.readall()

    def open_reader(self, key: str) -> BinaryIO:
        """A streaming read; an object larger than one read-ahead chunk is read ahead by a thread
        (:mod:`dr.repository.readahead`), so the network works while the caller does."""
        raw = S3Reader(self, key, self._key(key))
        if raw.size <= READ_AHEAD_FROM:
            return io.BufferedReader(raw, buffer_size=1 * MiB)
        return io.BufferedReader(readahead.ReadAhead(raw, name="jdr-s3-read"), buffer_size=1 * MiB)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"invalid range {start}+{length} of {key!r}")
        if length == 0:
            self.stat(key)  # ObjectNotFound all the same
            return b""
        k = self._key(key)
        try:
            with self._errors("read", key):
                resp = self.client.get_object(Bucket=self.bucket, Key=k,
                                              Range=f"bytes={start}-{start + length - 1}")
                data: bytes = resp["Body"].read()
        except RepositoryError as e:
            cause = e.__cause__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in (
                "InvalidRange", "416"
            ):
                return b""  # start at or past the end
            raise
        return data[:length]

    def stat(self, key: str) -> ObjectInfo:
        k = self._key(key)
        with self._errors("stat", key):
            head = self.client.head_object(Bucket=self.bucket, Key=k)
        return ObjectInfo(key, int(head["ContentLength"]), head.get("LastModified"),
                          s3_lock.retention_of(cast(dict[str, Any], head)))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if prefix.startswith("/"):
            raise ValueError(f"invalid repository key prefix: {prefix!r}")
        base = self._base()
        found: list[ObjectInfo] = []
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors("list", prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(base):]
                    found.append(ObjectInfo(key, int(obj["Size"]), obj.get("LastModified")))
        # S3 promises UTF-8 binary key order, but SeaweedFS (4.x) lists directory by directory ("a/b"
        # before "a-b"). Sort (code point order equals UTF-8 byte order) rather than trust the server.
        found.sort(key=lambda o: o.key)
        yield from found

    def delete(self, key: str) -> None:
        k = self._key(key)
        with self._errors("delete", key):
            # S3 answers 204 for a missing key too: deleting is idempotent.
            self.client.delete_object(Bucket=self.bucket, Key=k)

    def object_lock_enabled(self) -> bool:
        if self._lock_enabled is None:
            self._lock_enabled = s3_lock.lock_enabled(self)
        return self._lock_enabled

    def set_retention(self, key: str, retention: Retention) -> None:
        s3_lock.set_retention(self, key, retention)

    def purge(self, key: str) -> int:
        return s3_lock.purge(self, key)

    def cleanup_incomplete(self, older_than: datetime) -> int:
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        with self._errors("list incomplete uploads in"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._base()):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < older_than:
                        self._abort_upload(upload["Key"], upload["UploadId"])
                        aborted += 1
        return aborted

    def incomplete_uploads(self) -> builtins.list[tuple[str, str]]:
        """(key, upload id) of every multipart upload under the prefix not yet completed or aborted."""
        found: builtins.list[tuple[str, str]] = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        with self._errors("list incomplete uploads in"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._base()):
                found.extend((u["Key"][len(self._base()):], u["UploadId"]) for u in page.get("Uploads", []))
        return found

    def _abort_upload(self, s3_key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=s3_key, UploadId=upload_id)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return  # already completed or aborted
            raise

    def create_bucket_if_missing(self) -> None:
        """Create the bucket unless it exists. For tests and the demo: jdr never creates buckets itself."""
        with self._errors("create bucket for"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as e:
                if str(e.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
            region = self.client.meta.region_name
            if region and region != "us-east-1":
                self.client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                )
            else:
                self.client.create_bucket(Bucket=self.bucket)

    def close(self) -> None:
        self.client.close()
        self.resume_client.close()


class S3Reader(io.RawIOBase):
    """A streaming read of one object; a body broken mid-way resumes with a Range GET, within a budget.

    The budget (module constants) bounds the work per object whatever its size: failures in a row
    without real progress, how long they may last, resumes in all, and breaks at one place. Running out
    raises TransientStorageError (the connection or the store keeps failing: try again later), or
    UnreadableObjectError when the store fails at the same place every time (the object is damaged there).
    Reaching the end does not check the content: :class:`dr.repository.artifacts.VerifiedReader` does, and
    a mismatch is final (never re-read).
    """

    def __init__(self, store: S3Store, key: str, s3_key: str,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._s3_key = s3_key
        self._sleep = sleep
        self._clock = clock
        self._offset = 0
        self._body: Any = None
        self._etag: str | None = None
        self._size: int | None = None
        # The budget's state (see the class docstring).
        self._resumes = 0
        self._streak = 0
        self._streak_started = 0.0
        self._since_failure = 0  # bytes read since the last failure
        self._fail_offset = -1  # offset of the last body break or server error
        self._same_place = 0
        self._open()  # raises ObjectNotFound now rather than at the first read

    def _open(self) -> None:
        store = self._store
        kwargs: dict[str, Any] = {"Bucket": store.bucket, "Key": self._s3_key}
        if self._offset:
            kwargs["Range"] = f"bytes={self._offset}-"
        if self._etag:
            kwargs["IfMatch"] = self._etag  # the object must not change between resumed reads
        client = store.resume_client if self._resumes else store.client
        try:
            with store._errors("read", self._key):
                resp = client.get_object(**kwargs)
        except RepositoryError as e:
            cause = e.__cause__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in (
                "PreconditionFailed", "412"
            ):
                raise RepositoryError(f"{self._key!r} in {store.url} changed while it was read") from cause
            raise
        self._body = resp["Body"]
        if self._etag is None:
            self._etag = resp.get("ETag")
            self._size = int(resp["ContentLength"])

    @property
    def size(self) -> int:
        """The object's size, as the first response said."""
        return self._size or 0

    def readable(self) -> bool:
        return True

    def readall(self) -> bytes:
        # RawIOBase.readall reads 8 KiB at a time; whole-object reads (Store.get) deserve bigger reads.
        out = bytearray()
        buf = bytearray(MiB)
        while n := self.readinto(buf):
            out += memoryview(buf)[:n]
        return bytes(out)

    def readinto(self, b: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed S3 reader")
        view = memoryview(b).cast("B")
        if not len(view) or self._offset == self._size:
            return 0
        while True:
            opened = self._body is not None
            try:
                if self._body is None:
                    self._open()
                    opened = True
                chunk: bytes = self._body.read(len(view))
                if not chunk:
                    raise IncompleteReadError(actual_bytes=self._offset, expected_bytes=self._size or 0)
            except _RESUMABLE as e:
                # TransientStorageError: reopening failed (the first open after botocore's retries).
                self._close_body()
                self._failed(e, at_the_server=opened or _server_error(e))
                continue
            n = len(chunk)
            view[:n] = chunk
            self._offset += n
            self._since_failure += n
            if self._streak and self._since_failure >= PROGRESS_RESET:
                self._streak, self._same_place = 0, 0  # real progress: a new run of failures may start
            return n

    def _failed(self, e: BaseException, at_the_server: bool) -> None:
        """Count one failure against the budget; raise when it is spent, else pause before resuming.

        ``at_the_server``: the server answered and then broke the body, or answered with an error (500),
        as opposed to a connection that could not be made."""
        now = self._clock()
        self._resumes += 1
        self._streak += 1
        if self._streak == 1:
            self._streak_started = now
        if at_the_server:
            near = self._fail_offset >= 0 and 0 <= self._offset - self._fail_offset < SAME_PLACE
            self._same_place = self._same_place + 1 if near else 1
            self._fail_offset = self._offset
        self._since_failure = 0
        where = f"reading {self._key!r} from {self._store.url}"
        if self._same_place >= SAME_PLACE_LIMIT:
            raise UnreadableObjectError(
                f"{where} failed {self._same_place} times in a row at byte {self._offset} "
                f"(of {self._size}): the store cannot deliver this part of the object ({e})",
                hint="the object is probably damaged in the store: `jdr verify` records it, and the next "
                     "backup reads the volume again; restore from another run meanwhile") from e
        spent = ""
        if self._streak > READ_RESUMES:
            spent = f"after {READ_RESUMES} resumed attempts without progress"
        elif now - self._streak_started > READ_STREAK_DEADLINE:
            spent = f"for {now - self._streak_started:.0f} s of failing reads"
        elif self._resumes > READ_MAX_RESUMES:
            spent = f"after {READ_MAX_RESUMES} resumed reads"
        if spent:
            raise TransientStorageError(
                f"{where} failed at byte {self._offset} {spent}: {e}",
                hint="the connection to the storage keeps breaking; run again later") from e
        log.warning("read of %s broke at byte %d (%s); resuming", self._key, self._offset, e)
        self._sleep(min(READ_RESUME_BACKOFF * 2 ** (self._streak - 1), 5.0))

    def _close_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            try:
                body.close()
            except Exception:  # noqa: S110 - the connection is being thrown away anyway
                pass

    def close(self) -> None:
        if not self.closed:
            self._close_body()
        super().close()


def _server_error(e: BaseException) -> bool:
    """Whether ``e`` is the server answering with an internal error (not throttling, not the network)."""
    cause = e.__cause__
    if isinstance(cause, ClientError):
        status = int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return status in (500, 502, 504) or cause.response.get("Error", {}).get("Code") == "InternalError"
    return False
