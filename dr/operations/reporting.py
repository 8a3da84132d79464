"""After a run: metrics (textfile / Pushgateway, per configuration) and webhook notifications.

Failures to report are logged and never change the outcome of the run they report on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dr.metrics import BackupMetrics, ItemMetrics, Metrics, PruneMetrics
from dr.model import Manifest
from dr.notify import Event, Webhook, notify_all
from dr.repository.repository import Repository
from dr.settings import Settings
from dr.util.timefmt import utcnow

if TYPE_CHECKING:
    from dr.operations.backup import BackupResult
    from dr.operations.prune import PruneResult

log = logging.getLogger(__name__)


def backup_metrics(m: Manifest, history: list[Manifest]) -> BackupMetrics:
    """Summarise a run for metrics; ``history`` (newest first, without ``m``) gives failure streaks."""
    items = []
    for v in m.volumes:
        streak = 0
        if v.status == "failed":
            streak = 1
            for old in history:
                prev = old.volume_for(v.user or "", v.server) if v.user is not None else None
                if prev is None or prev.status != "failed":
                    break
                streak += 1
        stored = sum(a.size for a in v.artifacts() if a.run == m.run)
        items.append(ItemMetrics(user=v.user if v.user is not None else v.label, server=v.server,
                                 status=v.status, bytes_read=v.bytes, bytes_stored=stored, files=v.files,
                                 seconds=v.seconds, consecutive_failures=streak))
    hub_stored = m.hub.db.size if m.hub and m.hub.db and m.hub.db.run == m.run else 0
    return BackupMetrics(
        run=m.run, started=m.started, finished=m.finished, status=m.status,
        bytes_read=sum(v.bytes for v in m.volumes),
        bytes_stored=sum(i.bytes_stored for i in items) + hub_stored,
        files=sum(v.files for v in m.volumes), items=items,
        hub_ok=(m.hub.status == "ok") if m.hub else None, hub_bytes_stored=hub_stored)


def publish(settings: Settings, metrics: Metrics) -> None:
    if settings.metrics.textfile:
        try:
            metrics.write_textfile(settings.metrics.textfile)
        except OSError as e:
            log.warning("could not write metrics to %s: %s", settings.metrics.textfile, e)
    if settings.metrics.pushgateway:
        metrics.push(settings.metrics.pushgateway, job="jdr")


def webhooks(settings: Settings) -> list[Webhook]:
    n = settings.notify
    return [Webhook(n.webhook, kind=n.kind, on=tuple(n.on))] if n.webhook else []  # type: ignore[arg-type]


def after_backup(settings: Settings, repo: Repository, result: BackupResult,
                 metrics: Metrics | None = None) -> None:
    m = result.manifest
    metrics = metrics or Metrics()
    if m is not None:
        history = []
        for run in repo.run_ids()[:10]:
            if run != m.run:
                history.append(repo.load_manifest(run))
        metrics.record_backup(backup_metrics(m, history))
    publish(settings, metrics)
    hooks = webhooks(settings)
    if hooks:
        failures = list(m.failures) if m is not None else [result.error or "failed"]
        summary = (f"{len(m.volumes)} volumes, {len(failures)} failures" if m is not None
                   else f"nothing was committed: {result.error}")
        notify_all(hooks, Event(kind="backup", run=result.run, status=result.status, summary=summary,
                                counts={"volumes": len(m.volumes) if m else 0, "failures": len(failures)},
                                failures=failures, deployment=settings.deployment.kind))


def after_prune(settings: Settings, repo: Repository, result: PruneResult,
                metrics: Metrics | None = None) -> None:
    metrics = metrics or Metrics()
    now = utcnow()
    metrics.record_prune(PruneMetrics(started=now, finished=now, ok=True,
                                      runs_deleted=len(result.runs_deleted),
                                      runs_kept=sum(1 for d in result.decisions if d.keep),
                                      artifacts_deleted=result.artifacts_deleted,
                                      bytes_freed=result.bytes_freed,
                                      snapshots_deleted=result.snapshots_deleted))
    publish(settings, metrics)
