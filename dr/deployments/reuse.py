"""May a backup reference the previous run's capture of a volume instead of reading it again?

One decision for every deployment (local homes, Kubernetes movers), so that none of them carries a
damaged or missing artifact forward. The previous item may be referenced again only when all of this
holds (docs/ARCHITECTURE.md, "How a backup runs"):

- the run is not ``--full``, and the previous item was captured (status ok, with archive and index);
- none of its artifacts is recorded damaged in the repository (``damage/``, written by ``jdr verify``);
- none was written before ``backup.full_every`` ago, counted from the run that first wrote it (so a
  volume that never changes is still read and stored afresh at least that often);
- each exists in the store with its recorded size: one stat per artifact, nothing read. A missing or
  shortened artifact found here is recorded damaged too, so that ``verify`` and other machines know;
- when the store locks objects (S3 Object Lock), each is locked at least as long as this run: its
  retention is extended here, before the run commits; an artifact whose lock cannot be extended is not
  referenced (the volume is read again). ``Repository.commit_manifest`` checks it once more.

Whether the volume itself is unchanged (same listing fingerprint, or no activity) is the caller's part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from dr.deployments.base import BackupContext
from dr.errors import JdrError, ObjectNotFound
from dr.model import Artifact, VolumeItem, run_time
from dr.repository.damage import record_damage
from dr.util.timefmt import iso, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReuseDecision:
    """``reusable``: the previous item may be referenced; otherwise ``reason`` says why not."""

    reusable: bool
    reason: str = ""


def decide_reuse(ctx: BackupContext, prev: VolumeItem | None, label: str = "") -> ReuseDecision:
    """Whether ``prev`` (the previous run's item of this volume) may be referenced by this run.

    Makes one stat per artifact when every other condition holds; raises only what the store raises for
    a stat that fails for another reason than a missing object (a transient error fails the volume).
    """
    if ctx.full:
        return ReuseDecision(False, "full backup requested")
    if prev is None or prev.status != "ok" or prev.archive is None or prev.index is None:
        return ReuseDecision(False, "no previous capture")
    arts = (prev.archive, prev.index)
    damaged = [a.key for a in arts if a.key in ctx.damaged]
    if damaged:
        _tell(label, f"the previous archive is recorded damaged ({', '.join(damaged)}); reading the volume again")
        return ReuseDecision(False, "recorded damaged")
    if ctx.reuse_since is not None:
        oldest = min(_written_at(a, prev, ctx.previous.run if ctx.previous else "") or ctx.reuse_since
                     for a in arts)
        if oldest < ctx.reuse_since:
            log.info("%s: the previous archive was written %s, before backup.full_every; reading the volume "
                     "again", label, iso(oldest))
            return ReuseDecision(False, "older than backup.full_every")
    for art in arts:
        problem = _stat_problem(ctx, art)
        if problem:
            _tell(label, f"the previous artifact {art.key} is {problem}; reading the volume again")
            record_damage(ctx.repo.store, art, problem, found_by="backup", found=utcnow(),
                          run=ctx.previous.run if ctx.previous else "", label=label)
            return ReuseDecision(False, problem)
    for art in arts:
        try:
            ctx.repo.ensure_retention(art.key, ctx.run)
        except JdrError as e:
            _tell(label, f"the retention of the previous artifact {art.key} could not be extended ({e}); "
                         "reading the volume again")
            return ReuseDecision(False, "retention not extended")
    return ReuseDecision(True)


def _written_at(art: Artifact, prev: VolumeItem, previous_run: str) -> datetime | None:
    """When the run that wrote ``art`` started (for manifests that do not name it: the run the item was
    reused from, else the previous run); None when nothing says."""
    origin = art.run or prev.reused_from or previous_run
    try:
        return run_time(origin) if origin else None
    except ValueError:
        return None


def _stat_problem(ctx: BackupContext, art: Artifact) -> str:
    try:
        size = ctx.repo.store.stat(art.key).size
    except ObjectNotFound:
        return "missing"
    if size != art.size:
        return f"{size} bytes long, {art.size} recorded"
    return ""


def _tell(label: str, message: str) -> None:
    log.warning("%s: %s", label or "volume", message)
