"""Prometheus metrics for backups, prunes, drills and the worker, in a registry of their own.

Conventions (https://prometheus.io/docs/practices/naming/):

- Values that describe *the last run* are gauges, named ``jdr_<what>_last_…`` (``jdr_backup_last_read_bytes``,
  ``jdr_backup_last_duration_seconds``). They mean the same whether they come from a long-running worker or
  from a one-shot run that pushes to a Pushgateway or writes a node_exporter textfile, so alerts should use
  them.
- Cumulative amounts are counters ending in ``_total`` (``jdr_backup_read_bytes_total``). They only add up
  in a long-running process (``jdr worker``); in a one-shot run they count that run alone. Use ``rate()`` on
  them, never absolute values.
- Times are Unix timestamps in seconds (``…_timestamp_seconds``), sizes in bytes (``…_bytes``).
- Per-volume series carry the labels ``user`` (the raw JupyterHub username, or ``pvc:<name>`` for a volume
  that maps to no user) and ``server`` (the named server, ``""`` for the default one).

A run counts as a success when its status is ``complete``; a ``partial`` run updates the per-volume
success times of the volumes that did succeed, so one failing user neither hides nor blocks the others.

Every metric, with its type, is listed in :data:`METRIC_NAMES`; :data:`ALERT_RULES` holds example
Prometheus alerting rules built on them (no successful backup in 26 h, a user failing twice in a row, a drill
overdue or failing, a worker skipping runs).
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    push_to_gateway,
)
from prometheus_client.exposition import basic_auth_handler, default_handler

from dr import __version__

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST  # what render() produces


@dataclass(frozen=True)
class ItemMetrics:
    """One volume's part of a backup run."""

    user: str  # raw username, or "pvc:<name>" for a volume without a user
    server: str = ""
    status: Literal["ok", "failed", "skipped", "absent"] = "ok"
    bytes_read: int = 0
    bytes_stored: int = 0  # bytes newly written to the repository (0 when the archive was reused)
    files: int = 0
    seconds: float = 0.0
    # Failures in a row including this run, when the caller knows them from earlier manifests (one-shot
    # runs); None lets the Metrics object count them itself, which only works in a long-running worker.
    consecutive_failures: int | None = None


@dataclass(frozen=True)
class BackupMetrics:
    """A backup run, summarised for metrics."""

    run: str
    started: datetime
    finished: datetime
    status: Literal["complete", "partial", "failed"]
    bytes_read: int = 0
    bytes_stored: int = 0
    files: int = 0
    items: Sequence[ItemMetrics] = field(default_factory=tuple)
    hub_ok: bool | None = None  # None when the run did not capture the hub
    hub_bytes_stored: int = 0

    @property
    def failures(self) -> int:
        return sum(1 for i in self.items if i.status == "failed") + (1 if self.hub_ok is False else 0)


@dataclass(frozen=True)
class PruneMetrics:
    started: datetime
    finished: datetime
    ok: bool
    runs_deleted: int = 0
    runs_kept: int = 0
    artifacts_deleted: int = 0
    bytes_freed: int = 0
    snapshots_deleted: int = 0


@dataclass(frozen=True)
class DrillMetrics:
    started: datetime
    finished: datetime
    ok: bool
    rto_seconds: float  # time to restore the run and have it verified
    rpo_seconds: float  # age of the restored run's data at the time of the drill
    failures: int = 0  # checks that failed
    run: str = ""


# name -> type, for documentation and for tests that check every name is exposed.
METRIC_NAMES: dict[str, str] = {
    "jdr_build_info": "gauge",
    "jdr_backup_last_run_timestamp_seconds": "gauge",
    "jdr_backup_last_success_timestamp_seconds": "gauge",
    "jdr_backup_last_duration_seconds": "gauge",
    "jdr_backup_last_read_bytes": "gauge",
    "jdr_backup_last_stored_bytes": "gauge",
    "jdr_backup_last_files": "gauge",
    "jdr_backup_last_failures": "gauge",
    "jdr_backup_last_status": "gauge",
    "jdr_backup_runs_total": "counter",
    "jdr_backup_read_bytes_total": "counter",
    "jdr_backup_stored_bytes_total": "counter",
    "jdr_backup_failures_total": "counter",
    "jdr_hub_last_success_timestamp_seconds": "gauge",
    "jdr_hub_last_stored_bytes": "gauge",
    "jdr_volume_last_success_timestamp_seconds": "gauge",
    "jdr_volume_last_read_bytes": "gauge",
    "jdr_volume_last_stored_bytes": "gauge",
    "jdr_volume_last_files": "gauge",
    "jdr_volume_last_duration_seconds": "gauge",
    "jdr_volume_consecutive_failures": "gauge",
    "jdr_volume_failures_total": "counter",
    "jdr_repository_size_bytes": "gauge",
    "jdr_repository_runs": "gauge",
    "jdr_prune_last_run_timestamp_seconds": "gauge",
    "jdr_prune_last_success_timestamp_seconds": "gauge",
    "jdr_prune_last_duration_seconds": "gauge",
    "jdr_prune_runs_deleted_total": "counter",
    "jdr_prune_artifacts_deleted_total": "counter",
    "jdr_prune_snapshots_deleted_total": "counter",
    "jdr_prune_freed_bytes_total": "counter",
    "jdr_drill_rto_seconds": "gauge",
    "jdr_drill_rpo_seconds": "gauge",
    "jdr_drill_last_run_timestamp_seconds": "gauge",
    "jdr_drill_last_success_timestamp_seconds": "gauge",
    "jdr_drill_failures": "gauge",
    "jdr_drill_runs_total": "counter",
    "jdr_worker_job_runs_total": "counter",
    "jdr_worker_skipped_runs_total": "counter",
    "jdr_worker_job_last_exit_code": "gauge",
    "jdr_worker_job_last_duration_seconds": "gauge",
    "jdr_worker_job_last_run_timestamp_seconds": "gauge",
}

