"""S3 Object Lock for :class:`dr.repository.s3.S3Store` (docs/FORMAT.md, "Object Lock").

Kept apart from the S3 adapter's transfer code. It reaches S3 only through the store's client and its error
translation (``store._errors``), so botocore stays imported by ``dr.repository.s3`` alone; an S3 error code
is read from the translated error's cause.

- :func:`lock_enabled`: GetObjectLockConfiguration, once per store (one command). A bucket without Object
  Lock answers ``ObjectLockConfigurationNotFoundError``; credentials that may not ask get a warning naming
  ``s3:GetBucketObjectLockConfiguration`` and the bucket is used as one without Object Lock.
- :func:`set_retention`: PutObjectRetention on the current version, never shortening (S3 refuses that
  without a bypass, and jdr never asks for one).
- :func:`purge`: every version of a key and its delete markers, each deleted by VersionId, so that a prune
  on a versioned bucket frees the space instead of only adding a delete marker.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from dr.errors import JdrError
from dr.repository.store import LOCK_MODES, Retention

if TYPE_CHECKING:
    from dr.repository.s3 import S3Store

log = logging.getLogger(__name__)

_NO_LOCK = {"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"}


def s3_code(e: BaseException) -> str:
    """The S3 error code behind a translated error (``AccessDenied``, …), or ``""``."""
    cause = e.__cause__
    response: Any = getattr(cause, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def lock_args(retention: Retention | None) -> dict[str, Any]:
    """The PutObject / CreateMultipartUpload arguments that lock the new object."""
    if retention is None:
        return {}
    return {"ObjectLockMode": retention.mode, "ObjectLockRetainUntilDate": retention.until}


def retention_of(head: dict[str, Any]) -> Retention | None:
    """The retention a HeadObject answer reports (None when the object is not locked)."""
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    if mode in LOCK_MODES and until is not None:
        return Retention(mode, until)
    return None


def lock_enabled(store: S3Store) -> bool:
    """Whether the bucket has Object Lock enabled (see the module docstring)."""
    try:
        with store._errors("read the Object Lock configuration of"):
            answer = store.client.get_object_lock_configuration(Bucket=store.bucket)
    except JdrError as e:
        code = s3_code(e)
        if code in _NO_LOCK:
            return False
        if code in ("AccessDenied", "403"):
            # Credentials made for a bucket without Object Lock often lack this permission (a SeaweedFS
            # identity with Read/Write/List does): failing every command for it would punish them. So
            # the bucket is used as one without Object Lock, loudly.
            log.warning("cannot read the Object Lock configuration of bucket %r (%s): objects are written "
                        "without retention; grant s3:GetBucketObjectLockConfiguration if the bucket has "
                        "Object Lock enabled", store.bucket, e)
            return False
        raise
    config = answer.get("ObjectLockConfiguration") or {}
    return config.get("ObjectLockEnabled") == "Enabled"


def set_retention(store: S3Store, key: str, retention: Retention) -> None:
    """PutObjectRetention on the current version of ``key`` (see the module docstring)."""
    with store._errors("extend the retention of", key):
        store.client.put_object_retention(
            Bucket=store.bucket, Key=store._key(key),
            Retention={"Mode": retention.mode, "RetainUntilDate": retention.until})


def purge(store: S3Store, key: str) -> int:
    """Delete every version and delete marker of ``key``; returns how many were deleted."""
    s3_key = store._key(key)
    versions: list[str] = []
    paginator = store.client.get_paginator("list_object_versions")
    with store._errors("list the versions of", key):
        for page in paginator.paginate(Bucket=store.bucket, Prefix=s3_key):
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if v.get("Key") == s3_key:  # the prefix also matches longer keys
                    versions.append(str(v.get("VersionId") or "null"))
    for version in versions:
        with store._errors("delete a version of", key):
            store.client.delete_object(Bucket=store.bucket, Key=s3_key, VersionId=version)
    return len(versions)
