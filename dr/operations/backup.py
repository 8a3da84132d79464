"""One backup run: lock, clean up dead runs, capture the hub, back up volumes, commit the manifest last."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dr
from dr.deployments.base import BackupContext, CapturedHub, Deployment, Volume
from dr.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    IntegrityError,
    JdrError,
    NotFoundError,
    UsageError,
)
from dr.model import METHODS, HubItem, Manifest, RunStatus, VolumeItem, new_run_id
from dr.operations.keys import check_backup_keys, reusable
from dr.policy.retention import Duration, parse_duration
from dr.repository import layout
from dr.repository.damage import damaged_keys
from dr.repository.repository import Repository
from dr.util.testhooks import pause_at
from dr.util.timefmt import iso, utcnow

log = logging.getLogger(__name__)

DEFAULT_FULL_EVERY = "30d"


@dataclass(frozen=True)
class BackupOptions:
    users: tuple[str, ...] = ()  # empty: every user
    method: str = "archive"
    full: bool = False
    dry_run: bool = False
    excludes: tuple[str, ...] = ()
    level: int = 3
    threads: int = 0
    parallel_volumes: int = 1  # volumes archived at once, by deployments that archive in-process
    secret_in_clear: bool = False
    #: ``backup.full_every``: no artifact written longer ago than this is referenced again (None: no bound).
    full_every: Duration | None = field(default_factory=lambda: parse_duration(DEFAULT_FULL_EVERY))


@dataclass
class BackupResult:
    run: str
    status: str  # complete, partial, failed, dry-run
    manifest: Manifest | None = None
    planned: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def exit_code(self) -> int:
        return {"complete": EXIT_OK, "dry-run": EXIT_OK, "partial": EXIT_PARTIAL}.get(self.status, EXIT_FAILED)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"run": self.run, "status": self.status,
                             "error": self.error}
        if self.manifest is not None:
            d["manifest"] = self.manifest.to_dict()
        if self.planned:
            d["planned"] = self.planned
        return d


def _after_newest_run(repo: Repository, now: Callable[[], datetime]) -> datetime:
    """The new run's start: now, or the next second when the newest committed run started in this same
    second. Run ids order runs by their second (``new_run_id``), so a second run in one second could sort
    before the first and be taken for the older one ("latest", the previous run, copies). With the real
    clock this waits for that second; an injected clock (simulations) is moved on instead."""
    started = now()
    newest = next(iter(repo.run_ids()), "")
    if newest[:16] != new_run_id(started)[:16]:
        return started
    nxt = started.replace(microsecond=0) + timedelta(seconds=1)
    if now is utcnow:
        time.sleep(max(0.0, (nxt - started).total_seconds()))
        return max(utcnow(), nxt)
    return nxt


def run_backup(repo: Repository, deployment: Deployment, opts: BackupOptions,
               progress: Callable[[int, int], None] | None = None,
               now: Callable[[], datetime] = utcnow) -> BackupResult:
    """Back up the hub and the selected users' volumes as one run.

    Unknown users and bad options raise UsageError before anything is written. Volumes that fail are
    recorded as failed items (the run is ``partial``); the manifest is committed last and only if the
    hub database or at least one volume was captured.
    """
    if opts.method not in METHODS:
        raise UsageError(f"--method {opts.method!r}: not one of {', '.join(METHODS)}")
    started = _after_newest_run(repo, now)
    run = new_run_id(started)
    check_backup_keys(repo)  # a wrong key is refused before anything is written (docs/FORMAT.md, "Keys")
    if opts.dry_run:
        return _dry_run(repo, deployment, opts, run)
    # S3 Object Lock: the run's retain-until date is fixed now, and a locked bucket without a lock length
    # (docs/FORMAT.md, "Object Lock") is refused (exit 2) before anything is written.
    repo.run_retention(run)
    with repo.lock("backup", run=run) as lock:
        check_backup_keys(repo, locked=True, now=now)
        previous = reusable(repo, _previous_manifest(repo))
        damaged = damaged_keys(repo.store)
        log.info("run %s: backing up %s to %s", run, deployment.kind, repo.url)
        hub, volumes = _capture_hub(repo, deployment, run, opts)
        ctx = BackupContext(repo=repo, run=run, full=opts.full, method=opts.method, excludes=opts.excludes,
                            level=opts.level, threads=opts.threads, parallel_volumes=opts.parallel_volumes,
                            previous=previous, progress=progress,
                            damaged=damaged, reuse_since=reuse_since(opts, started))
        items = list(deployment.backup_volumes(volumes, ctx))
        failures = [f"{i.label}: {i.error}" for i in items if i.status == "failed"]
        if hub.status != "ok":
            failures.insert(0, f"hub database: {hub.error}")
        captured = (hub.status == "ok") or any(i.status == "ok" for i in items)
        status: RunStatus = "complete" if not failures else "partial"
        manifest = Manifest(
            run=run, started=started, finished=now(), status=status,
            deployment=deployment.describe(), hub=hub, volumes=tuple(items), jdr_version=dr.__version__,
            options={"method": opts.method, "full": opts.full, "users": list(opts.users),
                     "excludes": list(opts.excludes)},
            failures=tuple(failures))
        if not captured:
            log.error("run %s captured nothing; no manifest is written", run)
            return BackupResult(run=run, status="failed", manifest=manifest,
                                error="; ".join(failures) or "nothing to back up")
        _refuse_damaged(manifest, damaged)
        pause_at("backup-commit")
        lock.ensure_held()  # a holder whose lock was broken or removed must not commit
        repo.commit_manifest(manifest)
        _write_report(repo, manifest)
        log.info("run %s committed: %s, %d volumes, %d failures", run, status, len(items), len(failures))
        return BackupResult(run=run, status=status, manifest=manifest)


def reuse_since(opts: BackupOptions, started: datetime) -> datetime | None:
    """Artifacts written by runs that started before this instant are not referenced again."""
    return opts.full_every.before(started, UTC) if opts.full_every is not None else None


def _refuse_damaged(manifest: Manifest, damaged: frozenset[str]) -> None:
    """The last word before commit: a run never names an artifact recorded damaged (the reuse decision,
    dr/deployments/reuse.py, already re-read those volumes; this guards every deployment adapter)."""
    bad = sorted(a.key for a in manifest.artifacts() if a.key in damaged)
    if bad:
        raise IntegrityError(f"refusing to commit run {manifest.run}: it would reference artifacts recorded "
                             f"damaged: {', '.join(bad)}", hint="run the backup again with --full")


def _capture_hub(repo: Repository, deployment: Deployment, run: str,
                 opts: BackupOptions) -> tuple[HubItem, list[Volume]]:
    """Capture the hub DB (and Secret); the DB also tells which users and volumes there are, and the
    ``--user`` names are checked against it before anything is stored (NotFoundError, exit 2)."""
    enc = repo.encrypted
    with _hub_database(deployment, repo, run, opts.level) as captured:
        db_file, info = captured.db_file, captured.info
        volumes = _select(deployment.volumes(info), opts.users)
        try:
            if captured.artifact is not None:  # the adapter stored it already (Kubernetes: a mover did)
                db_art = captured.artifact
            else:
                with repo.artifact_writer(layout.hub_db_key(run, enc, info.dump_format), run) as w:
                    _compress_file(db_file, w, opts.level)
                db_art = w.artifact
        except JdrError as e:
            return HubItem(db=None, status="failed", error=str(e)), volumes
        secret_art = None
        secret = deployment.hub_secret()
        if secret is not None:
            if enc or opts.secret_in_clear:
                with repo.artifact_writer(layout.hub_secret_key(run, enc), run, "identity") as sw:
                    sw.write(secret)
                secret_art = sw.artifact
            else:
                log.warning("the hub Secret is not stored: configure an encryption key (or set "
                            "encryption.secret_in_clear to store it unencrypted)")
        hub = HubItem(db=db_art, alembic_revision=info.revision, integrity=info.integrity,
                      users=tuple(info.users), secret=secret_art, db_bytes=info.size, db_kind=info.kind,
                      server_version=info.server_version, dump_format=info.dump_format)
    return hub, volumes


@contextlib.contextmanager
def _hub_database(deployment: Deployment, repo: Repository, run: str, level: int,
                  keep: bool = True) -> Iterator[CapturedHub]:
    """The hub DB through the adapter's ``capture_hub_database`` hook when it has one, else ``hub_database``."""
    capture = getattr(deployment, "capture_hub_database", None)
    if capture is not None:
        with capture(repo, run, level=level, keep=keep) as captured:
            yield captured
        return
    with deployment.hub_database() as (db_file, info):
        yield CapturedHub(db_file=db_file, info=info)