ALERT_RULES = """\
groups:
- name: jdr
  rules:
  - alert: JdrNoSuccessfulBackup
    expr: time() - jdr_backup_last_success_timestamp_seconds > 26 * 3600
    labels: {severity: critical}
    annotations:
      summary: No complete jdr backup for more than 26 hours
  - alert: JdrBackupNeverSucceeded
    expr: absent(jdr_backup_last_success_timestamp_seconds) or jdr_backup_last_success_timestamp_seconds == 0
    for: 26h
    labels: {severity: critical}
    annotations:
      summary: jdr has not reported a complete backup
  - alert: JdrUserBackupFailing
    expr: jdr_volume_consecutive_failures >= 2
    labels: {severity: warning}
    annotations:
      summary: "Backup of {{ $labels.user }} failed {{ $value }} times in a row"
  - alert: JdrDrillOverdue
    expr: time() - jdr_drill_last_success_timestamp_seconds > 100 * 86400
    labels: {severity: warning}
    annotations:
      summary: No successful DR drill for more than 100 days
  - alert: JdrDrillFailed
    expr: jdr_drill_failures > 0
    labels: {severity: warning}
    annotations:
      summary: The last DR drill had failed checks
  - alert: JdrWorkerSkippingRuns
    expr: increase(jdr_worker_skipped_runs_total[1d]) > 0
    labels: {severity: info}
    annotations:
      summary: "jdr worker skipped {{ $labels.job }} because the previous run was still going"
"""


def _ts(t: datetime) -> float:
    return t.timestamp()


