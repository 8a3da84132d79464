"""``jdr prune``: apply the retention policy, then delete what no kept run needs (mark and sweep).

Order makes it safe to kill at any point: dropped manifests are deleted first (a run without a manifest
does not exist), then artifacts that no remaining manifest references. A re-run finishes the sweep.
The newest successful run is never dropped (dr.policy.retention guarantees it).

Prune is the only command that deletes run data (docs/CREDENTIALS.md): it also removes what runs that
never committed left behind (``cleaned_runs``) and uploads never completed. A backup deletes nothing but
its own lock, so that the backup role's credentials need no s3:DeleteObject outside ``locks/``.

S3 Object Lock (docs/FORMAT.md, "Object Lock"): prune deletes only what is past its retention. A run the
policy drops while its manifest is still locked is kept whole (manifest, reports, artifacts) and reported
as locked; an unreferenced artifact still locked is kept and reported; the first prune after their date
deletes them. What prune deletes in such a (versioned) bucket it deletes version by version
(``Store.purge``), so that the space is freed rather than hidden behind a delete marker. Locked objects are
expected there, not a failure: the exit code stays 0 — also when the store refuses a delete our clock
thinks allowed (its clock behind ours, a legal hold) while the object carries a retention.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from dr.errors import EXIT_OK, ObjectNotFound, RepositoryError, TamperError, TransientStorageError
from dr.model import Manifest, Snapshot
from dr.policy.retention import Decision, RetentionPolicy, RunSummary, apply_policy
from dr.repository import layout
from dr.repository.damage import DAMAGE, artifact_of_damage_key
from dr.repository.repository import Repository
from dr.util.timefmt import iso, real_utcnow, utcnow

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
    cleaned_runs: list[str] = field(default_factory=list)
    #: Dropped runs kept because their manifest is still locked: run id -> retain-until date.
    locked_runs: dict[str, datetime] = field(default_factory=dict)
    #: Objects prune would delete but may not yet (locked), with their sizes and the latest date.
    locked_objects: int = 0
    locked_bytes: int = 0
    locked_until: datetime | None = None

    exit_code = EXIT_OK  # locked objects are expected under Object Lock, not a failure

    def _locked(self, size: int, until: datetime) -> None:
        self.locked_objects += 1
        self.locked_bytes += size
        self.locked_until = max(self.locked_until or until, until)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run,
                "decisions": [{"run": d.run, "keep": d.keep, "reasons": list(d.reasons),
                               **({"locked_until": iso(self.locked_runs[d.run])} if d.run in self.locked_runs
                                  else {})}
                              for d in self.decisions],
                "runs_deleted": self.runs_deleted, "artifacts_deleted": self.artifacts_deleted,
                "bytes_freed": self.bytes_freed, "snapshots_deleted": self.snapshots_deleted,
                "cleaned_runs": self.cleaned_runs,
                "locked": {"runs": sorted(self.locked_runs), "objects": self.locked_objects,
                           "bytes": self.locked_bytes,
                           "until": iso(self.locked_until) if self.locked_until else None}}


def prune(repo: Repository, policy: RetentionPolicy, tz: tzinfo, *, dry_run: bool = False,
          now: datetime | None = None, delete_snapshots: SnapshotDeleter | None = None,
          allow_unsigned: bool = False) -> PruneResult:
    """Apply ``policy`` and delete what no kept run needs.

    With MAC keys configured, retention counts only runs they authenticate (``allow_unsigned``: also
    unsigned ones, made before MACs): forged manifests must not fill ``keep_last`` and push genuine runs
    out. Runs not counted are not deleted either, and their artifacts stay (docs/SECURITY.md)."""
    now = now or utcnow()
    with repo.lock("prune", exclusive=True):
        manifests = {m.run: m for m in repo.manifests()}
        trusted = {m.run for m in manifests.values() if _trusted(repo, m, allow_unsigned)}
        runs = [RunSummary(id=m.run, time=m.started, status=m.status) for m in manifests.values()
                if m.run in trusted]
        decisions = apply_policy(runs, policy, now, tz)
        decisions += [Decision(run=run, keep=True, reasons=(
            f"not trusted ({m.authenticity}; docs/SECURITY.md): not counted by retention, not deleted",))
            for run, m in sorted(manifests.items(), reverse=True) if run not in trusted]
        result = PruneResult(decisions=decisions, dry_run=dry_run)
        drop = [d.run for d in decisions if not d.keep]
        locking = repo.object_lock
        if locking:
            result.locked_runs = _locked_runs(repo, drop)
            drop = [run for run in drop if run not in result.locked_runs]
        if dry_run:
            return result
        if not locking:  # under Object Lock, _sweep removes them with the rest, as far as their locks allow
            # Under the exclusive lock no backup is running: every run without a manifest is dead.
            result.cleaned_runs = repo.sweep_dead_runs(current_run="")
        remove = repo.store.purge if locking else repo.store.delete
        for run in drop:
            log.info("prune: deleting run %s", run)
            refused = None
            if locking:
                refused = _purge(repo, layout.manifest_key(run))
            else:
                repo.store.delete(layout.manifest_key(run))
            if refused is not None:
                result.locked_runs[run] = refused[1]
                continue
            result.runs_deleted.append(run)
            remove(layout.report_key(run, "txt"))
            remove(layout.report_key(run, "json"))
        drop = [run for run in drop if run not in result.locked_runs]
        kept = [m for run, m in manifests.items() if run not in drop]
        _sweep(repo, kept, result, locking)
        if result.locked_runs:
            _count_locked_runs(repo, manifests, kept, result)
        if delete_snapshots is not None:
            wanted = {(v.snapshot.namespace, v.snapshot.name) for m in kept for v in m.volumes if v.snapshot}
            orphans = [v.snapshot for run in drop for v in manifests[run].volumes
                       if v.snapshot and (v.snapshot.namespace, v.snapshot.name) not in wanted]
            if orphans:
                result.snapshots_deleted = delete_snapshots(orphans)
    return result


def _locked_runs(repo: Repository, drop: list[str]) -> dict[str, datetime]:
    """The dropped runs whose manifest is still locked, with its retain-until date (store time: real)."""
    now = real_utcnow()
    locked: dict[str, datetime] = {}
    for run in drop:
        try:
            retention = repo.store.stat(layout.manifest_key(run)).retention
        except ObjectNotFound:
            continue
        if retention is not None and retention.until > now:
            log.info("prune: run %s is dropped by the policy but locked until %s; kept until then",
                     run, iso(retention.until))
            locked[run] = retention.until
    return locked


def _trusted(repo: Repository, m: Manifest, allow_unsigned: bool) -> bool:
    try:
        repo.require_authentic(m, allow_unsigned=allow_unsigned)
    except TamperError as e:
        log.warning("prune: %s", e)
        return False
    return True


def _sweep(repo: Repository, kept: list[Manifest], result: PruneResult, locking: bool = False) -> None:
    """Delete every artifact under data/ that no kept manifest names (we hold the exclusive lock); with
    Object Lock, only those past their retention, every version of them."""
    referenced = {a.key for m in kept for a in m.artifacts()}
    # Re-read the list of runs: a manifest committed by anyone must never lose an artifact.
    for run in repo.run_ids():
        if not any(m.run == run for m in kept):
            referenced |= {a.key for a in repo.load_manifest(run).artifacts()}
    now = real_utcnow()
    for obj in repo.store.list(layout.DATA):
        if obj.key in referenced:
            continue
        if locking:
            retention = repo.store.stat(obj.key).retention
            if retention is not None and retention.until > now:
                result._locked(obj.size, retention.until)
                continue
            refused = _purge(repo, obj.key)
            if refused is not None:
                result._locked(*refused)
                continue
        else:
            repo.store.delete(obj.key)
        result.artifacts_deleted += 1
        result.bytes_freed += obj.size
    for obj in repo.store.list(DAMAGE):
        artifact = artifact_of_damage_key(obj.key)
        if artifact is not None and artifact not in referenced:  # its runs are gone: nothing to warn about
            (repo.store.purge if locking else repo.store.delete)(obj.key)
    repo.store.cleanup_incomplete(real_utcnow())  # the store's times are real ones


def _purge(repo: Repository, key: str) -> tuple[int, datetime] | None:
    """Delete every version of ``key``, which its retention no longer protects by our clock; None when
    done. A store that still refuses (its clock is behind ours, or a legal hold) while the object carries
    a retention keeps it: (size, date) to report as locked, not a failure. A refusal of an object without
    a retention is a permission problem, and is raised."""
    try:
        repo.store.purge(key)
        return None
    except RepositoryError as e:
        if isinstance(e, TransientStorageError):
            raise
        try:
            info = repo.store.stat(key)
        except ObjectNotFound:
            raise e from None
        if info.retention is None:
            raise
        log.warning("prune: the store refused to delete %s (locked until %s): kept (%s)",
                    key, iso(info.retention.until), e)
        return info.size, max(info.retention.until, real_utcnow())


def _count_locked_runs(repo: Repository, manifests: dict[str, Manifest], kept: list[Manifest],
                       result: PruneResult) -> None:
    """Add what the locked runs hold alone (their manifest, and artifacts no other kept run names) to the
    locked objects of ``result``, dated by each run's manifest lock."""
    policy_kept = {a.key for m in kept if m.run not in result.locked_runs for a in m.artifacts()}
    counted: set[str] = set()
    for run, until in result.locked_runs.items():
        result._locked(_size(repo, layout.manifest_key(run)), until)
        for art in manifests[run].artifacts():
            if art.key not in policy_kept and art.key not in counted:
                counted.add(art.key)
                result._locked(art.size, until)


def _size(repo: Repository, key: str) -> int:
    try:
        return repo.store.stat(key).size
    except ObjectNotFound:
        return 0
