"""Repository locks do not trust clocks (issue 10, item 6), on every store: ``file://`` and the real
SeaweedFS S3 server.

- Staleness is judged by the store's own time (S3 ``LastModified``, the file's mtime), never by the
  holder's timestamp against the reader's clock: a holder whose clock is 20 minutes slow keeps its lock.
- ``lock_stale_after`` must be at least 3 x the refresh interval (a configuration error, exit 2).
- A holder whose lock vanished, was replaced, or went unrefreshed long enough that another process could
  have judged it stale, stops: ``ensure_held`` raises LockLostError, it never recreates the lock, and a
  backup in that state commits nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr.errors import ConfigError, LockHeldError, LockLostError
from dr.repository import layout
from dr.repository.lock import LockInfo, RepositoryLock, list_locks, stale_locks, store_time
from dr.repository.store import Store
from dr.settings import load_settings
from dr.util.timefmt import utcnow

HOLDER_RUN = "20261120T020000Z-aaaaaa"


def slow_clock(minutes: float) -> Callable[[], datetime]:
    return lambda: utcnow() - timedelta(minutes=minutes)


class FakeElapsed:
    """A monotonic clock the test moves by hand (how long a holder went without refreshing)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def put_foreign_lock(store: Store, lock_id: str, *, refreshed: datetime, host: str = "elsewhere.example",
                     mode: str = "exclusive") -> LockInfo:
    """A lock written by another host's process (its pid cannot be checked from here)."""
    info = LockInfo(id=lock_id, mode=mode, operation="backup", host=host, pid=1, run=HOLDER_RUN,
                    created=refreshed, refreshed=refreshed)
    store.put(layout.lock_key(lock_id), json.dumps(info.to_dict()).encode())
    return info


def wait_store_seconds(store: Store, since: datetime, seconds: float) -> None:
    """Wait until the store's own clock is more than ``seconds`` past ``since`` (a store time)."""
    while True:
        now = store_time(store)
        assert now is not None
        if (now - since).total_seconds() > seconds:
            return
        time.sleep(0.3)


def test_a_holder_with_a_slow_clock_keeps_its_lock(store: Store) -> None:
    holder = RepositoryLock(store, "exclusive", "backup", HOLDER_RUN, stale_after=900, refresh_every=60,
                            clock=slow_clock(20))
    with holder:
        (info,) = list_locks(store)
        assert utcnow() - info.refreshed > timedelta(minutes=19)  # what the old rule called stale
        with pytest.raises(LockHeldError, match="backup by pid"):
            RepositoryLock(store, "exclusive", "prune").acquire()
        assert stale_locks(store, 900) == []  # `jdr unlock` leaves it alone too
        holder.refresh()
        holder.ensure_held()
        assert holder.lost is None and [lk.id for lk in list_locks(store)] == [holder.info.id]
    assert list_locks(store) == []


def test_a_lock_old_by_the_stores_clock_is_broken_whatever_its_timestamp(store: Store) -> None:
    # Written "in the future" by a holder whose clock runs 20 minutes fast, then abandoned.
    abandoned = put_foreign_lock(store, "20261120T000000Z-000000000001", refreshed=utcnow() + timedelta(minutes=20))
    (listed,) = list_locks(store)
    assert listed.modified is not None
    wait_store_seconds(store, listed.modified, 3)
    with RepositoryLock(store, "exclusive", "backup", stale_after=3, refresh_every=1) as taker:
        assert [b.id for b in taker.broken] == [abandoned.id]
    # A foreign lock written just now holds, even with a timestamp two hours old.
    put_foreign_lock(store, "20261120T000000Z-000000000002", refreshed=utcnow() - timedelta(hours=2))
    with pytest.raises(LockHeldError, match=r"elsewhere\.example"):
        RepositoryLock(store, "exclusive", "backup", stale_after=900, refresh_every=60).acquire()


