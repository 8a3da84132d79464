"""The catalog's plain values (rows as ``jdr list`` shows them, the run-set digest), without SQLAlchemy:
the SQLite read path (:mod:`dr.catalog.lite`) uses them without importing it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MOD = 2**256
USABLE = ("complete", "partial")


def to_us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def run_set_digest(run_ids: Iterable[str]) -> str:
    """``<count>:<hex>`` for a set of run ids, independent of order: the sum of their SHA-256 values modulo
    2**256. Adding or removing one id updates it in O(1)."""
    count, total = 0, 0
    for run_id in set(run_ids):
        count += 1
        total = (total + id_hash(run_id)) % MOD
    return make_digest(count, total)


def id_hash(run_id: str) -> int:
    return int.from_bytes(hashlib.sha256(run_id.encode("utf-8")).digest(), "big")


def make_digest(count: int, total: int) -> str:
    return f"{count}:{total:064x}"


def parse_digest(text: str) -> tuple[int, int]:
    count, _, total = text.partition(":")
    return int(count), int(total, 16)


@dataclass(frozen=True)
class RunRow:
    """A run as ``jdr list`` shows it."""

    id: str
    time: datetime  # when the run started
    finished: datetime
    status: str
    users: int
    volumes: int
    failed: int
    bytes: int  # file content read
    stored: int  # bytes of artifacts written by this run (reused ones not counted)
    files: int
    hub: bool
    jdr_version: str
    user_status: str | None = None  # the item status of the user asked for, in a user-filtered listing

    def to_dict(self) -> dict[str, Any]:
        # Shallow, not dataclasses.asdict: that deep-copies every datetime, and was most of the time of
        # `jdr list --json` over 1,000 runs.
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["time"] = self.time.isoformat().replace("+00:00", "Z")
        d["finished"] = self.finished.isoformat().replace("+00:00", "Z")
        if self.user_status is None:
            del d["user_status"]
        return d


@dataclass(frozen=True)
class SyncResult:
    added: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)
