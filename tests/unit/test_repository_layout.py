"""Pure parts of the repository: key layout, and when a lock counts as stale."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest

from dr.repository import layout
from dr.repository.lock import LockInfo, is_stale
from dr.repository.store import check_key

RUN = "20261120T020000Z-abcdef"
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def test_keys_of_a_run() -> None:
    assert layout.manifest_key(RUN) == f"runs/{RUN}.json"
    assert layout.run_of_manifest_key(f"runs/{RUN}.json") == RUN
    assert layout.run_of_manifest_key(f"runs/{RUN}.txt") is None
    assert layout.run_of_manifest_key(f"runs/x/{RUN}.json") is None
    assert layout.hub_db_key(RUN, False) == f"data/{RUN}/hub/jupyterhub.sqlite.zst"
    assert layout.hub_db_key(RUN, True).endswith(".zst.age")
    assert layout.volume_archive_key(RUN, "alice-1", False) == f"data/{RUN}/volumes/alice-1.tar.zst"
    assert layout.volume_index_key(RUN, "alice-1", True) == f"data/{RUN}/volumes/alice-1.index.jsonl.zst.age"
    for key in (layout.hub_db_key(RUN, False), layout.volume_archive_key(RUN, "a", True),
                layout.hub_secret_key(RUN, True)):
        assert layout.run_of_data_key(key) == RUN
        assert key.startswith(layout.run_data_prefix(RUN))
        assert check_key(key) == key
    assert layout.run_of_data_key("data/") is None and layout.run_of_data_key("runs/x.json") is None


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "a\\b", "a\0b", "a/"])
def test_invalid_keys(key: str) -> None:
    with pytest.raises(ValueError, match="invalid repository key"):
        check_key(key)


def lock(host: str, pid: int, refreshed: datetime, modified: datetime | None = None) -> LockInfo:
    return LockInfo(id="x", mode="exclusive", operation="backup", host=host, pid=pid, run=RUN,
                    created=refreshed, refreshed=refreshed, modified=modified)


def test_stale_when_not_refreshed_for_long_by_the_stores_clock() -> None:
    """``modified`` is the store's time of the lock object; NOW stands for the store's time now."""
    assert is_stale(lock("elsewhere", 1, NOW, modified=NOW - timedelta(seconds=901)), NOW, 900)
    assert not is_stale(lock("elsewhere", 1, NOW, modified=NOW - timedelta(seconds=899)), NOW, 900)


def test_the_holders_own_timestamp_never_makes_a_lock_stale() -> None:
    """A holder whose clock is 20 minutes slow writes old ``refreshed`` times: its lock holds."""
    slow = lock("elsewhere", 1, NOW - timedelta(minutes=20), modified=NOW - timedelta(seconds=30))
    assert not is_stale(slow, NOW, 900)
    # Without store times nothing can be judged by time: only a holder gone from this host is stale.
    assert not is_stale(lock("elsewhere", 1, NOW - timedelta(days=2)), None, 900)
    assert not is_stale(lock("elsewhere", 1, NOW - timedelta(days=2)), NOW, 900)


def test_stale_when_its_process_on_this_host_is_gone() -> None:
    me = socket.gethostname()
    assert not is_stale(lock(me, 1, NOW), NOW, 900, host=me)  # pid 1 is alive
    assert is_stale(lock(me, 0, NOW), NOW, 900, host=me)
    assert is_stale(lock(me, 2**22 + 12345, NOW), NOW, 900, host=me)  # above pid_max: no such process
    # On another host the pid means nothing here: only the refresh time counts.
    assert not is_stale(lock("elsewhere", 2**22 + 12345, NOW), NOW, 900, host=me)


def test_lock_info_round_trip_and_description() -> None:
    info = lock("h1", 42, NOW)
    assert LockInfo.from_dict(info.to_dict()) == info
    assert info.describe() == f"backup by pid 42 on h1 (run {RUN}), last refreshed 2026-11-20T03:00:00.000000Z"