def _compress_file(path: Any, sink: Any, level: int) -> None:
    import zstandard

    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
    with open(path, "rb") as f, cctx.stream_writer(sink, closefd=False) as z:
        shutil.copyfileobj(f, z, 1 << 20)


def _select(volumes: list[Volume], users: Sequence[str]) -> list[Volume]:
    """The volumes of ``users`` (all, orphans included, when none are named); NotFoundError names any user
    the hub database does not have."""
    if not users:
        return volumes
    known = {v.user for v in volumes}
    missing = [u for u in users if u not in known]
    if missing:
        raise NotFoundError(f"unknown user {', '.join(map(repr, missing))}: not in the hub database",
                            hint="`jdr backup --dry-run` lists the users")
    return [v for v in volumes if v.user in users]


def _previous_manifest(repo: Repository) -> Manifest | None:
    """The newest committed run whose artifacts a new run may reference. With MAC keys configured, only
    a run they authenticate: a new run signs what it references, so it must never take over the claims
    of a forged or unsigned manifest (after MACs are turned on, the first run reads everything afresh)."""
    for run in repo.run_ids():
        m = repo.load_manifest(run)
        if m.authenticity not in ("", "verified"):  # "": no MAC key configured
            log.warning("run %s is not authenticated by the configured MAC key (%s): nothing of it is reused",
                        run, m.authenticity)
            continue
        if m.status in ("complete", "partial"):
            return m
    return None


