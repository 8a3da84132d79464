"""``jdr drill``: restore a run into a scratch place, prove it is sound, measure RTO and RPO, keep the evidence.

The order of work (each step's findings go into a :class:`DrillReport`; a failed check is a finding, not
an exception):

1. remove what earlier drills left behind (scratch places marked as such whose drill is dead);
2. pick the run (default: latest) and, with ``users``, a sample of its volumes (seeded by the drill id, so
   successive drills look at different users);
3. in a fresh scratch place (:class:`dr.deployments.drill.DrillTarget`), restore the hub database (timed)
   and check it: ``PRAGMA integrity_check``, the schema revision against the installed JupyterHub, and the
   users against the run's manifest and volumes;
4. restore each selected volume (timed; every file's size and SHA-256 checked against the index, the
   artifact's own checksum at its end), count the files, check a sample of notebooks;
5. optionally start a real hub on the restored database and check that its API answers;
6. always remove the scratch place (unless ``keep``), then write ``drills/<drill>/report.{json,md,html}``
   into the repository, metrics, and a webhook event.

Exit codes: 0 passed, 1 ran and found failures, 3 could not run.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dr.deployments.drill import NOTEBOOK_SAMPLE, DrillTarget, ScratchDatabases
from dr.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    IntegrityError,
    Interrupted,
    JdrError,
    ObjectNotFound,
    TamperError,
)
from dr.hubdb import schema
from dr.hubdb.info import DbInfo
from dr.metrics import Metrics
from dr.model import Manifest, VolumeItem, new_run_id
from dr.notify import Event, notify_all
from dr.operations.drill_html import render_html, render_markdown
from dr.operations.drill_report import DrillReport, HistoryPoint, VolumeFinding, estimate_rto, history_point
from dr.operations.drill_sweep import dead_scratch_databases, lock_operation
from dr.operations.observed import drill_metrics, last_passed_drill
from dr.operations.reporting import publish, webhooks
from dr.operations.restore import fetch_hub_db
from dr.operations.verify import record_damaged_item
from dr.repository import layout
from dr.repository.repository import Repository
from dr.settings import Settings
from dr.util.timefmt import utcnow

log = logging.getLogger(__name__)

HISTORY_LIMIT = 40  # drills shown in the history chart


class DrillError(JdrError):
    """The drill could not run at all (no run to restore, no scratch place, repository unreachable)."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class DrillOptions:
    run: str | None = None  # run id, prefix or "latest"
    users: int = 0  # how many volumes to restore; 0: all
    keep: bool = False  # keep the scratch place afterwards
    start_hub: bool = False
    notebooks: int = NOTEBOOK_SAMPLE  # notebooks checked per volume
    hub_timeout: float = 90.0
    allow_unsigned: bool = False  # drill a run no configured MAC key authenticates (docs/SECURITY.md)


@dataclass
class DrillResult:
    report: DrillReport
    keys: list[str]  # where the report was written in the repository

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.report.ok else EXIT_PARTIAL

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "report_keys": self.keys}


