"""The catalog's plain values (rows as ``jdr list`` shows them, the rows that index a manifest, the run-set
digest), without SQLAlchemy: the SQLite path (:mod:`dr.catalog.lite`) uses them without importing it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dr.model import Manifest

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


def canonical(m: Manifest) -> str:
    """The manifest as the catalog stores it (``jdr_runs.manifest``)."""
    return json.dumps(m.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


Row = dict[str, Any]


def manifest_rows(m: Manifest) -> tuple[Row, list[Row], list[Row]]:
    """The rows that index one manifest: its ``jdr_runs`` row, its ``jdr_items`` and ``jdr_artifacts`` rows
    (keys are the columns of :mod:`dr.catalog.tables`). Both writers (SQLAlchemy and plain sqlite3) use it."""
    items: list[Row] = []
    arts: dict[str, Row] = {}

    def add_artifacts(item_key: str, found: Sequence[Any]) -> None:
        for a in found:
            arts.setdefault(a.key, {"run_id": m.run, "key": a.key, "item": item_key, "size": a.size,
                                    "sha256": a.sha256, "encoding": a.encoding, "writer": a.run or m.run})

    failed = 0
    if m.hub is not None:
        hub_arts = [a for a in (m.hub.db, m.hub.secret) if a is not None]
        items.append({"run_id": m.run, "key": "hub", "kind": "hub", "user": None, "server": "",
                      "status": m.hub.status, "method": "sqlite", "bytes": m.hub.db_bytes, "files": 0,
                      "reused_from": None, "error": m.hub.error})
        add_artifacts("hub", hub_arts)
        failed += m.hub.status == "failed"
    for v in m.volumes:
        items.append({"run_id": m.run, "key": v.key, "kind": "volume", "user": v.user, "server": v.server,
                      "status": v.status, "method": v.method, "bytes": v.bytes, "files": v.files,
                      "reused_from": v.reused_from, "error": v.error})
        add_artifacts(v.key, v.artifacts())
        failed += v.status == "failed"
    run = {
        "id": m.run, "time_us": to_us(m.started), "finished_us": to_us(m.finished), "status": m.status,
        "users": len({v.user for v in m.volumes if v.user is not None}), "volumes": len(m.volumes),
        "failed": failed, "bytes": sum(v.bytes for v in m.volumes),
        "stored": sum(a["size"] for a in arts.values() if a["writer"] == m.run),
        "files": sum(v.files for v in m.volumes),
        "hub": m.hub is not None and m.hub.db is not None, "jdr_version": m.jdr_version,
        "manifest": canonical(m),
    }
    return run, items, list(arts.values())


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
