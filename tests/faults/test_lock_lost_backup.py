"""A backup whose repository lock was broken while it ran commits nothing (issue 10, item 6).

The backup runs in this process on a sandbox hub (``file://`` and the real SeaweedFS S3 server); at the
``backup-commit`` test point, right before the manifest would be written, another process takes the lock
away: the real ``jdr unlock --all``, or the real ``jdr prune`` after the lock went stale by the store's
clock. The backup must stop with LockLostError, write no manifest, and the next backup must clean up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

import dr.operations.backup as backup_mod
from dr import wiring
from dr.errors import LockLostError
from dr.operations.backup import BackupOptions, run_backup
from dr.repository import layout
from dr.repository.lock import RepositoryLock, list_locks, store_time
from dr.settings import load_settings
from tests.fixtures.sandbox import Sandbox, describe

pytestmark = pytest.mark.faults


def at_commit(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> list[str]:
    """Run ``action`` when the backup reaches its commit point; returns the points reached."""
    reached: list[str] = []
    real = backup_mod.pause_at

    def hook(point: str, progress: int = 0) -> None:
        if point == "backup-commit":
            reached.append(point)
            action()
        real(point, progress)

    monkeypatch.setattr(backup_mod, "pause_at", hook)
    return reached


def backup_in_process(sb: Sandbox, **env: str) -> Any:
    settings = load_settings(sb.config, environ={**sb.env, **env})
    repo = wiring.open_repository(settings, create=True)
    return run_backup(repo, wiring.make_deployment(settings), BackupOptions())


def test_a_backup_whose_lock_was_removed_commits_nothing(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    def unlock_all() -> None:
        proc = sandbox.run_jdr("--json", "unlock", "--all")
        assert proc.returncode == 0 and "backup by pid" in proc.stdout, describe(proc)

    reached = at_commit(monkeypatch, unlock_all)
    with pytest.raises(LockLostError, match="vanished") as e:
        backup_in_process(sandbox)
    assert reached == ["backup-commit"] and e.value.exit_code == 3
    assert sandbox.keys(layout.RUNS) == []  # no manifest: the run does not exist
    assert list_locks(sandbox.store()) == []  # and its lock was not recreated

    monkeypatch.setattr(backup_mod, "pause_at", lambda *a, **k: None)
    doc = sandbox.jdr_json("backup")
    assert doc["status"] == "complete"
    assert len(sandbox.jdr_json("prune")["cleaned_runs"]) == 1  # the lost run's artifacts: prune's to remove
    assert sandbox.jdr_json("verify")["ok"] is True


def test_a_backup_whose_lock_went_stale_and_was_broken_commits_nothing(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder stopped refreshing (as if frozen); a prune judged its lock stale by the store's clock
    and broke it. Prune's own run is real; the holder's refresh thread is stopped by the test."""
    quick = {"JDR_REPOSITORY_LOCK_STALE_AFTER": "3", "JDR_REPOSITORY_LOCK_REFRESH_EVERY": "1"}

    holders: list[RepositoryLock] = []
    real_enter = RepositoryLock.__enter__

    def enter(self: RepositoryLock) -> RepositoryLock:
        holders.append(self)
        return real_enter(self)

    monkeypatch.setattr(RepositoryLock, "__enter__", enter)

    def freeze_then_prune() -> None:
        (holder,) = holders
        holder._stop.set()  # no more refreshes, as if the process had been frozen
        assert holder._thread is not None
        holder._thread.join(10)
        store = sandbox.store()
        (mine,) = list_locks(store)
        assert mine.modified is not None
        while (now := store_time(store)) is not None and (now - mine.modified).total_seconds() <= 3:
            time.sleep(0.3)
        proc = sandbox.run_jdr("--json", "prune", env=quick)
        assert proc.returncode == 0 and "breaking stale lock" in proc.stderr, describe(proc)

    at_commit(monkeypatch, freeze_then_prune)
    with pytest.raises(LockLostError):
        backup_in_process(sandbox, **quick)
    assert sandbox.keys(layout.RUNS) == []
