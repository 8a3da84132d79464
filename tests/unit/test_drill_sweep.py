"""Which earlier drills' scratch databases a drill drops (dr/operations/drill_sweep.py), by the drills'
locks in a real file repository: never a running drill's, always a dead one's, an unlocked one only when
old, nothing while an older jdr's (unnamed) drill runs."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from dr.deployments.drill import Leftover
from dr.model import new_run_id
from dr.operations.drill_sweep import dead_scratch_databases, lock_operation
from dr.repository.file import FileStore
from dr.repository.repository import Repository
from dr.util.timefmt import utcnow


def _db(drill: str) -> Leftover:
    return Leftover(where=f"database {drill}", drill=drill, details={"database": drill})


def test_live_dead_unlocked_and_unnamed_locks(tmp_path: Path) -> None:
    repo = Repository.open(FileStore.from_url(f"file://{tmp_path / 'repo'}"), create=True)
    now = utcnow()
    running, dead, young = (new_run_id(now) for _ in range(3))
    old = new_run_id(now - timedelta(seconds=repo.stale_after + 60))
    found = [_db(d) for d in (running, dead, young, old)]
    # A dead drill's lock: its holder (a process that has exited) ran on this host.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    with repo.lock(lock_operation(dead), exclusive=False) as held:
        body = json.loads(repo.store.get(held.key))
    body.update(id=body["id"] + "x", pid=int(gone))
    repo.store.put(held.key.replace(".json", "x.json"), json.dumps(body).encode())

    with repo.lock(lock_operation(running), exclusive=False):
        assert sorted(lo.drill for lo in dead_scratch_databases(repo, found, now)) == sorted([dead, old])
        with repo.lock("drill", exclusive=False):  # an older jdr's drill: its database cannot be told
            assert dead_scratch_databases(repo, found, now) == []
