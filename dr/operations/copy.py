"""``jdr copy``: replicate runs to a second repository, so that the loss of one bucket or account is
survivable (README.md, "A second copy"; cronjobs/README.md for the CronJob).

What it promises:

- **Incremental.** Only runs the destination lacks are copied, newest first (after a long outage the
  latest backup reaches safety first); of those, only the artifacts the destination lacks. A run names
  artifacts under earlier runs' prefixes (an unchanged volume is referenced, not stored again): they are
  copied by key, once.
- **Artifacts before the manifest.** A run's manifest is written at the destination only after every
  artifact it names is there at its recorded size, so the destination never holds a run whose artifacts are
  missing. A killed copy leaves at most artifacts without a manifest (invisible, like a killed backup's);
  the next copy finds them there and does not send them again.
- **Verified.** Every byte sent is hashed on the way (SHA-256, while streaming, in bounded memory) and
  compared with the manifest's record *before* the upload is committed: bytes that do not match (a damaged
  source object) are discarded, never stored as good. The transfer itself is covered by the store (S3:
  the per-request checksum botocore sends and the server checks; a file store fsyncs), and the size of
  each committed object is checked with a HEAD/stat. The destination is not read back: that would double
  the traffic (and the egress bill of another provider) to guard against a store that acknowledges a
  checksummed write and then keeps other bytes — what ``jdr verify`` run on the copy is for. An object
  that a committed copy left at the destination is therefore taken as verified when its size matches.
- **Byte for byte.** Manifests, ``config.json`` (recipients, and anything else the format records, such as
  a manifest MAC's parameters) and artifacts are copied as stored, never re-serialised: the copy needs no
  encryption key, and what authenticates a run at the source authenticates it at the destination.
- **Damage is not copied as good.** An artifact that the source's damage records (dr/repository/damage.py)
  name, or that fails its checksum while it is read, makes its run fail (the copy goes on with other
  runs; exit 1); a newly found one is recorded at the source, so that the next backup stores the volume
  afresh. An artifact already safe at the destination needs no source at all.
- **Never deletes** at the destination: runs that prune removed at the source stay in the copy until a
  prune runs on the copy itself (an attacker who deletes the source cannot delete the copy through it).
- **Locked where the destination locks.** When the destination bucket has S3 Object Lock enabled
  (docs/FORMAT.md, "Object Lock"), every artifact and the manifest of a copied run are written with a
  retention, as a backup writes them: the lock policy is the repository's (``repository.object_lock_mode``,
  ``object_lock_days`` or the retention policy: the copy keeps the same runs), and the date is fixed once
  per copy, at its start (real time plus the policy's days, like a backup's first write; a run's recorded
  start is another machine's clock and, for an old run, long past). An artifact already at the destination
  (sent by an earlier copy, or shared with a run copied before) has its lock extended to that date before
  the manifest is written; if it cannot be, the run fails (exit 1) and its manifest is not written, so no
  copied run names an artifact that can be deleted before the run. ``config.json``, locks and reports get
  no retention. A destination without Object Lock is written as before; one with Object Lock and no lock
  length to use (an unlimited retention policy, no ``object_lock_days``) is refused before anything is
  written (exit 2).

Locks: the source's shared lock (like verify), then the destination's exclusive lock (like a backup).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from dr.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    IntegrityError,
    JdrError,
    ObjectNotFound,
    RepositoryError,
    UsageError,
)
from dr.model import Artifact, Manifest, is_run_id
from dr.policy.object_lock import ObjectLockPolicy
from dr.repository import layout
from dr.repository.damage import damaged_keys, record_damage
from dr.repository.lock import RepositoryLock
from dr.repository.repository import REPO_FORMAT, Repository
from dr.repository.store import ObjectInfo, Retention, Store
from dr.util.testhooks import pause_at
from dr.util.timefmt import iso, real_utcnow, utcnow

log = logging.getLogger(__name__)

CHUNK = 1 << 20
RunStatus = Literal["copied", "failed", "not-attempted"]


@dataclass(frozen=True)
class CopyOptions:
    runs: tuple[str, ...] = ()  # run ids or prefixes ("latest" too); empty: every run
    dry_run: bool = False


@dataclass
class RunCopy:
    """What happened to one run."""

    run: str
    status: RunStatus = "not-attempted"
    artifacts_copied: int = 0
    artifacts_present: int = 0  # already at the destination: not sent again
    bytes_copied: int = 0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "status": self.status, "artifacts_copied": self.artifacts_copied,
                "artifacts_present": self.artifacts_present, "bytes_copied": self.bytes_copied,
                "error": self.error}


@dataclass
class CopyResult:
    source: str
    destination: str
    started: datetime
    finished: datetime | None = None
    dry_run: bool = False
    config: str = ""  # "created", "updated", "unchanged" ("" in a dry run)
    planned: list[str] = field(default_factory=list)  # runs to copy, in order
    already: int = 0  # runs the destination already had (of those asked for)
    runs: list[RunCopy] = field(default_factory=list)
    error: str = ""  # what stopped the copy (storage unreachable, lock lost …)
    error_kind: str = ""

    @property
    def copied(self) -> list[str]:
        return [r.run for r in self.runs if r.status == "copied"]

    @property
    def failed(self) -> list[RunCopy]:
        return [r for r in self.runs if r.status == "failed"]

    @property
    def bytes_copied(self) -> int:
        return sum(r.bytes_copied for r in self.runs)

    @property
    def status(self) -> str:
        if self.dry_run:
            return "dry-run"
        if not self.error and not self.failed:
            return "complete"
        # Stopped before copying anything: nothing could be done (3). Runs that could not be copied for
        # their own damage, the others being there, leave a copy as complete as it can be: partial (1).
        return "failed" if self.error and not self.copied else "partial"

    @property
    def exit_code(self) -> int:
        return {"complete": EXIT_OK, "dry-run": EXIT_OK, "partial": EXIT_PARTIAL}.get(self.status, EXIT_FAILED)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "source": self.source, "destination": self.destination,
                "started": iso(self.started), "finished": iso(self.finished) if self.finished else None,
                "config": self.config, "planned": self.planned, "already_present": self.already,
                "runs_copied": len(self.copied), "runs_failed": len(self.failed),
                "bytes_copied": self.bytes_copied, "runs": [r.to_dict() for r in self.runs],
                "error": self.error, "error_kind": self.error_kind, "exit_code": self.exit_code}


# --- deciding -------------------------------------------------------------------------------------------


def plan_copy(source_runs: Iterable[str], destination_runs: Iterable[str],
              wanted: Sequence[str] = ()) -> tuple[list[str], int]:
    """The runs to copy, newest first, and how many of those wanted the destination already has.

    ``wanted``: run ids (already resolved at the source); empty means every source run. Pure."""
    have = set(destination_runs)
    pool = sorted(set(wanted) if wanted else set(source_runs), reverse=True)
    todo = [r for r in pool if r not in have]
    return todo, len(pool) - len(todo)


def check_compatible(source_config: dict[str, Any], destination_config: dict[str, Any], where: str) -> None:
    """Raise unless ``destination_config`` is a copy of the repository ``source_config`` describes."""
    if destination_config.get("format") != REPO_FORMAT:
        raise RepositoryError(f"{where} holds something that is not a jdr repository",
                              hint="choose an empty place (bucket prefix, directory) for the copy")
    if destination_config.get("id") != source_config.get("id"):
        raise UsageError(
            f"{where} holds another jdr repository (id {destination_config.get('id')}), not a copy of this "
            f"one (id {source_config.get('id')})",
            hint="choose an empty place for the copy: copies of two repositories must not be mixed")
    if bool(destination_config.get("encrypted")) != bool(source_config.get("encrypted")):
        raise RepositoryError(f"{where} disagrees with the source about encryption: not a faithful copy")


# --- acting -----------------------------------------------------------------------------------------------


def _run_ids(store: Store) -> list[str]:
    ids = [r for o in store.list(layout.RUNS) if (r := layout.run_of_manifest_key(o.key))]
    return [r for r in ids if is_run_id(r)]


def carry_config(source_raw: bytes, destination: Store) -> str:
    """Put the source's ``config.json`` at the destination, byte for byte, the first time; afterwards
    check it is a copy of the same repository and bring it up to date (recipients rotated at the source).
    Returns ``created``, ``updated`` or ``unchanged``. Call under the destination's exclusive lock."""
    try:
        source_config = json.loads(source_raw)
    except ValueError as e:
        raise RepositoryError("the source's config.json is not valid JSON") from e
    try:
        current = destination.get(layout.CONFIG)
    except ObjectNotFound:
        destination.put(layout.CONFIG, source_raw)
        log.info("copy: created the repository %s (id %s)", destination.url, source_config.get("id"))
        return "created"
    try:
        destination_config = json.loads(current)
    except ValueError as e:
        raise RepositoryError(f"{destination.url}/{layout.CONFIG} is not valid JSON") from e
    check_compatible(source_config, destination_config, destination.url)
    if current == source_raw:
        return "unchanged"
    destination.put(layout.CONFIG, source_raw)
    log.info("copy: brought %s/%s up to date with the source", destination.url, layout.CONFIG)
    return "updated"


