"""Repository locks, kept as objects in the store itself (so they work on S3 and NFS alike).

A lock is ``locks/<id>.json`` naming its holder (host, pid, operation, run) and the time it was last
refreshed. Taking a lock writes it first and then lists the others: if any conflicting, live lock is
there, ours is removed again and :class:`LockHeldError` says who holds the other. Two processes racing
may both back off, never both proceed. ``exclusive`` locks (backup, prune) conflict with every lock;
``shared`` locks (restore, verify, drill) conflict only with exclusive ones.

A lock is stale when its holder stopped refreshing it for ``stale_after`` seconds, or when it was taken
on this host by a process that no longer exists. Stale locks are broken (deleted, with a warning) by the
next taker; ``jdr unlock`` removes them by hand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from dr.errors import LockHeldError, ObjectNotFound, RepositoryError
from dr.repository import layout
from dr.repository.store import Store
from dr.util.procs import pid_alive
from dr.util.timefmt import iso, parse_iso, utcnow

log = logging.getLogger(__name__)

REFRESH_EVERY = 60.0


@dataclass(frozen=True)
class LockInfo:
    id: str
    mode: str  # "exclusive" or "shared"
    operation: str
    host: str
    pid: int
    run: str
    created: datetime
    refreshed: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mode": self.mode, "operation": self.operation, "host": self.host,
                "pid": self.pid, "run": self.run, "created": iso(self.created),
                "refreshed": iso(self.refreshed)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LockInfo:
        return cls(id=str(d["id"]), mode=str(d["mode"]), operation=str(d.get("operation", "")),
                   host=str(d.get("host", "")), pid=int(d.get("pid", 0)), run=str(d.get("run", "")),
                   created=parse_iso(d["created"]), refreshed=parse_iso(d["refreshed"]))

    def describe(self) -> str:
        return (f"{self.operation or self.mode} by pid {self.pid} on {self.host}"
                f"{' (run ' + self.run + ')' if self.run else ''}, last refreshed {iso(self.refreshed)}")


def is_stale(lock: LockInfo, now: datetime, stale_after: float, host: str | None = None) -> bool:
    """A lock is stale if not refreshed for ``stale_after`` seconds, or its local holder is gone."""
    if now - lock.refreshed > timedelta(seconds=stale_after):
        return True
    return lock.host == (host or socket.gethostname()) and not pid_alive(lock.pid)


def list_locks(store: Store) -> list[LockInfo]:
    found = []
    for obj in store.list(layout.LOCKS):
        try:
            found.append(LockInfo.from_dict(json.loads(store.get(obj.key))))
        except ObjectNotFound:
            continue  # released while listing
        except (ValueError, KeyError) as e:
            log.warning("ignoring unreadable lock object %s: %s", obj.key, e)
    return found


class RepositoryLock:
    """Held while a context is open; refreshed in the background; released on exit."""

    def __init__(self, store: Store, mode: str, operation: str, run: str = "",
                 stale_after: float = 900.0, refresh_every: float = REFRESH_EVERY) -> None:
        if mode not in ("exclusive", "shared"):
            raise ValueError(f"lock mode {mode!r}")
        self._store = store
        self._stale_after = stale_after
        self._refresh_every = refresh_every
        now = utcnow()
        self.info = LockInfo(id=f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:12]}", mode=mode,
                             operation=operation, host=socket.gethostname(), pid=os.getpid(), run=run,
                             created=now, refreshed=now)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.broken: list[LockInfo] = []

    def _write(self) -> None:
        self._store.put(layout.lock_key(self.info.id), json.dumps(self.info.to_dict()).encode())

    def acquire(self) -> None:
        self._write()
        try:
            conflict = self._find_conflict()
        except BaseException:
            self._delete_own()
            raise
        if conflict is not None:
            self._delete_own()
            raise LockHeldError(
                f"the repository is locked: {conflict.describe()}",
                hint="wait for it to finish; if that process is gone, `jdr unlock` removes its lock")
        self._thread = threading.Thread(target=self._refresh_loop, name="jdr-lock-refresh", daemon=True)
        self._thread.start()

    def _find_conflict(self) -> LockInfo | None:
        now = utcnow()
        for other in list_locks(self._store):
            if other.id == self.info.id:
                continue
            if self.info.mode == "shared" and other.mode == "shared":
                continue
            if is_stale(other, now, self._stale_after):
                log.warning("breaking stale lock: %s", other.describe())
                self._store.delete(layout.lock_key(other.id))
                self.broken.append(other)
                continue
            return other
        return None

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh_every):
            try:
                self.info = LockInfo(**{**self.info.__dict__, "refreshed": utcnow()})
                self._write()
            except RepositoryError as e:
                log.warning("could not refresh the repository lock: %s", e)

    def _delete_own(self) -> None:
        with contextlib.suppress(RepositoryError):
            self._store.delete(layout.lock_key(self.info.id))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._delete_own()

    def __enter__(self) -> RepositoryLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