def _dry_run(repo: Repository, deployment: Deployment, opts: BackupOptions, run: str) -> BackupResult:
    with _hub_database(deployment, repo, run, opts.level, keep=False) as captured:
        volumes = _select(deployment.volumes(captured.info), opts.users)
    planned = [{"user": v.user, "server": v.server, "key": v.key, "label": v.label, "source": v.source,
                "running": v.running} for v in volumes]
    return BackupResult(run=run, status="dry-run", planned=planned)


def _write_report(repo: Repository, manifest: Manifest) -> None:
    """A readable report beside the manifest (not needed for restore; failures here are only logged)."""
    try:
        repo.put_report(layout.report_key(manifest.run, "txt"), render_report(manifest).encode())
        summary = {"run": manifest.run, "status": manifest.status, "started": iso(manifest.started),
                   "finished": iso(manifest.finished), "failures": list(manifest.failures),
                   "volumes": len(manifest.volumes),
                   "bytes_read": sum(v.bytes for v in manifest.volumes),
                   "bytes_stored": sum(a.size for a in manifest.artifacts() if a.run == manifest.run)}
        repo.put_report(layout.report_key(manifest.run, "json"), json.dumps(summary, indent=1).encode())
    except JdrError as e:
        log.warning("could not store the report of run %s: %s", manifest.run, e)


def render_report(m: Manifest) -> str:
    lines = [f"jdr backup run {m.run}: {m.status.upper()}",
             f"  started {iso(m.started)}, finished {iso(m.finished)} "
             f"({(m.finished - m.started).total_seconds():.1f} s)",
             f"  deployment: {m.deployment.get('kind')}"]
    if m.hub is not None:
        if m.hub.db is not None:
            lines.append(f"  hub database: {m.hub.db_bytes} bytes, revision {m.hub.alembic_revision}, "
                         f"{len(m.hub.users)} users, integrity {m.hub.integrity}")
        else:
            lines.append(f"  hub database: FAILED {m.hub.error}")
    for v in m.volumes:
        if v.status == "ok":
            how = f"unchanged since {v.reused_from}" if v.reused_from else \
                f"{v.archive.size if v.archive else 0} bytes stored"
            lines.append(f"  {v.label}: ok, {v.files} files, {v.bytes} bytes ({how})")
        elif v.status == "absent":
            lines.append(f"  {v.label}: absent (no home {v.source.get('path', '')}; nothing to back up)")
        else:
            lines.append(f"  {v.label}: {v.status.upper()} {v.error or ''}")
        lines += [f"      warning: {w}" for w in v.warnings[:20]]
    return "\n".join(lines) + "\n"


def failed_items(manifest: Manifest) -> list[VolumeItem]:
    return [v for v in manifest.volumes if v.status == "failed"]