def copy_artifact(source: Store, destination: Store, artifact: Artifact,
                  retention: Retention | None = None) -> tuple[int, ObjectInfo]:
    """Stream one artifact from ``source`` to ``destination`` (locked with ``retention``, if given), hashing
    on the way; commit the upload only if size and SHA-256 are the manifest's. Raises IntegrityError
    (nothing committed) if they are not, ObjectNotFound if the source has no such object. Returns the bytes
    sent and the destination's stat of the committed object."""
    sha = hashlib.sha256()
    size = 0
    writer = destination.open_writer(artifact.key, retention)
    try:
        with source.open_reader(artifact.key) as src:
            while chunk := src.read(CHUNK):
                size += len(chunk)
                if size > artifact.size:
                    raise IntegrityError(f"artifact {artifact.key} is larger at the source than recorded "
                                         f"({artifact.size} bytes)")
                sha.update(chunk)
                writer.write(chunk)
                pause_at("copy-artifact", size)
        if size != artifact.size:
            raise IntegrityError(f"artifact {artifact.key} is truncated at the source: {size} of "
                                 f"{artifact.size} bytes")
        if sha.hexdigest() != artifact.sha256:
            raise IntegrityError(f"artifact {artifact.key} at the source does not match its recorded SHA-256")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    info = destination.stat(artifact.key)
    if info.size != artifact.size:
        raise RepositoryError(f"{destination.url} kept {info.size} bytes of {artifact.key}, "
                              f"{artifact.size} were sent")
    return size, info


