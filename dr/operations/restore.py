"""Restores: one user's volume, the hub, or everything (disaster recovery). Plan first, then act.

Safety rules carried out here, whatever the deployment: a user's running server is stopped (through
the Hub API) before their volume is touched, or the restore is refused; the hub database is checked
(integrity, schema revision) before the hub is stopped; every replaced thing is kept aside.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dr.deployments.base import Deployment, VolumeRestore
from dr.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    DeploymentError,
    HubApiError,
    JdrError,
    NotFoundError,
    SchemaError,
    UsageError,
)
from dr.hubapi import HubApi
from dr.hubdb import schema
from dr.hubdb.capture import inspect_database
from dr.hubdb.dumps import dump_info
from dr.hubdb.info import DbInfo
from dr.model import Artifact, Manifest, VolumeItem
from dr.operations.keys import check_run_keys
from dr.policy.restore_plan import (
    RestorePlan,
    VolumeStep,
    plan_full_restore,
    plan_hub_restore,
    plan_user_restore,
)
from dr.repository.artifacts import drain
from dr.repository.repository import Repository

log = logging.getLogger(__name__)

Confirm = Callable[[RestorePlan], bool]


@dataclass(frozen=True)
class RestoreOptions:
    run: str | None = None
    at: datetime | None = None
    paths: tuple[str, ...] = ()
    into: str | None = None
    as_user: str | None = None
    server: str = ""
    dry_run: bool = False
    force: bool = False  # restore although the server seems to run and no Hub API is configured
    keep_previous: bool = True
    include_secret: bool = True
    allow_unsigned: bool = False  # accept a run no configured MAC key authenticates (docs/SECURITY.md)
    replace_hub_db: bool = False  # a server hub DB (PostgreSQL/MySQL) that holds tables may be replaced
    concurrency: int = 4
    progress: Callable[[int, int], None] | None = None


@dataclass
class ItemOutcome:
    label: str
    status: str  # ok, failed, skipped
    target: str = ""
    files: int = 0
    bytes: int = 0
    previous: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RestoreResult:
    plan: RestorePlan
    status: str  # done, partial, failed, dry-run, cancelled
    items: list[ItemOutcome] = field(default_factory=list)
    hub: ItemOutcome | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"done": EXIT_OK, "dry-run": EXIT_OK, "partial": EXIT_PARTIAL,
                "cancelled": EXIT_FAILED}.get(self.status, EXIT_FAILED)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "plan": self.plan.to_dict(),
                "hub": self.hub.to_dict() if self.hub else None,
                "items": [i.to_dict() for i in self.items], "warnings": self.warnings}


def run_to_restore(repo: Repository, opts: RestoreOptions, user: str | None = None) -> Manifest:
    """The run to restore from, refused (TamperError, exit 3) unless a configured MAC key authenticates
    it (or ``--allow-unsigned`` accepts an unsigned one): checked before anything else is done."""
    run = repo.resolve_run(opts.run, opts.at)
    manifest = repo.load_manifest(run)
    latest_item = manifest.volume_for(user, opts.server) if user is not None else None
    if user is not None and opts.run in (None, "latest") and opts.at is None \
            and (latest_item is None or latest_item.status == "absent"):
        # `latest` for one user means the newest run that holds that user.
        for other in repo.run_ids():
            m = repo.load_manifest(other)
            item = m.volume_for(user, opts.server)
            if item is not None and item.status == "ok":
                manifest = m
                break
    repo.require_authentic(manifest, allow_unsigned=opts.allow_unsigned)
    return manifest


def restore_user(repo: Repository, deployment: Deployment, user: str, opts: RestoreOptions,
                 confirm: Confirm, hub_api: HubApi | None) -> RestoreResult:
    manifest = run_to_restore(repo, opts, user)
    plan = plan_user_restore(manifest, user, server=opts.server, as_user=opts.as_user, paths=opts.paths,
                             into=opts.into)
    step = plan.volumes[0]
    # Everything the operator typed is checked before anything happens: no server is stopped, nothing
    # is written, for a bad --as, --into or --path (exit 2).
    check_user_restore(repo, deployment, hub_api, step, opts)
    return restore_one_volume(
        repo, deployment, manifest, plan, opts, confirm,
        before=lambda: _stop_server(deployment, hub_api, step.target_user or user, step.target_server, opts.force))


def restore_one_volume(repo: Repository, deployment: Deployment, manifest: Manifest, plan: RestorePlan,
                       opts: RestoreOptions, confirm: Confirm,
                       before: Callable[[], None] | None = None) -> RestoreResult:
    """Carry out ``plan``, a plan of one volume already checked against the deployment: the run's keys are
    checked (nothing happens without them), then ``--dry-run`` stops, ``confirm(plan)`` may cancel, and
    under the repository's shared restore lock ``before()`` runs (e.g. stop the user's server) and the
    volume is restored. ``restore --user`` and ``restore --volume`` both end here."""
    check_run_keys(repo, manifest.run, _plan_artifacts(manifest, plan))
    if opts.dry_run:
        return RestoreResult(plan=plan, status="dry-run")
    if not confirm(plan):
        return RestoreResult(plan=plan, status="cancelled")
    with repo.lock("restore", exclusive=False):
        if before is not None:
            before()
        outcome = _restore_step(repo, deployment, plan.volumes[0], opts)
    return RestoreResult(plan=plan, status="done" if outcome.status == "ok" else "failed", items=[outcome])


def check_user_restore(repo: Repository, deployment: Deployment, hub_api: HubApi | None, step: VolumeStep,
                       opts: RestoreOptions) -> None:
    """Check a one-user restore against the run and the deployment, without changing anything.

    Raises NotFoundError (exit 2) for a ``--path`` glob that matches nothing in the run's index (as
    ``jdr ls`` does) and for an ``--as`` user the hub does not know; UsageError for a malformed glob; and
    whatever the deployment's own check (``check_volume_restore``, optional) raises: for a local hub, an
    unknown target user or home, an ``--into`` that exists already or lies on another file system.
    """
    item = step.item
    if step.paths and item.index is not None:
        _check_paths_match(repo, item, step.paths)
    target = step.target_user
    as_other = target is not None and target != item.user
    if as_other and hub_api is not None and hub_api.get_user(target or "") is None:
        raise NotFoundError(f"--as {target!r}: JupyterHub has no such user",
                            hint="check the name (it is case-sensitive)")
    check = getattr(deployment, "check_volume_restore", None)
    if check is not None:
        check(_volume_request(step, opts))


def _check_paths_match(repo: Repository, item: VolumeItem, globs: tuple[str, ...]) -> None:
    from dr.archive.globs import path_matcher
    from dr.archive.index import read_index

    assert item.index is not None
    try:
        matchers = {g: path_matcher([g]) for g in globs}
    except ValueError as e:
        raise UsageError(f"--path: {e}") from e
    unmatched = set(globs)
    with repo.open_artifact(item.index) as src:
        for entry in read_index(src):
            if unmatched:
                unmatched -= {g for g in unmatched if matchers[g](entry)}
        drain(src)
    if unmatched:
        missing = [g for g in globs if g in unmatched]
        raise NotFoundError(f"--path: nothing matches {', '.join(repr(g) for g in missing)} in "
                            f"{item.label}'s volume in run {item.archive.run if item.archive else '?'}",
                            hint=f"`jdr ls RUN --user {item.user}` lists the files of the run")


def restore_hub(repo: Repository, deployment: Deployment, opts: RestoreOptions,
                confirm: Confirm) -> RestoreResult:
    manifest = run_to_restore(repo, opts)
    plan = plan_hub_restore(manifest, include_secret=opts.include_secret and deployment.kind != "local")
    check_run_keys(repo, manifest.run, _plan_artifacts(manifest, plan))
    if opts.dry_run:
        return RestoreResult(plan=plan, status="dry-run")
    if not confirm(plan):
        return RestoreResult(plan=plan, status="cancelled")
    with repo.lock("restore", exclusive=False):
        hub = _restore_hub(repo, deployment, manifest, plan, replace=opts.replace_hub_db)
    return RestoreResult(plan=plan, status="done", hub=hub)


def restore_all(repo: Repository, deployment: Deployment, opts: RestoreOptions, confirm: Confirm,
                hub_api: HubApi | None) -> RestoreResult:
    """Disaster recovery: the hub first (stopped while volumes are restored), then every volume."""
    manifest = run_to_restore(repo, opts)
    plan = plan_full_restore(manifest, include_secret=opts.include_secret and deployment.kind != "local")
    check_run_keys(repo, manifest.run, _plan_artifacts(manifest, plan))
    if opts.dry_run:
        return RestoreResult(plan=plan, status="dry-run", warnings=list(plan.warnings))
    if not confirm(plan):
        return RestoreResult(plan=plan, status="cancelled")
    items: list[ItemOutcome] = []
    with repo.lock("restore", exclusive=False):
        # Servers are stopped while the hub still runs (its API does it); a restore never writes into a
        # volume that a running server has mounted.
        for step in plan.volumes:
            if step.target_user is not None:
                _stop_server_for_dr(deployment, hub_api, step.target_user, step.target_server, opts.force)
        hub = _restore_hub(repo, deployment, manifest, plan, start=False, replace=opts.replace_hub_db)
        # With the hub stopped no server can be started; running ones are stopped by the deployment.
        try:
            # Adapters that restore volumes independently (Kubernetes: one mover pod each) say how many
            # may run at once; the others restore one after the other.
            workers = max(1, int(getattr(deployment, "restore_concurrency", 1)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jdr-restore") as pool:
                items = list(pool.map(lambda step: _restore_step(repo, deployment, step, opts), plan.volumes))
        finally:
            deployment.start_hub()
    failed = [i for i in items if i.status != "ok"]
    # The hub (and Secret) came back whatever the volumes did: a failed volume leaves a partial recovery.
    status = "done" if not failed else "partial"
    warnings = list(plan.warnings)
    if failed:
        done = "the hub database" + (" and the hub Secret" if plan.hub_secret else "")
        warnings.append(f"partial recovery: {done} restored, {len(items) - len(failed)} of {len(items)} volumes "
                        f"restored; left: {', '.join(i.label for i in failed)}. Re-run `jdr restore --all --run "
                        f"{manifest.run} --yes` to finish: it is safe and continues (restored volumes are restored "
                        "again idempotently, interrupted ones completed)")
    return RestoreResult(plan=plan, status=status, hub=hub, items=items, warnings=warnings)


def _plan_artifacts(manifest: Manifest, plan: RestorePlan) -> list[Artifact]:
    """The artifacts a restore plan reads (to check, before acting, that a configured key opens them)."""
    arts: list[Artifact] = []
    if plan.hub and manifest.hub is not None:
        arts += [a for a in (manifest.hub.db, manifest.hub.secret if plan.hub_secret else None) if a]
    for step in plan.volumes:
        arts += step.item.artifacts()
    return arts


def _stop_server_for_dr(deployment: Deployment, hub_api: HubApi | None, user: str, server: str,
                        force: bool) -> None:
    """As :func:`_stop_server`, but the hub may be what is broken: when its API fails, fall back to what
    the deployment itself can see."""
    try:
        _stop_server(deployment, hub_api, user, server, force)
    except HubApiError as e:
        log.warning("could not stop %s's server through the Hub API (%s); checking the deployment", user, e)
        _stop_server(deployment, None, user, server, force)


def _stop_server(deployment: Deployment, hub_api: HubApi | None, user: str, server: str,
                 force: bool) -> None:
    if hub_api is not None:
        log.info("stopping the server of %s through the Hub API", user)
        hub_api.stop_server(user, server)
        return
    try:
        running = deployment.server_running(user, server)
    except DeploymentError:
        if not force:
            raise
        log.warning("cannot tell whether %s's server is running; restoring anyway (--force)", user)
        return
    if running:
        if force:
            log.warning("%s's server seems to be running; restoring anyway (--force)", user)
            return
        evidence = getattr(deployment, "running_evidence", None)  # where the adapter learned it
        said = evidence(user, server) if evidence else f"the hub database says {user}'s server is running"
        raise DeploymentError(
            f"{said}, and no hub_api is configured to stop it",
            hint="stop the server (or configure hub_api), or pass --force if it is really stopped")


def _restore_step(repo: Repository, deployment: Deployment, step: VolumeStep,
                  opts: RestoreOptions) -> ItemOutcome:
    req = _volume_request(step, opts)
    try:
        res = deployment.restore_volume(req, repo)
    except JdrError as e:
        log.error("%s: restore failed: %s", step.item.label, e)
        if isinstance(e, UsageError):
            raise
        return ItemOutcome(label=step.item.label, status="failed", error=str(e))
    except OSError as e:  # an error of the file system no layer below translated: a result, not a crash
        error = os_error_text(e)
        log.error("%s: restore failed: %s", step.item.label, error)
        return ItemOutcome(label=step.item.label, status="failed", error=error)
    log.info("%s: restored %d files into %s", step.item.label, res.files, res.target)
    return ItemOutcome(label=step.item.label, status="ok", target=res.target, files=res.files,
                       bytes=res.bytes, previous=res.previous)


def _volume_request(step: VolumeStep, opts: RestoreOptions) -> VolumeRestore:
    return VolumeRestore(item=step.item, target_user=step.target_user, target_server=step.target_server,
                         paths=step.paths, into=step.into, keep_previous=opts.keep_previous, progress=opts.progress)


def os_error_text(e: OSError) -> str:
    """An OSError as one line naming the file and, for the usual suspects, what it means."""
    where = f": {os.fsdecode(e.filename)}" if e.filename is not None else ""
    meaning = {errno.ENAMETOOLONG: " (a name longer than this file system allows)",
               errno.EXDEV: " (source and destination are on different file systems)",
               errno.ENOSPC: " (the file system is full)",
               errno.EDQUOT: " (the disk quota is exhausted)"}.get(e.errno or 0, "")
    return f"{e.strerror or e}{meaning}{where}"


def fetch_hub_db(repo: Repository, manifest: Manifest, dest: Path) -> DbInfo:
    """Download and decompress the run's hub DB to ``dest``; check integrity (an SQLite file), or that the
    dump is complete (PostgreSQL/MySQL, described from the manifest). Raises on any mismatch."""
    assert manifest.hub is not None and manifest.hub.db is not None
    repo.download_decompressed(manifest.hub.db, dest)
    if manifest.hub.dump_format != "sqlite":
        return dump_info(dest, manifest.hub)
    return inspect_database(dest)


def check_schema(info: DbInfo) -> list[str]:
    """Refuse a DB the configured hub cannot run (where that can be known); else return warnings."""
    verdict = schema.check_revision(info.revision, schema.known_revisions(), schema.head_revision())
    if verdict.kind == "refuse":
        raise SchemaError(verdict.message, hint="restore with a JupyterHub at least as new as the one "
                                                "that wrote this database")
    return [] if verdict.kind == "ok" else [verdict.message]


def _restore_hub(repo: Repository, deployment: Deployment, manifest: Manifest, plan: RestorePlan,
                 start: bool = True, replace: bool = False) -> ItemOutcome:
    with tempfile.TemporaryDirectory(prefix="jdr-hub-restore-") as tmp:
        db_file = Path(tmp) / "jupyterhub.sqlite"
        info = fetch_hub_db(repo, manifest, db_file)
        for w in check_schema(info):
            log.warning("%s", w)
        # Decide before acting: an adapter that can refuse this database (a server DB of another kind, or
        # one that holds tables without --replace-hub-db) does so now, with the hub still running.
        prepare = getattr(deployment, "prepare_hub_restore", None)
        if prepare is not None:
            prepare(info, replace=replace)
        secret: bytes | None = None
        if plan.hub_secret and manifest.hub is not None and manifest.hub.secret is not None:
            with repo.open_artifact(manifest.hub.secret) as s:
                secret = s.read()
                drain(s)
        deployment.stop_hub()
        try:
            if secret is not None:
                deployment.restore_hub_secret(secret)
            restore_from = getattr(deployment, "restore_hub_database_from", None)
            if restore_from is not None:  # the adapter puts the artifact back itself (Kubernetes: a mover)
                previous = restore_from(repo, manifest)
            else:
                previous = deployment.restore_hub_database(db_file, info)
        finally:
            if start:
                deployment.start_hub()
    log.info("hub database restored from run %s (previous kept at %s)", manifest.run, previous or "-")
    return ItemOutcome(label="hub", status="ok", target="hub database", bytes=info.size,
                       previous=previous or None)