def test_a_holder_whose_lock_vanished_stops_and_never_recreates_it(store: Store) -> None:
    with RepositoryLock(store, "exclusive", "backup", HOLDER_RUN, stale_after=900, refresh_every=60) as holder:
        store.delete(holder.key)  # broken by another taker, or `jdr unlock --all`
        holder.refresh()
        assert holder.lost is not None and "vanished" in holder.lost
        assert list_locks(store) == []  # not recreated
        with pytest.raises(LockLostError, match="vanished") as e:
            holder.ensure_held()
        assert e.value.exit_code == 3 and "nothing is committed" in str(e.value)
        # Someone else takes the repository now; the lost holder's exit leaves that lock alone.
        other = RepositoryLock(store, "exclusive", "prune")
        other.acquire()
    assert [lk.id for lk in list_locks(store)] == [other.info.id]
    other.release()


def test_a_holder_whose_lock_was_replaced_stops_and_leaves_the_new_object(store: Store) -> None:
    with RepositoryLock(store, "exclusive", "backup", stale_after=900, refresh_every=60) as holder:
        store.put(holder.key, b'{"id": "someone else"}')
        with pytest.raises(LockLostError, match="replaced"):
            holder.ensure_held()
    assert store.get(holder.key) == b'{"id": "someone else"}'
    store.delete(holder.key)


def test_a_holder_that_went_unrefreshed_too_long_stops_even_if_its_object_is_still_there(store: Store) -> None:
    """A frozen process (or an unreachable store) cannot know whether another taker judged it stale
    meanwhile; it must not commit, and its next refresh must not recreate what may have been broken."""
    elapsed = FakeElapsed()
    with RepositoryLock(store, "exclusive", "backup", stale_after=300, refresh_every=60,
                        elapsed=elapsed) as holder:
        elapsed.now += 200  # refreshes within stale_after - refresh_every are fine
        holder.refresh()
        holder.ensure_held()
        elapsed.now += 241  # missed refreshes for longer than that
        before = store.get(holder.key)
        holder.refresh()
        assert holder.lost is not None and "not refreshed for 241 s" in holder.lost
        assert store.get(holder.key) == before  # no rewrite after the fact
        with pytest.raises(LockLostError, match="may have judged it stale"):
            holder.ensure_held()


def test_a_refresh_that_lands_too_late_counts_as_lost(store: Store) -> None:
    """The write itself was slow: another taker may have broken the old object before it landed."""
    elapsed = FakeElapsed()
    with RepositoryLock(store, "exclusive", "backup", stale_after=300, refresh_every=60,
                        elapsed=elapsed) as holder:
        elapsed.now += 200
        real_put = store.put

        def slow_put(key: str, data: bytes) -> None:
            real_put(key, data)
            elapsed.now += 50  # 250 s since the previous write started: over 300 - 60

        store.put = slow_put  # type: ignore[method-assign]
        try:
            holder.refresh()
        finally:
            store.put = real_put  # type: ignore[method-assign]
        with pytest.raises(LockLostError):
            holder.ensure_held()


@pytest.mark.parametrize("stale,refresh", [(179, 60), (60, 60), (10, 0)])
def test_stale_after_must_be_three_refresh_intervals(store: Store, stale: int, refresh: int) -> None:
    with pytest.raises(ConfigError, match=r"lock_stale_after|lock_refresh_every") as e:
        RepositoryLock(store, "exclusive", "backup", stale_after=stale, refresh_every=refresh)
    assert e.value.exit_code == 2


def test_settings_refuse_a_stale_after_below_three_refresh_intervals(tmp_path: Path) -> None:
    cfg = tmp_path / "jdr.yaml"
    cfg.write_text("repository: {url: 'file:///r', lock_stale_after: 120}\n")  # refresh: 60 by default
    with pytest.raises(ConfigError, match=r"lock_stale_after \(120\) must be at least 3 times") as e:
        load_settings(cfg, environ={})
    assert e.value.exit_code == 2
    ok = load_settings(cfg, environ={"JDR_REPOSITORY_LOCK_REFRESH_EVERY": "40"})
    assert (ok.repository.lock_stale_after, ok.repository.lock_refresh_every) == (120, 40)
    assert load_settings(None, environ={}).repository.lock_stale_after >= \
        3 * load_settings(None, environ={}).repository.lock_refresh_every


def test_store_time_is_the_stores_and_leaves_nothing_behind(store: Store) -> None:
    t = store_time(store)
    assert t is not None and abs((t - datetime.now(UTC)).total_seconds()) < 60
    assert list(store.list(layout.LOCKS)) == []
