"""Which scratch databases of earlier drills a drill drops: those whose drill is dead by the repository's
drill locks.

A drill takes a shared lock named ``drill <drill id>`` before it makes its scratch database
(:func:`dr.hubdb.server.scratch_name` of that id) and drops the database before it releases the lock. So
a scratch database whose drill holds a live lock belongs to a running drill and is never touched; one
whose drill's lock is stale (its holder died: dead pid on this host, or no refresh for ``stale_after``) is
a leftover; one whose drill holds no lock at all (released by ``jdr unlock``, or a kept drill's whose
marker is gone) is a leftover once its drill started more than ``stale_after`` ago — never sooner, so a
lock the listing did not show yet cannot make a running drill's database look abandoned. While a drill
of an older jdr (a lock named just ``drill``) runs, nothing is dropped: its database cannot be told apart.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dr.deployments.drill import Leftover
from dr.model import run_time
from dr.repository.lock import is_stale, list_locks, store_time
from dr.repository.repository import Repository

LOCK_OPERATION = "drill"


def lock_operation(drill: str) -> str:
    """The operation a drill's repository lock is taken under: it names the drill (see the module doc)."""
    return f"{LOCK_OPERATION} {drill}"


def dead_scratch_databases(repo: Repository, found: list[Leftover], now: datetime) -> list[Leftover]:
    """The scratch databases among ``found`` (candidates with ``drill`` set) that may be dropped now."""
    if not found:
        return []
    locks = [lk for lk in list_locks(repo.store)
             if lk.operation == LOCK_OPERATION or lk.operation.startswith(LOCK_OPERATION + " ")]
    store_now = store_time(repo.store) if locks else None
    live: set[str] = set()
    dead: set[str] = set()
    for lk in locks:
        drill = lk.operation[len(LOCK_OPERATION):].strip()
        stale = is_stale(lk, store_now, repo.stale_after)
        if not drill:
            if not stale:
                return []  # an older jdr's drill runs: which database is its cannot be told
            continue
        (dead if stale else live).add(drill)
    old_enough = now - timedelta(seconds=repo.stale_after)
    return [lo for lo in found
            if lo.drill not in live and (lo.drill in dead or run_time(lo.drill) < old_enough)]
