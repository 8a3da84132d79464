"""``jdr verify`` under S3 Object Lock: is every object of a run locked at least as long as the run?

A run needs its manifest locked (that date is the run's: docs/FORMAT.md, "Object Lock") and every artifact
it names locked at least until the same date, because an artifact reused from an earlier run must not
become deletable while a newer run still names it. Found here, per object, with the date it needs:

- ``not locked``: no retention at all in a bucket with Object Lock (written by a jdr without Object Lock
  support, before the bucket was locked, or by a mover whose run never extended it);
- ``locked until X, run R needs Y``: shorter than a run that names it.

Each finding is a problem (exit 1): anyone holding delete permission could remove the object while a run
still needs it. ``--extend-locks`` (or :func:`extend_locks`) extends them; without it, the next steps say
how. A run whose own lock has already ended is a warning only: it is still kept by the retention policy
(the newest successful run is kept whatever its age), but no longer protected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dr.errors import JdrError, ObjectNotFound
from dr.model import Manifest
from dr.repository import layout
from dr.repository.repository import Repository
from dr.repository.store import Retention
from dr.util.timefmt import iso, real_utcnow


@dataclass(frozen=True)
class LockFinding:
    """An object locked shorter than the run that needs it (``has`` None: not locked at all)."""

    key: str
    run: str  # the run needing the longest lock of it
    needs: Retention
    has: datetime | None

    @property
    def problem(self) -> str:
        if self.has is None:
            return f"{self.key}: not locked (S3 Object Lock), run {self.run} needs it until {iso(self.needs.until)}"
        return (f"{self.key}: locked until {iso(self.has)}, shorter than run {self.run} needs "
                f"({iso(self.needs.until)})")

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "run": self.run, "needs_until": iso(self.needs.until),
                "locked_until": iso(self.has) if self.has else None}


@dataclass
class LockReport:
    findings: list[LockFinding]
    warnings: list[str]
    unchecked: list[str]


def check_locks(repo: Repository, manifests: list[Manifest]) -> LockReport:
    """Compare every object's retention with what the runs naming it need (see the module docstring)."""
    report = LockReport([], [], [])
    needs: dict[str, tuple[str, Retention]] = {}
    now = real_utcnow()
    for m in manifests:
        key = layout.manifest_key(m.run)
        try:
            own = repo.store.stat(key).retention
        except JdrError as e:
            report.unchecked.append(f"run {m.run}: the lock of its manifest could not be read: {e}")
            continue
        if own is None:
            # The run has no date of its own: it needs what the policy gives a run from now on.
            try:
                wanted = repo.run_retention(m.run)
            except JdrError as e:
                report.unchecked.append(f"run {m.run}: its manifest is not locked, and {e}")
                continue
            if wanted is not None:
                report.findings.append(LockFinding(key, m.run, wanted, None))
                needs_until = wanted
            else:
                continue
        else:
            needs_until = own
            if own.until <= now:
                report.warnings.append(f"run {m.run}: its S3 Object Lock ended {iso(own.until)}; it is still "
                                       "kept but can be deleted by anyone holding delete permission")
        for art in m.artifacts():
            prev = needs.get(art.key)
            if prev is None or prev[1].until < needs_until.until:
                needs[art.key] = (m.run, needs_until)
    for key, (run, wanted) in sorted(needs.items()):
        try:
            has = repo.store.stat(key).retention
        except ObjectNotFound:
            continue  # missing: the shallow check reports it as damaged
        except JdrError as e:
            report.unchecked.append(f"{key}: its lock could not be read: {e}")
            continue
        if has is None or has.until < wanted.until:
            report.findings.append(LockFinding(key, run, wanted, has.until if has else None))
    return report


def extend_locks(repo: Repository, findings: list[LockFinding]) -> list[str]:
    """Extend each finding's object to the date its run needs; returns the problems left (not extended)."""
    left: list[str] = []
    for f in findings:
        try:
            repo.store.set_retention(f.key, f.needs)
        except JdrError as e:
            left.append(f"{f.problem}; extending it failed: {e}")
    return left


def lock_next_step(repo: Repository, findings: list[LockFinding]) -> str:
    """The next step for objects locked too short."""
    f = findings[0]
    bucket = getattr(repo.store, "bucket", "BUCKET")
    prefix = getattr(repo.store, "prefix", "")
    s3_key = f"{prefix}/{f.key}" if prefix else f.key
    return (f"{len(findings)} object(s) are locked shorter than their runs need: run `jdr verify --extend-locks` "
            "to extend them (credentials need s3:PutObjectRetention), or by hand, e.g. `aws s3api "
            f"put-object-retention --bucket {bucket} --key {s3_key} --retention "
            f"'Mode={f.needs.mode},RetainUntilDate={iso(f.needs.until)}'`")
