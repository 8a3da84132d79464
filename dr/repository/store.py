"""The storage port: a flat namespace of immutable objects addressed by ``/``-separated keys.

Every repository backend (``file``, ``s3``) implements :class:`Store`; the same contract suite
(tests/contract/test_store_contract.py) runs against each of them. Backends translate their SDK's
errors into :mod:`dr.errors` (``ObjectNotFound``, ``TransientStorageError``, ``RepositoryError``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

from dr.policy.object_lock import LOCK_MODES, LockMode

__all__ = ["LOCK_MODES", "LockMode", "ObjectInfo", "ObjectWriter", "Retention", "Store", "check_key"]


@dataclass(frozen=True)
class Retention:
    """An S3 Object Lock retention: the object (this version of it) cannot be deleted or overwritten
    before ``until`` (a real, store-side time). GOVERNANCE can be lifted by a principal holding
    ``s3:BypassGovernanceRetention``; COMPLIANCE by nobody (docs/FORMAT.md, "Object Lock")."""

    mode: LockMode
    until: datetime


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None = None
    #: The object's Object Lock retention, where the store has one and ``stat`` read it (never ``list``).
    retention: Retention | None = None


class ObjectWriter(Protocol):
    """A streaming upload. Nothing is visible under the key until :meth:`commit` returns."""

    def write(self, data: bytes) -> int:
        """Append bytes; memory use stays bounded whatever the total size. Returns len(data)."""
        ...

    def commit(self) -> None:
        """Make the object visible under its key, atomically, with exactly the bytes written."""
        ...

    def abort(self) -> None:
        """Discard everything written. Safe to call after a failed write or commit, and twice."""
        ...


class Store(Protocol):
    """A place to keep objects. Keys are relative, ``/``-separated, without ``..`` or a leading ``/``."""

    url: str

    def put(self, key: str, data: bytes, retention: Retention | None = None) -> None:
        """Write a whole (small) object atomically, replacing any object under the key; with
        ``retention``, locked until then (RepositoryError where the store cannot lock)."""
        ...

    def open_writer(self, key: str, retention: Retention | None = None) -> ObjectWriter:
        """Start a streaming upload to ``key`` (see :class:`ObjectWriter`), locked as for :meth:`put`."""
        ...

    def get(self, key: str) -> bytes:
        """Read a whole object. Raises ObjectNotFound if there is no object under ``key``."""
        ...

    def open_reader(self, key: str) -> BinaryIO:
        """Open an object for streaming reads. Raises ObjectNotFound if there is none."""
        ...

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes ``start`` to ``start + length`` of an object, in one request (a ``pread`` on file://, a
        Range GET on S3); fewer only where the object ends first (none from ``start`` at or past its
        end). Raises ObjectNotFound if there is no object under ``key``; ValueError for a negative
        ``start`` or ``length``. Callers bound ``length``: the bytes are returned in memory."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Size (and time, where known) of an object. Raises ObjectNotFound if there is none."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every committed object whose key starts with ``prefix``, in key order; paginates."""
        ...

    def delete(self, key: str) -> None:
        """Remove an object. Deleting a missing object is not an error. In a versioned store (S3 with
        Object Lock) this only hides the object behind a delete marker: :meth:`purge` frees the space."""
        ...

    def object_lock_enabled(self) -> bool:
        """Whether the store locks objects (S3 Object Lock on the bucket). Asked once, then remembered."""
        ...

    def set_retention(self, key: str, retention: Retention) -> None:
        """Lock the current version of ``key`` until ``retention.until`` (extend only: a store refuses to
        shorten a lock). ObjectNotFound if there is none; RepositoryError where the store cannot lock."""
        ...

    def purge(self, key: str) -> int:
        """Delete every version of ``key`` (and its delete markers), so its space is freed; returns the
        number of versions deleted. A version still locked is refused by the store (RepositoryError)."""
        ...

    def cleanup_incomplete(self, older_than: datetime) -> int:
        """Discard uploads started before ``older_than`` and never committed; returns how many."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid store key, else raise ValueError naming it."""
    if not key or key.startswith("/") or "\\" in key or "\0" in key:
        raise ValueError(f"invalid repository key: {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid repository key: {key!r}")
    return key
