"""``jdr verify``: are the runs' artifacts all there and intact?

Shallow: every artifact of the run exists with its recorded size and its bytes hash to the recorded
SHA-256. Deep (``--deep``): also decompress every archive and check every file against the index, and
restore the hub DB to a temporary file and run ``PRAGMA integrity_check`` on it.

What it finds damaged (missing, another size, another SHA-256, content not matching the index) is
recorded in the repository (:mod:`dr.repository.damage`), so that the next backup, on any machine, reads
those volumes again instead of referencing the damaged archives. Records of artifacts found intact again,
or (when every run is checked) named by no run any more, are removed. The result ends with the next steps
for the administrator. Problems that say nothing about the artifact (the store unreachable, no key) are
reported but recorded nowhere.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from dr.archive.index import load_index
from dr.archive.verify import verify_archive
from dr.errors import EXIT_OK, EXIT_PARTIAL, IntegrityError, JdrError, ObjectNotFound
from dr.model import Artifact, Manifest, VolumeItem
from dr.operations.restore import fetch_hub_db
from dr.operations.verify_lock import LockFinding, check_locks, extend_locks, lock_next_step
from dr.repository.artifacts import drain
from dr.repository.damage import clear_damage, damaged_keys, record_damage
from dr.repository.repository import Repository
from dr.util.timefmt import utcnow

log = logging.getLogger(__name__)

HUB_LABEL = "hub database"


@dataclass(frozen=True)
class Damage:
    """One artifact found damaged, as one run names it."""

    run: str
    label: str  # "alice", "alice index", "hub database", "hub secret"
    user: str | None  # whose volume (None: the hub)
    artifact: Artifact
    problem: str

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "label": self.label, "user": self.user, "key": self.artifact.key,
                "problem": self.problem}


@dataclass
class VerifyResult:
    runs: list[str]
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    deep: bool = False
    warnings: list[str] = field(default_factory=list)  # do not change the exit code
    damaged: list[Damage] = field(default_factory=list)  # also listed in ``problems``
    intact: set[str] = field(default_factory=set)  # artifact keys checked and found good
    referenced: set[str] = field(default_factory=set)  # artifact keys the verified runs name
    cleared: list[str] = field(default_factory=list)  # damage records removed
    unchecked: int = 0  # problems that say nothing about the artifacts (unreachable, no key, unreadable manifest)
    next_steps: list[str] = field(default_factory=list)
    #: Objects locked shorter than their runs need (S3 Object Lock; also listed in ``problems``).
    lock_findings: list[LockFinding] = field(default_factory=list)
    locks_extended: int = 0
    lock_hint: str = ""
    # Runs no configured MAC key authenticates: {"run", "authenticity", "key"} (docs/SECURITY.md).
    unverified: list[dict[str, str]] = field(default_factory=list)
    refused: int = 0  # of those, how many are problems (not accepted by --allow-unsigned)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_PARTIAL

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "checked": self.checked, "problems": self.problems, "deep": self.deep,
                "ok": self.ok, "warnings": self.warnings, "damaged": [d.to_dict() for d in self.damaged],
                "cleared": self.cleared, "next_steps": self.next_steps, "unverified": self.unverified,
                "locks": {"short": [f.to_dict() for f in self.lock_findings], "extended": self.locks_extended}}


def verify_runs(repo: Repository, run_ref: str | None, deep: bool,
                on_item: Callable[[str], None] | None = None, allow_unsigned: bool = False,
                extend: bool = False) -> VerifyResult:
    """Verify one run (``run_ref``) or, with None, every run. Problems are collected, not raised;
    damage found is recorded in the repository and the next steps are in the result.

    With MAC keys configured, a run whose manifest they do not authenticate is a problem and its
    artifacts are not checked (a forged manifest's claims would only plant false damage records);
    ``allow_unsigned`` turns an unsigned run (or one signed by a key not configured) into a warning and
    checks it like the others. A manifest contradicted by its MAC is always a problem.

    Under S3 Object Lock, objects locked shorter than their runs need are problems too
    (dr/operations/verify_lock.py); ``extend`` extends them (what could not be extended stays a problem)."""
    runs = [repo.resolve_run(run_ref)] if run_ref else repo.run_ids()
    result = VerifyResult(runs=runs, deep=deep)
    seen: set[str] = set()
    every_manifest_read = True
    read: list[Manifest] = []
    for run in runs:
        try:
            manifest = repo.load_manifest(run)
        except JdrError as e:
            _unchecked(result, f"run {run}: {e}")
            every_manifest_read = False
            continue
        if not _authentic(repo, manifest, result, allow_unsigned):
            every_manifest_read = False  # its artifacts are unknown: keep every damage record
            continue
        read.append(manifest)
        result.referenced.update(a.key for a in manifest.artifacts())
        _verify_manifest(repo, manifest, deep, result, seen, on_item)
    _verify_locks(repo, read, result, extend)
    result.warnings += exposure_warnings(repo)
    update_damage_records(repo, result, every_run=run_ref is None and every_manifest_read)
    result.next_steps = next_steps(result)
    return result


def _verify_locks(repo: Repository, manifests: list[Manifest], result: VerifyResult, extend: bool) -> None:
    try:
        if not repo.object_lock:
            return
    except JdrError as e:
        _unchecked(result, f"S3 Object Lock: {e}")
        return
    report = check_locks(repo, manifests)
    result.warnings += report.warnings
    for problem in report.unchecked:
        _unchecked(result, problem)
    if extend and report.findings:
        left = extend_locks(repo, report.findings)
        result.locks_extended = len(report.findings) - len(left)
        result.problems += left
        if left:
            result.lock_findings = report.findings
    else:
        result.lock_findings = report.findings
        result.problems += [f.problem for f in report.findings]
    if result.lock_findings:
        result.lock_hint = lock_next_step(repo, result.lock_findings)


def _authentic(repo: Repository, m: Manifest, result: VerifyResult, allow_unsigned: bool) -> bool:
    """Whether ``m`` may be checked (and trusted); records in ``result`` why not."""
    if m.authenticity in ("", "verified"):  # "": no MAC key configured, nothing to check with
        return True
    result.unverified.append({"run": m.run, "authenticity": m.authenticity, "key": m.mac_key})
    try:
        repo.require_authentic(m, allow_unsigned=allow_unsigned)
    except JdrError as e:
        result.problems.append(str(e))
        result.refused += 1
        return False
    result.warnings.append(f"run {m.run}: not authenticated by a configured MAC key ({m.authenticity}); "
                           "checked anyway (--allow-unsigned)")
    return True


def exposure_warnings(repo: Repository) -> list[str]:
    """A warning when a file:// repository is readable or writable by other users than jdr's."""
    exposed = getattr(repo.store, "exposed", None)
    if exposed is None:  # S3: access is the bucket policy's business
        return []
    count, examples = exposed()
    if not count:
        return []
    return [f"the repository is readable or writable by other users: {count} directories and files have "
            f"group or other permissions (e.g. {', '.join(examples)}); it holds every home and the hub "
            f"database: chmod -R go-rwx {getattr(repo.store, 'root', repo.url)}"]


def _verify_manifest(repo: Repository, m: Manifest, deep: bool, result: VerifyResult, seen: set[str],
                     on_item: Callable[[str], None] | None) -> None:
    if m.hub is not None and m.hub.db is not None:
        if on_item:
            on_item(f"{m.run} {HUB_LABEL}")
        if deep and m.hub.db.key not in seen:
            _deep_hub(repo, m, m.hub.db, result)
            seen.add(m.hub.db.key)
        else:
            _shallow(repo, m.run, HUB_LABEL, None, m.hub.db, result, seen)
        if m.hub.secret is not None:
            _shallow(repo, m.run, "hub secret", None, m.hub.secret, result, seen)
    for item in m.volumes:
        if item.status != "ok" or item.archive is None or item.index is None:
            continue
        if on_item:
            on_item(f"{m.run} {item.label}")
        if deep and item.archive.key not in seen:
            _deep_volume(repo, m.run, item, item.archive, item.index, result, seen)
        else:
            _shallow(repo, m.run, item.label, item.user, item.archive, result, seen)
            _shallow(repo, m.run, f"{item.label} index", item.user, item.index, result, seen)


def _deep_hub(repo: Repository, m: Manifest, db: Artifact, result: VerifyResult) -> None:
    result.checked += 1
    with tempfile.TemporaryDirectory(prefix="jdr-verify-") as tmp:
        try:
            info = fetch_hub_db(repo, m, Path(tmp) / "hub.sqlite")
        except (IntegrityError, ObjectNotFound, zstandard.ZstdError) as e:
            _damaged(result, m.run, HUB_LABEL, None, db, _problem(e))
            return
        except JdrError as e:
            _unchecked(result, f"run {m.run} {HUB_LABEL}: {e}")
            return
    if info.integrity != "ok":
        _damaged(result, m.run, HUB_LABEL, None, db, f"integrity_check: {info.integrity}")
    else:
        result.intact.add(db.key)


def _deep_volume(repo: Repository, run: str, item: VolumeItem, archive: Artifact, index_art: Artifact,
                 result: VerifyResult, seen: set[str]) -> None:
    result.checked += 2
    seen.update((archive.key, index_art.key))
    try:
        with repo.open_artifact(index_art) as src:
            index = load_index(src)
            drain(src)
    except (IntegrityError, ObjectNotFound, zstandard.ZstdError) as e:
        _damaged(result, run, f"{item.label} index", item.user, index_art, _problem(e))
        seen.discard(archive.key)
        result.checked -= 1
        _shallow(repo, run, item.label, item.user, archive, result, seen)  # still learn about the archive
        return
    except JdrError as e:
        _unchecked(result, f"run {run} {item.label}: {e}")
        return
    result.intact.add(index_art.key)
    try:
        with repo.open_artifact(archive) as src:
            report = verify_archive(src, index)
            drain(src)
    except (IntegrityError, ObjectNotFound, zstandard.ZstdError) as e:
        _damaged(result, run, item.label, item.user, archive, _problem(e))
        return
    except JdrError as e:
        _unchecked(result, f"run {run} {item.label}: {e}")
        return
    if report.problems:
        _damaged(result, run, item.label, item.user, archive, report.problems[0])
        result.problems += [f"run {run} {item.label}: {p}" for p in report.problems[1:]]
    else:
        result.intact.add(archive.key)


def _shallow(repo: Repository, run: str, label: str, user: str | None, art: Artifact, result: VerifyResult,
             seen: set[str]) -> None:
    if art.key in seen:
        return
    seen.add(art.key)
    result.checked += 1
    try:
        repo.verify_artifact(art)
    except (IntegrityError, ObjectNotFound) as e:
        _damaged(result, run, label, user, art, _problem(e))
    except JdrError as e:
        _unchecked(result, f"run {run} {label}: {e}")
    else:
        result.intact.add(art.key)


def record_damaged_item(repo: Repository, run: str, item: VolumeItem, found_by: str) -> list[Damage]:
    """For an operation that failed to read ``item`` (a drill, a restore): check its artifacts' sizes and
    SHA-256 (as a shallow verify does) and record those found damaged, so that the next backup reads the
    volume again. Returns what was recorded; raises what the store raises for another reason."""
    result = VerifyResult(runs=[run])
    seen: set[str] = set()
    for art, label in ((item.archive, item.label), (item.index, f"{item.label} index")):
        if art is not None:
            _shallow(repo, run, label, item.user, art, result, seen)
    now = utcnow()
    for d in result.damaged:
        record_damage(repo.store, d.artifact, d.problem, found_by=found_by, found=now, run=run, label=d.label)
    return result.damaged


def _problem(e: BaseException) -> str:
    if isinstance(e, ObjectNotFound):
        return "missing"
    if isinstance(e, zstandard.ZstdError):
        return f"corrupt compressed data ({e})"
    return str(e)


def _damaged(result: VerifyResult, run: str, label: str, user: str | None, art: Artifact, problem: str) -> None:
    result.damaged.append(Damage(run=run, label=label, user=user, artifact=art, problem=problem))
    result.problems.append(f"run {run} {label}: DAMAGED: {problem}")


def _unchecked(result: VerifyResult, problem: str) -> None:
    result.unchecked += 1
    result.problems.append(problem)


def update_damage_records(repo: Repository, result: VerifyResult, every_run: bool) -> None:
    """Record what was found damaged; remove records of artifacts found intact and, when ``every_run``
    was verified, of artifacts no run names. A store that refuses the writes is a problem in the result."""
    by = "verify --deep" if result.deep else "verify"
    try:
        recorded = damaged_keys(repo.store)
        now = utcnow()
        for d in result.damaged:
            if d.artifact.key not in recorded:
                record_damage(repo.store, d.artifact, d.problem, found_by=by, found=now, run=d.run,
                              label=d.label)
        for key in sorted(recorded):
            if key in result.intact or (every_run and key not in result.referenced):
                if not clear_damage(repo.store, key):
                    continue  # refused (the backup role's keys): the record stays, said in the log
                result.cleared.append(key)
                log.info("removed the damage record of %s (%s)", key,
                         "found intact" if key in result.intact else "no run names it")
    except JdrError as e:
        _unchecked(result, f"could not record the damage found in the repository: {e}")


def next_steps(result: VerifyResult) -> list[str]:
    """What the administrator should do now, in order (empty when all is well)."""
    steps: list[str] = []
    volumes = sorted({d.user for d in result.damaged if d.user is not None})
    if volumes:
        steps.append(f"run `jdr backup`: it reads the volumes of {', '.join(volumes)} again and stores fresh "
                     "archives (artifacts recorded damaged are never referenced again)")
    affected = sorted({d.run for d in result.damaged}, reverse=True)
    if affected:
        steps.append(f"run(s) {', '.join(affected)} name damaged artifacts and cannot restore them: restore "
                     "from another run (after the backup, the newest); `jdr prune` drops them when retention "
                     "allows")
    if any(d.user is None for d in result.damaged):
        steps.append("the hub database (or Secret) of some runs is damaged: every backup captures it afresh; "
                     "restore the hub from a run verified intact (`jdr restore --hub --run RUN`)")
    if result.lock_hint:
        steps.append(result.lock_hint)
    if result.refused:
        steps.append("some runs are not authenticated by the configured MAC key (see the problems above): do "
                     "not restore them; if they were not made by jdr with this key, someone else can write to "
                     "the repository — find out who (docs/SECURITY.md). Runs made before MACs were configured "
                     "are accepted with --allow-unsigned")
    if result.unchecked:
        steps.append("some artifacts could not be checked (see the problems above: storage unreachable, "
                     "a missing key …): fix that, then run `jdr verify` again")
    return steps
