"""``jdr prune``: apply the retention policy, then delete what no kept run needs (mark and sweep).

Order makes it safe to kill at any point: dropped manifests are deleted first (a run without a manifest
does not exist), then artifacts that no remaining manifest references. A re-run finishes the sweep.
The newest successful run is never dropped (dr.policy.retention guarantees it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from dr.errors import EXIT_OK
from dr.model import Manifest, Snapshot
from dr.policy.retention import Decision, RetentionPolicy, RunSummary, apply_policy
from dr.repository import layout
from dr.repository.damage import DAMAGE, artifact_of_damage_key
from dr.repository.repository import Repository
from dr.util.timefmt import real_utcnow, utcnow

log = logging.getLogger(__name__)

SnapshotDeleter = Callable[[list[Snapshot]], int]


@dataclass
class PruneResult:
    decisions: list[Decision]
    dry_run: bool
    runs_deleted: list[str] = field(default_factory=list)
    artifacts_deleted: int = 0
    bytes_freed: int = 0
    snapshots_deleted: int = 0

    exit_code = EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run,
                "decisions": [{"run": d.run, "keep": d.keep, "reasons": list(d.reasons)}
                              for d in self.decisions],
                "runs_deleted": self.runs_deleted, "artifacts_deleted": self.artifacts_deleted,
                "bytes_freed": self.bytes_freed, "snapshots_deleted": self.snapshots_deleted}


def prune(repo: Repository, policy: RetentionPolicy, tz: tzinfo, *, dry_run: bool = False,
          now: datetime | None = None, delete_snapshots: SnapshotDeleter | None = None) -> PruneResult:
    now = now or utcnow()
    with repo.lock("prune", exclusive=True):
        manifests = {m.run: m for m in repo.manifests()}
        runs = [RunSummary(id=m.run, time=m.started, status=m.status) for m in manifests.values()]
        decisions = apply_policy(runs, policy, now, tz)
        result = PruneResult(decisions=decisions, dry_run=dry_run)
        drop = [d.run for d in decisions if not d.keep]
        if dry_run:
            return result
        for run in drop:
            log.info("prune: deleting run %s", run)
            repo.delete_manifest(run)
            result.runs_deleted.append(run)
            repo.store.delete(layout.report_key(run, "txt"))
            repo.store.delete(layout.report_key(run, "json"))
        kept = [m for run, m in manifests.items() if run not in drop]
        _sweep(repo, kept, result)
        if delete_snapshots is not None:
            wanted = {(v.snapshot.namespace, v.snapshot.name) for m in kept for v in m.volumes if v.snapshot}
            orphans = [v.snapshot for run in drop for v in manifests[run].volumes
                       if v.snapshot and (v.snapshot.namespace, v.snapshot.name) not in wanted]
            if orphans:
                result.snapshots_deleted = delete_snapshots(orphans)
    return result


def _sweep(repo: Repository, kept: list[Manifest], result: PruneResult) -> None:
    """Delete every artifact under data/ that no kept manifest names (we hold the exclusive lock)."""
    referenced = {a.key for m in kept for a in m.artifacts()}
    # Re-read the list of runs: a manifest committed by anyone must never lose an artifact.
    for run in repo.run_ids():
        if not any(m.run == run for m in kept):
            referenced |= {a.key for a in repo.load_manifest(run).artifacts()}
    for obj in repo.store.list(layout.DATA):
        if obj.key not in referenced:
            repo.store.delete(obj.key)
            result.artifacts_deleted += 1
            result.bytes_freed += obj.size
    for obj in repo.store.list(DAMAGE):
        artifact = artifact_of_damage_key(obj.key)
        if artifact is not None and artifact not in referenced:  # its runs are gone: nothing to warn about
            repo.store.delete(obj.key)
    repo.store.cleanup_incomplete(real_utcnow())  # the store's times are real ones
