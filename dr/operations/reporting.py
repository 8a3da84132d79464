"""After a run: metrics (per-command textfile / Pushgateway group, per configuration) and webhook notifications.

Each command publishes only its own group of metrics (dr/metrics.py): ``jdr backup`` writes
``jdr_backup.prom`` (and pushes job ``jdr_backup``), ``jdr prune`` ``jdr_prune.prom``, ``jdr drill``
``jdr_drill.prom``; backup and prune also refresh ``jdr_repository.prom`` from the catalog. A command that
fails still publishes what it knows (its time and status), and says so by webhook.

Failures to report are logged and never change the outcome of the run they report on.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from dr.catalog import Catalog
from dr.metrics import CopyMetrics, Group, Metrics, PruneMetrics, push_job, textfile_name
from dr.notify import Event, EventKind, Webhook, notify_all
from dr.operations.observed import (
    RepositoryFacts,
    backup_metrics,
    failed_backup_metrics,
    try_repository_facts,
)
from dr.repository.repository import Repository
from dr.settings import Settings
from dr.util.timefmt import utcnow

if TYPE_CHECKING:
    from dr.operations.backup import BackupResult
    from dr.operations.copy import CopyResult
    from dr.operations.prune import PruneResult

log = logging.getLogger(__name__)


def textfile_dir(settings: Settings) -> Path | None:
    """Where the per-command textfiles go: ``metrics.textfile_dir``, else the directory of the older
    ``metrics.textfile`` setting; None when neither is set."""
    m = settings.metrics
    if m.textfile_dir:
        return Path(m.textfile_dir)
    if m.textfile:
        return Path(m.textfile).parent
    return None


def publish(settings: Settings, metrics: Metrics, group: Group) -> None:
    """Write ``group``'s samples to its own textfile and Pushgateway group (whichever are configured).

    A metric family the run has no sample of is kept as published before (textfile merge, Pushgateway
    POST): a run that could not read the repository does not erase the last success time. Counters are
    left out: in a file replaced by every run they would restart at each run."""
    where = textfile_dir(settings)
    if where is not None:
        path = where / textfile_name(group)
        try:
            metrics.write_textfile(path, [group], counters=False, merge=True)
        except OSError as e:
            log.warning("could not write metrics to %s: %s", path, e)
    if settings.metrics.pushgateway:
        metrics.push(settings.metrics.pushgateway, job=push_job(group), groups=[group], counters=False,
                     merge=True)


def webhooks(settings: Settings) -> list[Webhook]:
    n = settings.notify
    return [Webhook(n.webhook, kind=n.kind, on=tuple(n.on))] if n.webhook else []  # type: ignore[arg-type]


def notify(settings: Settings, kind: EventKind, run: str, status: str, summary: str,
           failures: list[str], counts: dict[str, int] | None = None) -> None:
    hooks = webhooks(settings)
    if hooks:
        notify_all(hooks, Event(kind=kind, run=run, status=status, summary=summary, counts=counts or {},
                                failures=failures, deployment=settings.deployment.kind))


def _publish_repository(settings: Settings, metrics: Metrics, facts: RepositoryFacts | None) -> None:
    if facts is not None:
        metrics.record_repository(facts.repository)
        publish(settings, metrics, "repository")


def after_backup(settings: Settings, repo: Repository, result: BackupResult,
                 metrics: Metrics | None = None, catalog: Catalog | None = None) -> None:
    """Metrics and webhook of a backup that returned a result (committed, or failed without a manifest)."""
    m = result.manifest
    metrics = metrics or Metrics()
    facts = try_repository_facts(repo, catalog)
    if m is not None and result.status != "failed":
        metrics.record_backup(backup_metrics(m, facts))
    else:
        started = m.started if m is not None else utcnow()
        finished = m.finished if m is not None else utcnow()
        metrics.record_backup(failed_backup_metrics(result.run, started, finished, facts))
    publish(settings, metrics, "backup")
    _publish_repository(settings, metrics, facts)
    failures = list(m.failures) if m is not None else [result.error or "failed"]
    summary = (f"{len(m.volumes)} volumes, {len(failures)} failures" if m is not None and result.status != "failed"
               else f"nothing was committed: {result.error}")
    notify(settings, "backup", result.run, result.status, summary, failures,
           {"volumes": len(m.volumes) if m else 0, "failures": len(failures)})


def backup_failed(settings: Settings, repo: Repository | None, error: Exception, started: datetime,
                  metrics: Metrics | None = None, catalog: Catalog | None = None) -> None:
    """A backup that raised before it had a result (lock held, repository unreachable …): its time and
    status ``failed`` are published, and a webhook says why."""
    metrics = metrics or Metrics()
    facts = try_repository_facts(repo, catalog)
    metrics.record_backup(failed_backup_metrics("", started, utcnow(), facts))
    publish(settings, metrics, "backup")
    _publish_repository(settings, metrics, facts)
    notify(settings, "backup", "", "failed", f"backup could not run: {error}", [str(error)])


def after_verify(settings: Settings, repo: Repository, metrics: Metrics | None = None,
                 catalog: Catalog | None = None) -> None:
    """The repository's metrics after a verify, whose damage records ``jdr_repository_damaged_artifacts``
    counts (docs/alerts.yaml: JdrRepositoryDamaged)."""
    _publish_repository(settings, metrics or Metrics(), try_repository_facts(repo, catalog))


def after_prune(settings: Settings, repo: Repository, result: PruneResult, started: datetime,
                metrics: Metrics | None = None, catalog: Catalog | None = None) -> None:
    """Metrics (with the measured duration) and webhook of a prune that ran."""
    metrics = metrics or Metrics()
    metrics.record_prune(PruneMetrics(started=started, finished=utcnow(), ok=True,
                                      runs_deleted=len(result.runs_deleted),
                                      runs_kept=sum(1 for d in result.decisions if d.keep),
                                      artifacts_deleted=result.artifacts_deleted,
                                      bytes_freed=result.bytes_freed,
                                      snapshots_deleted=result.snapshots_deleted))
    publish(settings, metrics, "prune")
    _publish_repository(settings, metrics, try_repository_facts(repo, catalog))
    notify(settings, "prune", "", "ok",
           f"deleted {len(result.runs_deleted)} runs and {result.artifacts_deleted} artifacts", [],
           {"runs_deleted": len(result.runs_deleted), "artifacts_deleted": result.artifacts_deleted})


def prune_failed(settings: Settings, error: Exception, started: datetime,
                 metrics: Metrics | None = None) -> None:
    metrics = metrics or Metrics()
    metrics.record_prune(PruneMetrics(started=started, finished=utcnow(), ok=False))
    publish(settings, metrics, "prune")
    notify(settings, "prune", "", "failed", f"prune could not run: {error}", [str(error)])


def after_copy(settings: Settings, result: CopyResult, missing: int | None,
               metrics: Metrics | None = None) -> None:
    """Metrics and webhook of a copy that ran (``missing``: runs the destination still lacks, if known)."""
    metrics = metrics or Metrics()
    status = result.status if result.status in ("complete", "partial") else "failed"
    metrics.record_copy(CopyMetrics(started=result.started, finished=result.finished or utcnow(),
                                    status=status,  # type: ignore[arg-type]
                                    runs_copied=len(result.copied), runs_failed=len(result.failed),
                                    bytes_copied=result.bytes_copied, missing=missing))
    publish(settings, metrics, "copy")
    failures = [f"{r.run}: {r.error}" for r in result.failed]
    if result.error and not any(result.error in f for f in failures):
        failures.append(result.error)
    notify(settings, "copy", "", "ok" if status == "complete" else status,
           f"copied {len(result.copied)} runs to {result.destination}"
           + (f"; {len(failures)} problems" if failures else ""), failures,
           {"runs_copied": len(result.copied), "runs_failed": len(result.failed)})


def copy_failed(settings: Settings, error: Exception, started: datetime,
                metrics: Metrics | None = None) -> None:
    metrics = metrics or Metrics()
    metrics.record_copy(CopyMetrics(started=started, finished=utcnow(), status="failed"))
    publish(settings, metrics, "copy")
    notify(settings, "copy", "", "failed", f"copy could not run: {error}", [str(error)])