def _present(destination: Store, artifact: Artifact) -> ObjectInfo | None:
    """The destination's stat of ``artifact`` if it is there at its recorded size."""
    try:
        info = destination.stat(artifact.key)
    except ObjectNotFound:
        return None
    return info if info.size == artifact.size else None


def ensure_locked(destination: Store, key: str, info: ObjectInfo, wanted: Retention | None) -> None:
    """Extend the lock of ``key`` (``info``: its stat) to ``wanted`` when it ends sooner; never shortens.
    Nothing to do when ``wanted`` is None (the destination does not lock). Raises what the store raises."""
    if wanted is None or (info.retention is not None and info.retention.until >= wanted.until):
        return
    # An object locked in the other mode keeps its mode (S3 refuses COMPLIANCE -> GOVERNANCE).
    mode = info.retention.mode if info.retention is not None else wanted.mode
    destination.set_retention(key, Retention(mode, wanted.until))
    log.debug("copy: extended the retention of %s to %s", key, iso(wanted.until))


def copy_retention(destination: Store, policy: ObjectLockPolicy) -> Retention | None:
    """The retention of everything a copy starting now writes to ``destination`` (see the module
    docstring): None when the destination does not lock. ConfigError when it does and ``policy`` has no
    lock length."""
    if not destination.object_lock_enabled():
        return None
    return Retention(policy.mode, policy.until(real_utcnow()))