def run_drill(repo: Repository, target: DrillTarget, opts: DrillOptions,
              now: Callable[[], datetime] = utcnow,
              on_step: Callable[[str], None] | None = None) -> DrillResult:
    """Run one drill (see the module docstring). Raises DrillError when it cannot run; otherwise every
    problem is in the returned report. The scratch place is removed whatever happens, unless ``keep``."""
    say = on_step or (lambda _m: None)
    started = now()
    drill = new_run_id(started)
    report = DrillReport(drill=drill, started=started, target_kind=target.kind)
    log.info("drill %s starting", drill)
    for leftover in target.leftovers():
        try:
            target.remove_leftover(leftover)
            report.leftovers_removed.append(leftover.where)
        except (JdrError, OSError) as e:
            report.notes.append(f"could not remove the leftover {leftover.where}: {e}")
    try:
        run = repo.resolve_run(opts.run)
        manifest = repo.load_manifest(run)
        repo.require_authentic(manifest, allow_unsigned=opts.allow_unsigned)
    except TamperError:
        raise
    except JdrError as e:
        if opts.run not in (None, "", "latest"):
            raise
        raise DrillError(f"no run to drill: {e}", hint="run `jdr backup` first") from e
    report.run, report.run_started = manifest.run, manifest.started
    if manifest.hub is None or manifest.hub.db is None:
        raise DrillError(f"run {manifest.run} holds no hub database; nothing to drill",
                         hint="drill a complete run with --run")
    if manifest.hub.db_kind != "sqlite":
        # only a drill of a server-database hub makes scratch databases, so only such a drill looks for
        # those of killed drills (a drill of an SQLite hub asks the database server nothing)
        _sweep_scratch_databases(repo, target, report, now())
    selected, restorable = _select(manifest, opts.users, drill)
    report.sample = {"requested": opts.users or "all", "restorable": len(restorable),
                     "sampled": len(selected) < len(restorable), "selected": [v.label for v in selected]}
    no_archive = [v.label for v in manifest.volumes if v.status == "ok" and v.archive is None]
    if no_archive:
        report.notes.append(f"{len(no_archive)} volumes have no archive in the run (snapshot method) and "
                            f"were not restored by this drill: {', '.join(no_archive[:10])}")
    with repo.lock(lock_operation(drill), manifest.run, exclusive=False):  # names the drill: drill_sweep
        try:
            try:
                report.scratch = target.prepare(drill)
            except (JdrError, OSError) as e:
                raise DrillError(f"cannot prepare the drill's scratch place: {e}") from e
            say(f"scratch place: {report.scratch}")
            _drill_in(repo, target, manifest, selected, opts, report, say)
        finally:
            report.kept = opts.keep
            try:
                target.cleanup(keep=opts.keep)
            except (JdrError, OSError) as e:
                report.fail(f"could not remove the scratch place {target.where}: {e}")
            if opts.keep:
                report.notes.append(f"scratch place kept at {target.where} (--keep): remove it yourself")
    total_bytes = sum(v.bytes for v in restorable)
    report.rto = estimate_rto(float(report.hub.get("seconds", 0.0)), [v.seconds for v in report.volumes],
                              sum(v.bytes for v in report.volumes), total_bytes, len(restorable))
    report.finished = now()
    keys = write_report(repo, report)
    log.info("drill %s %s: RPO %.0f s, RTO %.1f s (%s)", drill, "passed" if report.ok else "FAILED",
             report.rpo, report.rto.seconds, report.rto.method)
    return DrillResult(report, keys)


def _sweep_scratch_databases(repo: Repository, target: DrillTarget, report: DrillReport, now: datetime) -> None:
    """Drop the scratch databases of dead drills (dr.operations.drill_sweep); the report lists them."""
    if not isinstance(target, ScratchDatabases):
        return
    try:
        leftovers = dead_scratch_databases(repo, target.scratch_databases(), now)
    except (JdrError, OSError) as e:
        report.notes.append(f"could not look for earlier drills' scratch databases: {e}")
        return
    for leftover in leftovers:
        try:
            target.remove_leftover(leftover)
            report.leftovers_removed.append(leftover.where)
        except (JdrError, OSError) as e:
            report.notes.append(f"could not remove the leftover {leftover.where}: {e}")


def _select(manifest: Manifest, users: int, drill: str) -> tuple[list[VolumeItem], list[VolumeItem]]:
    """(volumes to restore, every restorable volume of the run)."""
    restorable = [v for v in manifest.volumes
                  if v.status == "ok" and v.archive is not None and v.index is not None]
    if users <= 0 or users >= len(restorable):
        return restorable, restorable
    picked = random.Random(drill).sample(restorable, users)  # a sample, not a secret
    order = {v.key: i for i, v in enumerate(restorable)}
    return sorted(picked, key=lambda v: order[v.key]), restorable


def _drill_in(repo: Repository, target: DrillTarget, manifest: Manifest, selected: list[VolumeItem],
              opts: DrillOptions, report: DrillReport, say: Callable[[str], None]) -> None:
    say(f"restoring the hub database of run {manifest.run}")
    info = _restore_hub(repo, target, manifest, report)
    _check_users(manifest, info, report)
    for item in selected:
        say(f"restoring {item.label}")
        finding = _restore_volume(repo, target, item, opts.notebooks)
        report.volumes.append(finding)
        for problem in finding.problems:
            report.fail(problem)
    if opts.start_hub and info is not None:
        say("starting a hub on the restored database")
        check = target.start_hub(opts.hub_timeout)
        report.hub_start = {"status": check.status, "note": check.note, "version": check.version}
        if check.status == "failed":
            report.fail(f"a hub started on the restored database did not work: {check.note}")
        elif check.status == "ok" and len(info.users) <= 200 and set(check.users) != set(info.users):
            report.fail(f"the started hub lists {len(check.users)} users, the database holds {len(info.users)}")
        elif check.status == "skipped":
            report.notes.append(f"hub start skipped: {check.note}")