class Metrics:
    """All of jdr's metrics in one private CollectorRegistry (never the process-global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, labelnames=tuple(labels), registry=r)

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labelnames=tuple(labels), registry=r)

        vol = ("user", "server")
        gauge("jdr_build_info", "jdr version", ["version"]).labels(version=__version__).set(1)
        self.backup_last_run = gauge("jdr_backup_last_run_timestamp_seconds",
                                     "When the last backup run finished, whatever its status")
        self.backup_last_success = gauge("jdr_backup_last_success_timestamp_seconds",
                                         "When the last complete backup run finished")
        self.backup_duration = gauge("jdr_backup_last_duration_seconds", "Duration of the last backup run")
        self.backup_read = gauge("jdr_backup_last_read_bytes", "Bytes of file content read by the last run")
        self.backup_stored = gauge("jdr_backup_last_stored_bytes",
                                   "Bytes written to the repository by the last run")
        self.backup_files = gauge("jdr_backup_last_files", "Files backed up by the last run")
        self.backup_failures = gauge("jdr_backup_last_failures",
                                     "Items (volumes, hub) that failed in the last run")
        self.backup_status = gauge("jdr_backup_last_status",
                                   "1 for the status of the last run, 0 for the others",
                                   ["status"])
        self.backup_runs = counter("jdr_backup_runs_total", "Backup runs by status", ["status"])
        self.backup_read_total = counter("jdr_backup_read_bytes_total", "Bytes of file content read")
        self.backup_stored_total = counter("jdr_backup_stored_bytes_total", "Bytes written to the repository")
        self.backup_failures_total = counter("jdr_backup_failures_total", "Items that failed to back up")
        self.hub_last_success = gauge("jdr_hub_last_success_timestamp_seconds",
                                      "When the hub database was last captured successfully")
        self.hub_stored = gauge("jdr_hub_last_stored_bytes", "Bytes stored for the hub in the last run")
        self.vol_last_success = gauge("jdr_volume_last_success_timestamp_seconds",
                                      "When this volume was last backed up successfully", vol)
        self.vol_read = gauge("jdr_volume_last_read_bytes",
                              "Bytes read from this volume in its last backup", vol)
        self.vol_stored = gauge("jdr_volume_last_stored_bytes",
                                "Bytes stored for this volume in its last backup",
                                vol)
        self.vol_files = gauge("jdr_volume_last_files", "Files in this volume at its last backup", vol)
        self.vol_duration = gauge("jdr_volume_last_duration_seconds",
                                  "Duration of this volume's last backup", vol)
        self.vol_consecutive = gauge("jdr_volume_consecutive_failures",
                                     "Backups of this volume that failed in a row (0 after a success)", vol)
        self.vol_failures_total = counter("jdr_volume_failures_total", "Failed backups of this volume", vol)
        self.repo_size = gauge("jdr_repository_size_bytes", "Bytes stored in the repository")
        self.repo_runs = gauge("jdr_repository_runs", "Runs (manifests) in the repository")
        self.prune_last_run = gauge("jdr_prune_last_run_timestamp_seconds", "When the last prune finished")
        self.prune_last_success = gauge("jdr_prune_last_success_timestamp_seconds",
                                        "When the last successful prune finished")
        self.prune_duration = gauge("jdr_prune_last_duration_seconds", "Duration of the last prune")
        self.prune_runs = counter("jdr_prune_runs_deleted_total", "Runs deleted by prune")
        self.prune_artifacts = counter("jdr_prune_artifacts_deleted_total", "Artifacts deleted by prune")
        self.prune_snapshots = counter("jdr_prune_snapshots_deleted_total",
                                       "VolumeSnapshots deleted by prune")
        self.prune_freed = counter("jdr_prune_freed_bytes_total", "Bytes freed by prune")
        self.drill_rto = gauge("jdr_drill_rto_seconds", "Recovery time measured by the last drill")
        self.drill_rpo = gauge("jdr_drill_rpo_seconds",
                               "Recovery point (age of the restored data) in the last drill")
        self.drill_last_run = gauge("jdr_drill_last_run_timestamp_seconds", "When the last drill finished")
        self.drill_last_success = gauge("jdr_drill_last_success_timestamp_seconds",
                                        "When the last successful drill finished")
        self.drill_failures = gauge("jdr_drill_failures", "Checks that failed in the last drill")
        self.drill_runs = counter("jdr_drill_runs_total", "Drills by result", ["result"])
        self.job_runs = counter("jdr_worker_job_runs_total",
                                "Scheduled job runs by result", ["job", "result"])
        self.job_skipped = counter("jdr_worker_skipped_runs_total",
                                   "Scheduled runs skipped because the job was still running", ["job"])
        self.job_exit = gauge("jdr_worker_job_last_exit_code", "Exit code of the job's last run", ["job"])
        self.job_duration = gauge("jdr_worker_job_last_duration_seconds",
                                  "Duration of the job's last run", ["job"])
        self.job_last_run = gauge("jdr_worker_job_last_run_timestamp_seconds", "When the job last finished",
                                  ["job"])
        self._consecutive: dict[tuple[str, str], int] = {}

    # --- recording ------------------------------------------------------------------------------------

    def record_backup(self, b: BackupMetrics) -> None:
        finished = _ts(b.finished)
        self.backup_last_run.set(finished)
        if b.status == "complete":
            self.backup_last_success.set(finished)
        self.backup_duration.set(max(0.0, (b.finished - b.started).total_seconds()))
        self.backup_read.set(b.bytes_read)
        self.backup_stored.set(b.bytes_stored)
        self.backup_files.set(b.files)
        self.backup_failures.set(b.failures)
        for status in ("complete", "partial", "failed"):
            self.backup_status.labels(status=status).set(1 if status == b.status else 0)
        self.backup_runs.labels(status=b.status).inc()
        self.backup_read_total.inc(b.bytes_read)
        self.backup_stored_total.inc(b.bytes_stored)
        self.backup_failures_total.inc(b.failures)
        if b.hub_ok:
            self.hub_last_success.set(finished)
            self.hub_stored.set(b.hub_bytes_stored)
        for item in b.items:
            self._record_item(item, finished)

    def _record_item(self, item: ItemMetrics, finished: float) -> None:
        labels = {"user": item.user, "server": item.server}
        key = (item.user, item.server)
        if item.status in ("skipped", "absent"):  # absent: a user without a home has nothing to back up
            return
        if item.status == "ok":
            self.vol_last_success.labels(**labels).set(finished)
            self.vol_read.labels(**labels).set(item.bytes_read)
            self.vol_stored.labels(**labels).set(item.bytes_stored)
            self.vol_files.labels(**labels).set(item.files)
            self.vol_duration.labels(**labels).set(item.seconds)
            self._consecutive[key] = 0
        else:
            self.vol_failures_total.labels(**labels).inc()
            self._consecutive[key] = self._consecutive.get(key, 0) + 1
            # Make the series exist, so that "never succeeded" is visible as 0 rather than as absence.
            self.vol_last_success.labels(**labels).inc(0)
        if item.consecutive_failures is not None:
            self._consecutive[key] = item.consecutive_failures
        self.vol_consecutive.labels(**labels).set(self._consecutive[key])

    def record_repository(self, size_bytes: int, runs: int) -> None:
        self.repo_size.set(size_bytes)
        self.repo_runs.set(runs)

    def record_prune(self, p: PruneMetrics) -> None:
        finished = _ts(p.finished)
        self.prune_last_run.set(finished)
        if p.ok:
            self.prune_last_success.set(finished)
        self.prune_duration.set(max(0.0, (p.finished - p.started).total_seconds()))
        self.prune_runs.inc(p.runs_deleted)
        self.prune_artifacts.inc(p.artifacts_deleted)
        self.prune_snapshots.inc(p.snapshots_deleted)
        self.prune_freed.inc(p.bytes_freed)

    def record_drill(self, d: DrillMetrics) -> None:
        finished = _ts(d.finished)
        self.drill_last_run.set(finished)
        self.drill_failures.set(d.failures)
        self.drill_runs.labels(result="ok" if d.ok else "failed").inc()
        if d.ok:
            self.drill_last_success.set(finished)
            self.drill_rto.set(d.rto_seconds)
            self.drill_rpo.set(d.rpo_seconds)

    def record_job(self, job: str, exit_code: int, started: datetime, finished: datetime) -> None:
        """One run of a scheduled job (``jdr worker``); result is ok (0), partial (1) or failed."""
        result = {0: "ok", 1: "partial"}.get(exit_code, "failed")
        self.job_runs.labels(job=job, result=result).inc()
        self.job_exit.labels(job=job).set(exit_code)
        self.job_duration.labels(job=job).set(max(0.0, (finished - started).total_seconds()))
        self.job_last_run.labels(job=job).set(_ts(finished))

    def record_skipped(self, job: str) -> None:
        self.job_skipped.labels(job=job).inc()

    # --- output ---------------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format (``CONTENT_TYPE``)."""
        return bytes(generate_latest(self.registry))

    def write_textfile(self, path: str | os.PathLike[str]) -> None:
        """Write the metrics for node_exporter's textfile collector, atomically: a reader sees the old file
        or the new one, never a partial one. The temporary file does not end in ``.prom``, so the collector
        never reads it."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.render())
                f.flush()
                os.fsync(f.fileno())
            tmp_path = Path(tmp)
            tmp_path.chmod(0o644)  # mkstemp makes it 0600; node_exporter usually runs as another user
            tmp_path.replace(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def push(self, gateway_url: str, job: str = "jdr", grouping_key: dict[str, str] | None = None,
             timeout: float = 10.0) -> bool:
        """Push to a Pushgateway (HTTP PUT to ``/metrics/job/<job>``, replacing the group).

        Credentials may be given in the URL (``https://user:pass@gateway``). Returns False and logs a
        warning naming only the gateway's host when the push fails: metrics never fail a backup.
        """
        parts = urllib.parse.urlsplit(gateway_url)
        host = parts.hostname or "?"
        handler: Callable[..., Callable[[], None]] = default_handler
        if parts.username is not None:
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            gateway_url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
            handler = _auth_handler(urllib.parse.unquote(parts.username),
                                    urllib.parse.unquote(parts.password or ""))
        try:
            push_to_gateway(gateway_url, job=job, registry=self.registry, grouping_key=grouping_key,
                            timeout=timeout, handler=handler)
        except Exception as e:  # urllib raises many kinds; none of them may fail the caller
            log.warning("could not push metrics to the Pushgateway at %s: %s", host, _safe_error(e))
            return False
        log.debug("pushed metrics to the Pushgateway at %s (job %s)", host, job)
        return True


def _auth_handler(username: str, password: str) -> Callable[..., Callable[[], None]]:
    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:
        result: Callable[[], None] = basic_auth_handler(url, method, timeout, headers, data,
                                                        username, password)
        return result

    return handler


def _safe_error(e: BaseException) -> str:
    """An error's description without any URL (which may carry credentials)."""
    code: Any = getattr(e, "code", None)
    if code is not None:
        return f"HTTP {code}"
    reason: Any = getattr(e, "reason", None)
    return f"{type(e).__name__}: {reason}" if reason is not None else type(e).__name__