class _Copier:
    def __init__(self, source: Repository, destination: Store, source_lock: RepositoryLock,
                 destination_lock: RepositoryLock, on_run: Callable[[RunCopy], None] | None,
                 retention: Retention | None = None) -> None:
        self.src = source
        self.retention = retention  # what every object of a copied run is locked with (None: no lock)
        self.dst = destination
        self.slock = source_lock
        self.dlock = destination_lock
        self.on_run = on_run
        self.damaged = damaged_keys(source.store)
        # Artifact keys known to be at the destination, verified and locked until ``retention``.
        self.safe: set[str] = set()

    def copy_run(self, rc: RunCopy) -> None:
        """Copy one run; a problem with the run's own data fails it (``rc.error``), storage and lock
        errors propagate (they stop the whole copy)."""
        try:
            raw = self.src.store.get(layout.manifest_key(rc.run))
            manifest = Manifest.from_dict(json.loads(raw))
            if manifest.run != rc.run:
                raise IntegrityError(f"the manifest of run {rc.run} names run {manifest.run}")
            artifacts = manifest.artifacts()
            bad = [a.key for a in artifacts if not a.key.startswith(layout.DATA)]
            if bad:
                raise IntegrityError(f"the manifest of run {rc.run} names objects outside data/: {bad[0]}")
        except ObjectNotFound:
            self.slock.ensure_held()
            rc.status, rc.error = "failed", f"run {rc.run} vanished from the source while copying (pruned?)"
            return
        except (ValueError, KeyError, TypeError, IntegrityError) as e:
            rc.status, rc.error = "failed", f"the manifest of run {rc.run} is unreadable: {e}"
            return
        for art in artifacts:
            if art.key in self.safe:
                rc.artifacts_present += 1
                continue
            if (info := _present(self.dst, art)) is not None:
                if not self._locked(rc, art, info):
                    return
                self.safe.add(art.key)
                rc.artifacts_present += 1
                continue
            if art.key in self.damaged:
                rc.status = "failed"
                rc.error = (f"artifact {art.key} is recorded damaged at the source (`jdr verify`); not copied "
                            "as good — the next backup stores that volume afresh")
                return
            try:
                sent, info = copy_artifact(self.src.store, self.dst, art, self.retention)
                rc.bytes_copied += sent
            except ObjectNotFound:
                self.slock.ensure_held()  # a prune after our lock was broken is no damage
                self._damaged(rc, art, "missing")
                return
            except IntegrityError as e:
                self._damaged(rc, art, e.message)
                return
            # A store may commit an upload without the lock asked for (moto drops it on multipart uploads).
            if not self._locked(rc, art, info):
                return
            self.safe.add(art.key)
            rc.artifacts_copied += 1
        self.dlock.ensure_held()
        pause_at("copy-commit")
        self.dst.put(layout.manifest_key(rc.run), raw, self.retention)  # byte for byte: a MAC stays valid
        rc.status = "copied"
        log.info("copy: run %s copied (%d artifacts sent, %d already there, %d bytes)", rc.run,
                 rc.artifacts_copied, rc.artifacts_present, rc.bytes_copied)
        self._copy_reports(rc.run)

    def _locked(self, rc: RunCopy, art: Artifact, info: ObjectInfo) -> bool:
        """Make sure ``art`` at the destination is locked at least until the copy's date; False (the run
        failed: its manifest must not be written) when the store will not lock it that long."""
        try:
            ensure_locked(self.dst, art.key, info, self.retention)
        except JdrError as e:
            self.dlock.ensure_held()  # a lost lock stops the copy, as elsewhere
            rc.status = "failed"
            rc.error = (f"artifact {art.key} could not be locked at the destination as long as run {rc.run} "
                        f"needs (S3 Object Lock): {e.message}; the run's manifest is not written")
            return False
        return True

    def _damaged(self, rc: RunCopy, art: Artifact, problem: str) -> None:
        rc.status = "failed"
        rc.error = f"artifact {art.key} is damaged at the source ({problem}); not copied"
        self.damaged = self.damaged | {art.key}
        try:
            record_damage(self.src.store, art, problem, found_by="copy", found=utcnow(), run=rc.run)
        except RepositoryError as e:
            log.warning("could not record the damage of %s at the source: %s", art.key, e)

    def _copy_reports(self, run: str) -> None:
        """The run's readable reports, if the source has them (for people; a failure is only logged)."""
        for ext in ("txt", "json"):
            key = layout.report_key(run, ext)
            try:
                self.dst.put(key, self.src.store.get(key))
            except ObjectNotFound:
                continue
            except RepositoryError as e:
                log.warning("copy: could not copy the report %s: %s", key, e)