def _restore_hub(repo: Repository, target: DrillTarget, manifest: Manifest,
                 report: DrillReport) -> DbInfo | None:
    assert manifest.hub is not None and manifest.hub.db is not None
    t0 = time.monotonic()
    try:
        info = target.restore_hub_db(lambda dest: fetch_hub_db(repo, manifest, dest))
    except Interrupted:
        raise
    except (JdrError, OSError) as e:
        report.hub = {"status": "failed", "seconds": round(time.monotonic() - t0, 3), "error": str(e)}
        report.fail(f"hub database: could not be restored: {e}")
        return None
    seconds = time.monotonic() - t0
    verdict = schema.check_revision(info.revision, schema.known_revisions(), schema.head_revision())
    report.hub = {"status": "ok", "seconds": round(seconds, 3), "bytes": info.size,
                  "integrity": info.integrity, "revision": info.revision,
                  "recorded_revision": manifest.hub.alembic_revision,
                  "schema": {"verdict": verdict.kind, "message": verdict.message}, "users": len(info.users)}
    if info.integrity != "ok":
        report.fail(f"hub database: PRAGMA integrity_check: {info.integrity}")
    if verdict.kind == "refuse":
        report.fail(f"hub database: {verdict.message}")
    elif verdict.kind == "warn":
        report.notes.append(verdict.message)
    if manifest.hub.alembic_revision and info.revision != manifest.hub.alembic_revision:
        report.fail(f"hub database: schema revision {info.revision}, the manifest recorded "
                    f"{manifest.hub.alembic_revision}")
    return info


def _check_users(manifest: Manifest, info: DbInfo | None, report: DrillReport) -> None:
    assert manifest.hub is not None
    run_users = sorted(manifest.hub.users)
    db_users = sorted(info.users) if info is not None else []
    missing: list[str] = []
    skipped: list[str] = []
    not_in_db: list[str] = []
    report.users = {"db": db_users, "run": run_users}
    if info is not None and set(db_users) != set(run_users):
        only_db = sorted(set(db_users) - set(run_users))
        only_run = sorted(set(run_users) - set(db_users))
        report.fail("hub database: its users differ from the run's manifest"
                    + (f"; only in the database: {', '.join(only_db)}" if only_db else "")
                    + (f"; only in the manifest: {', '.join(only_run)}" if only_run else ""))
    known = set(db_users) if info is not None else set(run_users)
    for user in sorted(known):
        item = manifest.volume_for(user)
        if item is None:
            missing.append(user)
            report.fail(f"user {user} is missing from the run: no volume was recorded for them")
        elif item.status == "failed":
            missing.append(user)
            report.fail(f"user {user} is missing from the run: their backup failed ({item.error or 'no reason'})")
        elif item.status == "skipped":
            skipped.append(user)
            report.notes.append(f"user {user}: skipped by the backup ({item.error or 'no volume'})")
        elif item.status == "absent":
            skipped.append(user)
            report.notes.append(f"user {user}: had no home when the run was made (absent)")
    for v in manifest.volumes:
        if v.user is not None and v.user not in known:
            not_in_db.append(v.label)
            report.fail(f"volume {v.label} belongs to no user of the restored hub database")
    report.users.update(missing_from_run=missing, skipped=skipped, not_in_db=not_in_db)


def _restore_volume(repo: Repository, target: DrillTarget, item: VolumeItem, notebooks: int) -> VolumeFinding:
    finding = VolumeFinding(label=item.label, user=item.user, server=item.server)
    t0 = time.monotonic()
    try:
        restored = target.restore_volume(repo, item)
    except Interrupted:
        raise
    except (JdrError, OSError) as e:
        finding.seconds = time.monotonic() - t0
        finding.status = "failed"
        finding.problems.append(f"volume {item.label}: restore failed: {e}")
        log.error("%s: restore failed: %s", item.label, e)
        if isinstance(e, IntegrityError):
            _record_damage(repo, item)
        return finding
    finding.seconds = time.monotonic() - t0
    finding.files, finding.bytes, finding.index_files = restored.files, restored.bytes, restored.index_files
    finding.target = restored.target
    check = target.verify_volume(item, restored, notebooks)
    finding.files_on_disk = check.files_on_disk
    finding.notebooks_checked, finding.notebooks_total = check.notebooks_checked, check.notebooks_total
    finding.validator = check.validator
    if check.problems:
        finding.status = "failed"
        finding.problems += [f"volume {item.label}: {p}" for p in check.problems]
    log.info("%s: restored %d files, %d bytes in %.2f s; %d notebooks checked (%s)", item.label,
             restored.files, restored.bytes, finding.seconds, check.notebooks_checked, check.validator)
    return finding


