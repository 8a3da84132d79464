"""Repository locks, kept as objects in the store itself (so they work on S3 and NFS alike).

A lock is ``locks/<id>.json`` naming its holder (host, pid, operation, run). Taking a lock writes it
first and then lists the others: if any conflicting, live lock is there, ours is removed again and
:class:`LockHeldError` says who holds the other. Two processes racing may both back off, never both
proceed. ``exclusive`` locks (backup, prune) conflict with every lock; ``shared`` locks (restore, verify,
drill) conflict only with exclusive ones.

Staleness is judged by the store's own clock, never by comparing a holder's clock with the reader's
(hosts disagree by minutes; a test or the season simulation runs on an injected clock): a lock is stale
when the store's modification time of its object (S3 ``LastModified``, the file's mtime) is more than
``stale_after`` seconds older than the store's time of the taker's own, just-written lock object. It is
also stale when it was taken on this host by a process that no longer exists. Stale locks are broken
(deleted, with a warning) by the next taker; ``jdr unlock`` removes them by hand.

The holder rewrites its object every ``refresh_every`` seconds; ``stale_after`` must be at least
``STALE_FACTOR`` times that. A holder whose lock may have been broken stops believing it holds it, and
:meth:`RepositoryLock.ensure_held` (called right before a manifest is committed) raises
:class:`LockLostError`: when its object vanished or holds another content (``jdr unlock --all``,
another taker), or when its refreshes were interrupted for so long (a frozen process, an unreachable
store) that another taker could have judged it stale. Such a holder never recreates its lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from dr.errors import ConfigError, LockHeldError, LockLostError, ObjectNotFound, RepositoryError
from dr.repository import layout
from dr.repository.store import Store
from dr.util.procs import pid_alive
from dr.util.timefmt import iso, parse_iso, utcnow

log = logging.getLogger(__name__)

REFRESH_EVERY = 60.0
#: ``stale_after`` must be at least this many refresh intervals: a holder that missed one or two
#: refreshes (a slow store, a paused VM) is not broken.
STALE_FACTOR = 3
_LOCK_SUFFIX = ".json"


def _elapsed_clock() -> float:
    """Seconds on a clock that never jumps and keeps counting through a suspend (CLOCK_BOOTTIME)."""
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.monotonic()  # pragma: no cover - not Linux


@dataclass(frozen=True)
class LockInfo:
    id: str
    mode: str  # "exclusive" or "shared"
    operation: str
    host: str
    pid: int
    run: str
    created: datetime  # by the holder's clock: for people only
    refreshed: datetime  # by the holder's clock: for people only, never to judge staleness
    modified: datetime | None = dataclasses.field(default=None, compare=False)  # store's time (listing)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mode": self.mode, "operation": self.operation, "host": self.host,
                "pid": self.pid, "run": self.run, "created": iso(self.created),
                "refreshed": iso(self.refreshed)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], modified: datetime | None = None) -> LockInfo:
        return cls(id=str(d["id"]), mode=str(d["mode"]), operation=str(d.get("operation", "")),
                   host=str(d.get("host", "")), pid=int(d.get("pid", 0)), run=str(d.get("run", "")),
                   created=parse_iso(d["created"]), refreshed=parse_iso(d["refreshed"]), modified=modified)

    def describe(self) -> str:
        return (f"{self.operation or self.mode} by pid {self.pid} on {self.host}"
                f"{' (run ' + self.run + ')' if self.run else ''}, last refreshed {iso(self.refreshed)}")


def check_intervals(stale_after: float, refresh_every: float) -> None:
    """Raise ConfigError unless ``stale_after`` >= STALE_FACTOR x ``refresh_every`` (both positive)."""
    if refresh_every <= 0:
        raise ConfigError("repository.lock_refresh_every: must be positive")
    if stale_after < STALE_FACTOR * refresh_every:
        raise ConfigError(
            f"repository.lock_stale_after ({stale_after:g} s) must be at least {STALE_FACTOR} times "
            f"repository.lock_refresh_every ({refresh_every:g} s)",
            hint="otherwise a running holder that missed a refresh could have its lock broken")


def is_stale(lock: LockInfo, store_now: datetime | None, stale_after: float, host: str | None = None) -> bool:
    """Whether ``lock`` is stale: its object's store time (``lock.modified``) is more than ``stale_after``
    seconds before ``store_now`` (the store's time, see :func:`store_time`), or its holder ran on this
    host and is gone. Without store times (a store that keeps none) only the second rule applies."""
    if lock.modified is not None and store_now is not None and \
            store_now - lock.modified > timedelta(seconds=stale_after):
        return True
    return lock.host == (host or socket.gethostname()) and not pid_alive(lock.pid)


def list_locks(store: Store) -> list[LockInfo]:
    """Every lock in the repository, with its object's store time as ``modified``."""
    found = []
    for obj in store.list(layout.LOCKS):
        if not obj.key.endswith(_LOCK_SUFFIX):
            continue  # a clock probe (store_time)
        try:
            found.append(LockInfo.from_dict(json.loads(store.get(obj.key)), modified=obj.modified))
        except ObjectNotFound:
            continue  # released while listing
        except (ValueError, KeyError) as e:
            log.warning("ignoring unreadable lock object %s: %s", obj.key, e)
    return found


def store_time(store: Store) -> datetime | None:
    """The store's current time: the modification time it gives a small object written now (which is
    then removed). None when the store keeps no times."""
    key = f"{layout.LOCKS}clock-{uuid.uuid4().hex}.probe"
    store.put(key, b"")
    try:
        return store.stat(key).modified
    finally:
        store.delete(key)


def stale_locks(store: Store, stale_after: float) -> list[LockInfo]:
    """The locks that a taker would break now (``jdr unlock``)."""
    locks = list_locks(store)
    if not locks:
        return []
    now = store_time(store)
    return [lk for lk in locks if is_stale(lk, now, stale_after)]


class RepositoryLock:
    """Held while a context is open; refreshed in the background; released on exit.

    ``clock`` stamps the holder's times in the lock (for people; tests inject a skewed one) and
    ``elapsed`` measures the time between refreshes (a monotonic clock in seconds).
    """

    def __init__(self, store: Store, mode: str, operation: str, run: str = "",
                 stale_after: float = 900.0, refresh_every: float = REFRESH_EVERY, *,
                 clock: Callable[[], datetime] = utcnow,
                 elapsed: Callable[[], float] = _elapsed_clock) -> None:
        if mode not in ("exclusive", "shared"):
            raise ValueError(f"lock mode {mode!r}")
        check_intervals(stale_after, refresh_every)
        self._store = store
        self._stale_after = stale_after
        self._refresh_every = refresh_every
        # A refresh must land within this of the previous one's start, or another taker may have judged
        # the lock stale in between (one refresh interval of margin for a slow write).
        self._safe_for = stale_after - refresh_every
        self._clock = clock
        self._elapsed = elapsed
        now = clock()
        self.info = LockInfo(id=f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:12]}", mode=mode,
                             operation=operation, host=socket.gethostname(), pid=os.getpid(), run=run,
                             created=now, refreshed=now)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()  # refresh thread vs ensure_held
        self._written = b""
        self._last_write_started = 0.0
        self.lost: str | None = None  # why this holder no longer holds its lock
        self._replaced = False  # the object under our key is someone else's: never delete it
        self.broken: list[LockInfo] = []

    @property
    def key(self) -> str:
        return layout.lock_key(self.info.id)

    def _write(self) -> None:
        """Write the lock object; on success, remember what and when (the start of the write)."""
        body = json.dumps(self.info.to_dict()).encode()
        started = self._elapsed()
        self._store.put(self.key, body)
        self._written, self._last_write_started = body, started

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
        locks = list_locks(self._store)
        own = next((lk for lk in locks if lk.id == self.info.id), None)
        # The store's time now is the time it gave our object, written just before the listing.
        now = own.modified if own is not None and own.modified is not None else self._own_store_time()
        for other in locks:
            if other.id == self.info.id:
                continue
            if self.info.mode == "shared" and other.mode == "shared":
                continue
            if is_stale(other, now, self._stale_after):
                log.warning("breaking stale lock: %s (store time of its last refresh: %s)", other.describe(),
                            iso(other.modified) if other.modified else "unknown")
                self._store.delete(layout.lock_key(other.id))
                self.broken.append(other)
                continue
            return other
        return None

    def _own_store_time(self) -> datetime | None:
        try:
            return self._store.stat(self.key).modified
        except ObjectNotFound:
            return None

    # --- holding --------------------------------------------------------------------------------

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh_every):
            try:
                self.refresh()
            except RepositoryError as e:
                log.warning("could not refresh the repository lock: %s", e)
            if self.lost is not None:
                log.error("the repository lock is lost: %s", self.lost)
                return

    def refresh(self) -> None:
        """Rewrite the lock object, unless it may no longer be ours (then ``lost`` says why)."""
        with self._mutex:
            if self.lost is not None or not self._still_ours():
                return
            if self._elapsed() - self._last_write_started > self._safe_for:
                self._lose(self._overdue())
                return
            self.info = dataclasses.replace(self.info, refreshed=self._clock())
            previous_start = self._last_write_started
            self._write()
            if self._elapsed() - previous_start > self._safe_for:
                # The write landed so late that another taker may have judged the lock stale (and broken
                # it) before it did: the object now there proves nothing.
                self._lose(self._overdue())

    def ensure_held(self) -> None:
        """Raise LockLostError unless this holder can be sure it still holds its lock (right now)."""
        with self._mutex:
            if self.lost is None and self._still_ours() and self._elapsed() - self._last_write_started > \
                    self._safe_for:
                self._lose(self._overdue())
            if self.lost is not None:
                raise LockLostError(
                    f"the repository lock of this {self.info.operation or 'operation'} was lost: {self.lost}; "
                    "nothing is committed",
                    hint="another jdr process may have taken over the repository; check `jdr list`, "
                         "then run again")

    def _still_ours(self) -> bool:
        """Whether the lock object still holds what this holder last wrote; marks the lock lost if not."""
        try:
            body = self._store.get(self.key)
        except ObjectNotFound:
            self._lose(f"its object {self.key} vanished (broken as stale, or removed by `jdr unlock`)")
            return False
        if body != self._written:
            self._replaced = True
            self._lose(f"its object {self.key} was replaced by another writer")
            return False
        return True

    def _overdue(self) -> str:
        return (f"it was not refreshed for {self._elapsed() - self._last_write_started:.0f} s, so another "
                f"process may have judged it stale (lock_stale_after {self._stale_after:g} s)")

    def _lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = why

    # --- releasing ------------------------------------------------------------------------------

    def _delete_own(self) -> None:
        with contextlib.suppress(RepositoryError):
            self._store.delete(self.key)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self._replaced:
            self._delete_own()

    def __enter__(self) -> RepositoryLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