def copy_runs(source: Repository, destination: Store, opts: CopyOptions,
              on_run: Callable[[RunCopy], None] | None = None,
              lock_policy: ObjectLockPolicy | None = None) -> CopyResult:
    """Copy the runs ``opts`` names (every run by default) that ``destination`` lacks.

    ``lock_policy``: how long copied runs stay locked when the destination has S3 Object Lock (default:
    the source repository's policy, i.e. ``repository.object_lock_*`` and the retention policy).

    Raises (nothing copied) when the source cannot be read or a lock cannot be taken; storage errors
    met later stop the copy and are reported in the result (what was copied before stays, complete)."""
    result = CopyResult(source=source.url, destination=destination.url, started=utcnow(), dry_run=opts.dry_run)
    if destination.url == source.url and getattr(destination, "endpoint", None) == getattr(source.store,
                                                                                         "endpoint", None):
        raise UsageError(f"the copy's destination {destination.url} is the repository itself",
                         hint="set copy.to (or --to) to a second bucket, provider or disk")
    with source.lock("copy", exclusive=False) as slock:
        wanted = tuple(dict.fromkeys(source.resolve_run(r) for r in opts.runs))
        source_raw = source.store.get(layout.CONFIG)
        # Before anything is written (a dry run too): a locked destination without a lock length is a
        # configuration error.
        retention = copy_retention(destination, lock_policy or source.lock_policy)
        if opts.dry_run:
            try:
                check_compatible(json.loads(source_raw), json.loads(destination.get(layout.CONFIG)),
                                 destination.url)
                have = _run_ids(destination)
            except ObjectNotFound:
                have = []
            result.planned, result.already = plan_copy(source.run_ids(), have, wanted)
            result.finished = utcnow()
            return result
        dlock = RepositoryLock(destination, "exclusive", "copy", stale_after=source.stale_after,
                               refresh_every=source.refresh_every)
        with dlock:
            result.config = carry_config(source_raw, destination)
            # Uploads a killed copy left behind (invisible; they would cost storage until aborted). Not worth
            # failing the copy for: credentials without s3:ListBucketMultipartUploads leave them to a lifecycle rule.
            try:
                removed = destination.cleanup_incomplete(real_utcnow())
            except RepositoryError as e:
                log.warning("copy: could not look for incomplete uploads at %s: %s", destination.url, e)
                removed = 0
            if removed:
                log.warning("copy: discarded %d incomplete uploads left at %s", removed, destination.url)
            result.planned, result.already = plan_copy(source.run_ids(), _run_ids(destination), wanted)
            copier = _Copier(source, destination, slock, dlock, on_run, retention)
            for run in result.planned:
                rc = RunCopy(run)
                result.runs.append(rc)
                try:
                    copier.copy_run(rc)
                except JdrError as e:
                    # The destination (or the source) became unreachable, a lock was lost …: nothing more
                    # can be done now; this run has no manifest at the destination.
                    rc.status, rc.error = "failed", e.message
                    result.error, result.error_kind = e.message, type(e).__name__
                    log.error("copy stopped at run %s: %s", run, e.message)
                    break
                finally:
                    if on_run is not None:
                        on_run(rc)
                if rc.status == "failed":
                    log.error("copy: run %s not copied: %s", run, rc.error)
    result.finished = utcnow()
    return result