def _record_damage(repo: Repository, item: VolumeItem) -> None:
    """Record which of the item's artifacts is damaged, so that the next backup reads the volume again."""
    try:
        record_damaged_item(repo, item.archive.run if item.archive else "", item, found_by="drill")
    except JdrError as e:
        log.warning("%s: could not record the damage found: %s", item.label, e)


# --- evidence ------------------------------------------------------------------------------------------


def load_history(repo: Repository, limit: int = HISTORY_LIMIT) -> list[HistoryPoint]:
    """Earlier drills' chart points, from their report.json files in the repository (oldest first)."""
    keys = sorted(o.key for o in repo.store.list(layout.DRILLS) if o.key.endswith("/report.json"))
    points = []
    for key in keys[-limit:]:
        try:
            doc = json.loads(repo.get_report(key))
        except (ObjectNotFound, ValueError) as e:
            log.warning("skipping drill report %s: %s", key, e)
            continue
        point = history_point(doc) if isinstance(doc, dict) else None
        if point is not None:
            points.append(point)
    return points


def write_report(repo: Repository, report: DrillReport) -> list[str]:
    """Write ``drills/<drill>/report.json``, ``report.md`` and ``report.html``; returns their keys."""
    doc = report.to_dict()
    history = [p for p in load_history(repo) if p.drill != report.drill]
    point = history_point(doc)
    if point is not None:
        history.append(point)
    bodies = {
        "report.json": json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8"),
        "report.md": render_markdown(doc).encode("utf-8"),
        "report.html": render_html(doc, history).encode("utf-8"),
    }
    keys = []
    for name, body in bodies.items():
        key = layout.drill_key(report.drill, name)
        repo.put_report(key, body)
        keys.append(key)
    log.info("drill report written to %s/%s", repo.url, layout.drill_key(report.drill, ""))
    return keys


def after_drill(settings: Settings, report: DrillReport, metrics: Metrics | None = None,
                repo: Repository | None = None) -> None:
    """Metrics (the ``drill`` textfile / Pushgateway group) and the webhook event of a drill. When it failed,
    the last passed drill's time, RTO and RPO come from the repository's reports. Never fails the drill."""
    metrics = metrics or Metrics()
    previous = None
    if not report.ok and repo is not None:
        try:
            previous = last_passed_drill(repo)
        except (JdrError, OSError) as e:
            log.warning("metrics: cannot read earlier drill reports: %s", e)
    metrics.record_drill(drill_metrics(
        report.started, report.finished or utcnow(), report.ok, failures=len(report.failures),
        rto=report.rto.seconds if report.rto else None, rpo=report.rpo, run=report.run, previous=previous))
    publish(settings, metrics, "drill")
    hooks = webhooks(settings)
    if hooks:
        rto = f"{report.rto.seconds:.0f} s ({report.rto.method})" if report.rto else "unknown"
        summary = (f"drill {report.drill} of run {report.run} {'passed' if report.ok else 'FAILED'}: "
                   f"RTO {rto}, RPO {report.rpo:.0f} s")
        notify_all(hooks, Event(kind="drill", run=report.run, status="ok" if report.ok else "failed",
                                summary=summary,
                                counts={"volumes": len(report.volumes),
                                        "failed": sum(1 for v in report.volumes if v.status != "ok"),
                                        "failures": len(report.failures)},
                                failures=report.failures, deployment=settings.deployment.kind))


def drill_failed(settings: Settings, repo: Repository | None, error: Exception, started: datetime,
                 metrics: Metrics | None = None) -> None:
    """A drill that could not run at all (no run, lock held, repository unreachable): counted as a failed
    drill (``jdr_drill_failures`` 1), with the last passed drill from the repository when readable."""
    metrics = metrics or Metrics()
    previous = None
    if repo is not None:
        try:
            previous = last_passed_drill(repo)
        except (JdrError, OSError) as e:
            log.warning("metrics: cannot read earlier drill reports: %s", e)
    metrics.record_drill(drill_metrics(started, utcnow(), False, failures=1, rto=None, rpo=None, run="",
                                       previous=previous))
    publish(settings, metrics, "drill")
    hooks = webhooks(settings)
    if hooks:
        notify_all(hooks, Event(kind="drill", run="", status="failed", summary=f"drill could not run: {error}",
                                failures=[str(error)], deployment=settings.deployment.kind))


def scratch_parent(settings: Settings) -> Path | None:
    return Path(settings.drill.scratch) if settings.drill.scratch else None
