"""Prometheus metrics for backups, prunes, drills, the repository and the worker.

Every metric belongs to one **group**, and every group is published on its own, so that a command never
overwrites what another one reported (a prune must not reset the backup's success time):

- ``backup`` (``jdr_backup_*``, ``jdr_hub_*``, ``jdr_volume_*``): ``jdr backup`` → ``jdr_backup.prom``,
  Pushgateway job ``jdr_backup``;
- ``prune`` (``jdr_prune_*``): ``jdr prune`` → ``jdr_prune.prom``, job ``jdr_prune``;
- ``drill`` (``jdr_drill_*``): ``jdr drill`` → ``jdr_drill.prom``, job ``jdr_drill``;
- ``copy`` (``jdr_copy_*``): ``jdr copy`` → ``jdr_copy.prom``, job ``jdr_copy``;
- ``repository`` (``jdr_repository_*``): whichever of backup and prune ran last → ``jdr_repository.prom``,
  job ``jdr_repository``;
- ``worker`` (``jdr_worker_*``, ``jdr_build_info``): only ``jdr worker``'s ``/metrics``.

Rules that keep the numbers true:

- **Only what is known is published.** A sample that was never set is absent, never 0: a run that could not
  read the repository does not claim "last success: 1970".
- Values about *the last run* are gauges named ``jdr_<what>_last_…``; they mean the same in a textfile, a
  Pushgateway group or the worker's ``/metrics``. Alert on those.
- Success times come from the repository (the newest complete run's manifest, the newest passed drill's
  report), not from the memory of one process: they survive restarts and are right after a failure.
- Counters (``…_total``) only exist in a long-running process (``jdr worker``'s ``/metrics``). A one-shot
  command publishes no counters: a counter that restarts at 1 on every run would be a lie to ``rate()``.
- Times are Unix timestamps in seconds (``…_timestamp_seconds``), sizes in bytes (``…_bytes``).
- Per-volume series carry ``user`` (the raw JupyterHub username, or ``pvc:<name>`` for a volume without a
  user) and ``server`` (the named server, ``""`` for the default one).

Every metric, with its type and group, is listed in :data:`METRICS`; ``docs/alerts.yaml`` holds the
Prometheus alerting rules built on them (tested with ``promtool test rules`` on what real commands wrote).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    push_to_gateway,
    pushadd_to_gateway,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import basic_auth_handler, default_handler
from prometheus_client.parser import text_string_to_metric_families

from dr import __version__

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST  # what render() produces

Group = Literal["backup", "prune", "drill", "copy", "repository", "worker"]
GROUPS: tuple[Group, ...] = ("backup", "prune", "drill", "copy", "repository", "worker")
BACKUP_STATUSES = ("complete", "partial", "failed")
RESULT_STATUSES = ("ok", "failed")


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
    # When this volume was last backed up successfully (from the repository); None: not known.
    last_success: datetime | None = None


@dataclass(frozen=True)
class BackupMetrics:
    """A backup run, summarised for metrics. A run that failed before committing has no items."""

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
    # From the repository: the newest complete run's finish, and the newest run with the hub captured.
    # None: not known (the repository could not be read) — the sample is then left out, not zeroed.
    last_success: datetime | None = None
    hub_last_success: datetime | None = None
    committed: bool = True  # False: nothing was committed (bytes, files are then unknown)

    @property
    def failures(self) -> int:
        if not self.committed:
            return 1
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
    """The last drill. ``ok`` False with ``failures`` 0 is counted as one failure (it could not run)."""

    started: datetime
    finished: datetime
    ok: bool
    rto_seconds: float | None  # time to restore the run and have it verified (None: not measured)
    rpo_seconds: float | None  # age of the restored run's data at the time of the drill
    failures: int = 0  # checks that failed
    run: str = ""
    # The newest passed drill (from the repository's drill reports), when this one failed; None: unknown.
    last_success: datetime | None = None
    last_success_rto: float | None = None
    last_success_rpo: float | None = None


@dataclass(frozen=True)
class CopyMetrics:
    """The last ``jdr copy``: ``status`` is complete, partial (some runs failed) or failed (none copied, or
    it could not run)."""

    started: datetime
    finished: datetime
    status: Literal["complete", "partial", "failed"]
    runs_copied: int = 0
    runs_failed: int = 0
    bytes_copied: int = 0
    missing: int | None = None  # source runs the destination still lacks afterwards (None: not known)


@dataclass(frozen=True)
class RepositoryMetrics:
    size_bytes: int  # bytes of the artifacts the runs reference, each counted once
    runs: int  # runs (manifests)
    damaged_artifacts: int | None = None  # damage records (verify/backup found them); None: not read


@dataclass(frozen=True)
class _Spec:
    name: str
    kind: Literal["gauge", "counter"]
    group: Group
    help: str
    labels: tuple[str, ...] = ()


_VOL = ("user", "server")
_SPECS: tuple[_Spec, ...] = (
    _Spec("jdr_build_info", "gauge", "worker", "jdr version", ("version",)),
    _Spec("jdr_backup_last_run_timestamp_seconds", "gauge", "backup",
          "When the last backup run finished, whatever its status"),
    _Spec("jdr_backup_last_success_timestamp_seconds", "gauge", "backup",
          "When the newest complete backup run in the repository finished"),
    _Spec("jdr_backup_last_duration_seconds", "gauge", "backup", "Duration of the last backup run"),
    _Spec("jdr_backup_last_read_bytes", "gauge", "backup", "Bytes of file content read by the last run"),
    _Spec("jdr_backup_last_stored_bytes", "gauge", "backup", "Bytes written to the repository by the last run"),
    _Spec("jdr_backup_last_files", "gauge", "backup", "Files backed up by the last run"),
    _Spec("jdr_backup_last_failures", "gauge", "backup",
          "Items (volumes, hub) that failed in the last run; 1 when the run committed nothing"),
    _Spec("jdr_backup_last_status", "gauge", "backup", "1 for the status of the last run, 0 for the others",
          ("status",)),
    _Spec("jdr_backup_runs_total", "counter", "backup", "Backup runs by status", ("status",)),
    _Spec("jdr_backup_read_bytes_total", "counter", "backup", "Bytes of file content read"),
    _Spec("jdr_backup_stored_bytes_total", "counter", "backup", "Bytes written to the repository"),
    _Spec("jdr_backup_failures_total", "counter", "backup", "Items that failed to back up"),
    _Spec("jdr_hub_last_success_timestamp_seconds", "gauge", "backup",
          "When the newest run holding the hub database finished"),
    _Spec("jdr_hub_last_stored_bytes", "gauge", "backup", "Bytes stored for the hub in the last run"),
    _Spec("jdr_volume_last_success_timestamp_seconds", "gauge", "backup",
          "When this volume was last backed up successfully", _VOL),
    _Spec("jdr_volume_last_read_bytes", "gauge", "backup", "Bytes read from this volume in its last backup",
          _VOL),
    _Spec("jdr_volume_last_stored_bytes", "gauge", "backup",
          "Bytes stored for this volume in its last backup", _VOL),
    _Spec("jdr_volume_last_files", "gauge", "backup", "Files in this volume at its last backup", _VOL),
    _Spec("jdr_volume_last_duration_seconds", "gauge", "backup", "Duration of this volume's last backup",
          _VOL),
    _Spec("jdr_volume_consecutive_failures", "gauge", "backup",
          "Backups of this volume that failed in a row (0 after a success)", _VOL),
    _Spec("jdr_volume_failures_total", "counter", "backup", "Failed backups of this volume", _VOL),
    _Spec("jdr_repository_size_bytes", "gauge", "repository",
          "Bytes of the artifacts the repository's runs reference (each counted once)"),
    _Spec("jdr_repository_runs", "gauge", "repository", "Runs (manifests) in the repository"),
    _Spec("jdr_repository_damaged_artifacts", "gauge", "repository",
          "Artifacts recorded as damaged (missing, wrong size or checksum) by verify or a backup"),
    _Spec("jdr_prune_last_run_timestamp_seconds", "gauge", "prune", "When the last prune finished"),
    _Spec("jdr_prune_last_success_timestamp_seconds", "gauge", "prune",
          "When the last successful prune finished"),
    _Spec("jdr_prune_last_status", "gauge", "prune", "1 for the result of the last prune (ok, failed)",
          ("status",)),
    _Spec("jdr_prune_last_duration_seconds", "gauge", "prune", "Duration of the last prune"),
    _Spec("jdr_prune_last_runs_deleted", "gauge", "prune", "Runs deleted by the last prune"),
    _Spec("jdr_prune_last_runs_kept", "gauge", "prune", "Runs kept by the last prune"),
    _Spec("jdr_prune_last_artifacts_deleted", "gauge", "prune", "Artifacts deleted by the last prune"),
    _Spec("jdr_prune_last_freed_bytes", "gauge", "prune", "Bytes freed by the last prune"),
    _Spec("jdr_prune_runs_deleted_total", "counter", "prune", "Runs deleted by prune"),
    _Spec("jdr_prune_artifacts_deleted_total", "counter", "prune", "Artifacts deleted by prune"),
    _Spec("jdr_prune_snapshots_deleted_total", "counter", "prune", "VolumeSnapshots deleted by prune"),
    _Spec("jdr_prune_freed_bytes_total", "counter", "prune", "Bytes freed by prune"),
    _Spec("jdr_drill_rto_seconds", "gauge", "drill", "Recovery time measured by the last passed drill"),
    _Spec("jdr_drill_rpo_seconds", "gauge", "drill",
          "Recovery point (age of the restored data) in the last passed drill"),
    _Spec("jdr_drill_last_run_timestamp_seconds", "gauge", "drill", "When the last drill finished"),
    _Spec("jdr_drill_last_success_timestamp_seconds", "gauge", "drill",
          "When the newest passed drill in the repository finished"),
    _Spec("jdr_drill_failures", "gauge", "drill",
          "Checks that failed in the last drill (1 when it could not run at all)"),
    _Spec("jdr_drill_runs_total", "counter", "drill", "Drills by result", ("result",)),
    _Spec("jdr_copy_last_run_timestamp_seconds", "gauge", "copy", "When the last copy finished"),
    _Spec("jdr_copy_last_success_timestamp_seconds", "gauge", "copy",
          "When the last copy that left the second repository with every run finished"),
    _Spec("jdr_copy_last_status", "gauge", "copy", "1 for the status of the last copy, 0 for the others",
          ("status",)),
    _Spec("jdr_copy_last_duration_seconds", "gauge", "copy", "Duration of the last copy"),
    _Spec("jdr_copy_last_runs_copied", "gauge", "copy", "Runs copied by the last copy"),
    _Spec("jdr_copy_last_runs_failed", "gauge", "copy", "Runs the last copy could not copy"),
    _Spec("jdr_copy_last_bytes", "gauge", "copy", "Bytes sent to the second repository by the last copy"),
    _Spec("jdr_copy_runs_missing", "gauge", "copy",
          "Runs of the repository that the second repository lacked after the last copy"),
    _Spec("jdr_copy_runs_total", "counter", "copy", "Copies by status", ("status",)),
    _Spec("jdr_copy_bytes_total", "counter", "copy", "Bytes sent to the second repository"),
    _Spec("jdr_worker_job_runs_total", "counter", "worker", "Scheduled job runs by result", ("job", "result")),
    _Spec("jdr_worker_skipped_runs_total", "counter", "worker",
          "Scheduled runs skipped because the job was still running", ("job",)),
    _Spec("jdr_worker_lock_retries_total", "counter", "worker",
          "Times a job found the repository locked by another process and waited to retry", ("job",)),
    _Spec("jdr_worker_lock_timeouts_total", "counter", "worker",
          "Job runs given up because the repository stayed locked by another process", ("job",)),
    _Spec("jdr_worker_job_last_exit_code", "gauge", "worker", "Exit code of the job's last run", ("job",)),
    _Spec("jdr_worker_job_last_duration_seconds", "gauge", "worker", "Duration of the job's last run",
          ("job",)),
    _Spec("jdr_worker_job_last_run_timestamp_seconds", "gauge", "worker", "When the job last finished",
          ("job",)),
)

#: name -> (type, group), for documentation and for tests that check every name is exposed.
METRICS: dict[str, tuple[str, str]] = {s.name: (s.kind, s.group) for s in _SPECS}
#: name -> type (kept for callers of the older name).
METRIC_NAMES: dict[str, str] = {name: kind for name, (kind, _group) in METRICS.items()}


def textfile_name(group: Group) -> str:
    """The node_exporter textfile of a group: ``jdr_backup.prom``, ``jdr_prune.prom`` …"""
    return f"jdr_{group}.prom"


def push_job(group: Group) -> str:
    """The Pushgateway job (grouping key) of a group: ``jdr_backup``, ``jdr_prune`` …"""
    return f"jdr_{group}"


def _ts(t: datetime) -> float:
    return t.timestamp()


class _GroupCollector:
    def __init__(self, metrics: Metrics, groups: Sequence[Group], counters: bool) -> None:
        self.metrics, self.groups, self.counters = metrics, groups, counters

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics.families(self.groups, self.counters)


class Metrics:
    """Every jdr metric, with only the samples that were set. Thread-safe: the worker records from job
    threads while its HTTP thread renders."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._values: dict[str, dict[tuple[str, ...], float]] = {s.name: {} for s in _SPECS}
        self._consecutive: dict[tuple[str, str], int] = {}
        self._set("jdr_build_info", 1, version=__version__)

    # --- low level ------------------------------------------------------------------------------------

    def _key(self, name: str, labels: dict[str, str]) -> tuple[str, ...]:
        spec = _SPEC_BY_NAME[name]
        if set(labels) != set(spec.labels):
            raise ValueError(f"{name} takes labels {spec.labels}, got {sorted(labels)}")
        return tuple(str(labels[k]) for k in spec.labels)

    def _set(self, name: str, value: float, **labels: str) -> None:
        key = self._key(name, labels)
        with self._mutex:
            self._values[name][key] = float(value)

    def _inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = self._key(name, labels)
        with self._mutex:
            self._values[name][key] = self._values[name].get(key, 0.0) + float(amount)

    def get(self, name: str, **labels: str) -> float | None:
        """A sample's value, or None when it was never set (tests, and the worker's health report)."""
        return self._values[name].get(self._key(name, labels))

    def clear_group(self, group: Group) -> None:
        """Forget every sample of a group (before recording a one-shot command's fresh view of it)."""
        with self._mutex:
            for spec in _SPECS:
                if spec.group == group:
                    self._values[spec.name].clear()

    # --- recording ------------------------------------------------------------------------------------

    def record_backup(self, b: BackupMetrics) -> None:
        finished = _ts(b.finished)
        self._set("jdr_backup_last_run_timestamp_seconds", finished)
        if b.last_success is not None:
            self._set("jdr_backup_last_success_timestamp_seconds", _ts(b.last_success))
        elif b.status == "complete":
            self._set("jdr_backup_last_success_timestamp_seconds", finished)
        self._set("jdr_backup_last_duration_seconds", max(0.0, (b.finished - b.started).total_seconds()))
        self._set("jdr_backup_last_failures", b.failures)
        for status in BACKUP_STATUSES:
            self._set("jdr_backup_last_status", 1 if status == b.status else 0, status=status)
        self._inc("jdr_backup_runs_total", status=b.status)
        self._inc("jdr_backup_failures_total", b.failures)
        if b.committed:
            self._set("jdr_backup_last_read_bytes", b.bytes_read)
            self._set("jdr_backup_last_stored_bytes", b.bytes_stored)
            self._set("jdr_backup_last_files", b.files)
            self._inc("jdr_backup_read_bytes_total", b.bytes_read)
            self._inc("jdr_backup_stored_bytes_total", b.bytes_stored)
        if b.hub_last_success is not None:
            self._set("jdr_hub_last_success_timestamp_seconds", _ts(b.hub_last_success))
        elif b.hub_ok:
            self._set("jdr_hub_last_success_timestamp_seconds", finished)
        if b.hub_ok:
            self._set("jdr_hub_last_stored_bytes", b.hub_bytes_stored)
        if b.committed:
            # The run names every volume there is: forget gauges of volumes that are gone (deleted users).
            present = {(i.user, i.server) for i in b.items if i.status not in ("skipped", "absent")}
            with self._mutex:
                for spec in _SPECS:
                    if spec.labels == _VOL and spec.kind == "gauge":
                        for key in [k for k in self._values[spec.name] if k not in present]:
                            del self._values[spec.name][key]
        for item in b.items:
            self._record_item(item, finished)

    def _record_item(self, item: ItemMetrics, finished: float) -> None:
        labels = {"user": item.user, "server": item.server}
        key = (item.user, item.server)
        if item.status in ("skipped", "absent"):
            return
        if item.status == "ok":
            self._set("jdr_volume_last_success_timestamp_seconds", finished, **labels)
            self._set("jdr_volume_last_read_bytes", item.bytes_read, **labels)
            self._set("jdr_volume_last_stored_bytes", item.bytes_stored, **labels)
            self._set("jdr_volume_last_files", item.files, **labels)
            self._set("jdr_volume_last_duration_seconds", item.seconds, **labels)
            self._consecutive[key] = 0
        else:
            self._inc("jdr_volume_failures_total", 1.0, **labels)
            self._consecutive[key] = self._consecutive.get(key, 0) + 1
            if item.last_success is not None:
                self._set("jdr_volume_last_success_timestamp_seconds", _ts(item.last_success), **labels)
        if item.consecutive_failures is not None:
            self._consecutive[key] = item.consecutive_failures
        self._set("jdr_volume_consecutive_failures", self._consecutive[key], **labels)

    def record_repository(self, r: RepositoryMetrics) -> None:
        self._set("jdr_repository_size_bytes", r.size_bytes)
        self._set("jdr_repository_runs", r.runs)
        if r.damaged_artifacts is not None:
            self._set("jdr_repository_damaged_artifacts", r.damaged_artifacts)

    def record_prune(self, p: PruneMetrics) -> None:
        finished = _ts(p.finished)
        self._set("jdr_prune_last_run_timestamp_seconds", finished)
        if p.ok:
            self._set("jdr_prune_last_success_timestamp_seconds", finished)
        for status in RESULT_STATUSES:
            self._set("jdr_prune_last_status", 1 if (status == "ok") == p.ok else 0, status=status)
        self._set("jdr_prune_last_duration_seconds", max(0.0, (p.finished - p.started).total_seconds()))
        if p.ok:
            self._set("jdr_prune_last_runs_deleted", p.runs_deleted)
            self._set("jdr_prune_last_runs_kept", p.runs_kept)
            self._set("jdr_prune_last_artifacts_deleted", p.artifacts_deleted)
            self._set("jdr_prune_last_freed_bytes", p.bytes_freed)
        self._inc("jdr_prune_runs_deleted_total", p.runs_deleted)
        self._inc("jdr_prune_artifacts_deleted_total", p.artifacts_deleted)
        self._inc("jdr_prune_snapshots_deleted_total", p.snapshots_deleted)
        self._inc("jdr_prune_freed_bytes_total", p.bytes_freed)

    def record_drill(self, d: DrillMetrics) -> None:
        finished = _ts(d.finished)
        self._set("jdr_drill_last_run_timestamp_seconds", finished)
        self._set("jdr_drill_failures", d.failures if d.ok or d.failures else 1)
        self._inc("jdr_drill_runs_total", result="ok" if d.ok else "failed")
        if d.ok:
            self._set("jdr_drill_last_success_timestamp_seconds", finished)
            if d.rto_seconds is not None:
                self._set("jdr_drill_rto_seconds", d.rto_seconds)
            if d.rpo_seconds is not None:
                self._set("jdr_drill_rpo_seconds", d.rpo_seconds)
            return
        if d.last_success is not None:
            self._set("jdr_drill_last_success_timestamp_seconds", _ts(d.last_success))
        if d.last_success_rto is not None:
            self._set("jdr_drill_rto_seconds", d.last_success_rto)
        if d.last_success_rpo is not None:
            self._set("jdr_drill_rpo_seconds", d.last_success_rpo)

    def record_copy(self, c: CopyMetrics) -> None:
        finished = _ts(c.finished)
        self._set("jdr_copy_last_run_timestamp_seconds", finished)
        if c.status == "complete":
            self._set("jdr_copy_last_success_timestamp_seconds", finished)
        for status in BACKUP_STATUSES:
            self._set("jdr_copy_last_status", 1 if status == c.status else 0, status=status)
        self._set("jdr_copy_last_duration_seconds", max(0.0, (c.finished - c.started).total_seconds()))
        self._set("jdr_copy_last_runs_copied", c.runs_copied)
        self._set("jdr_copy_last_runs_failed", c.runs_failed)
        self._set("jdr_copy_last_bytes", c.bytes_copied)
        if c.missing is not None:
            self._set("jdr_copy_runs_missing", c.missing)
        self._inc("jdr_copy_runs_total", status=c.status)
        self._inc("jdr_copy_bytes_total", c.bytes_copied)

    def seed_backup(self, last_success: datetime | None, hub_last_success: datetime | None) -> None:
        """Success times read from the repository when a worker starts, before its first backup."""
        if last_success is not None:
            self._set("jdr_backup_last_success_timestamp_seconds", _ts(last_success))
        if hub_last_success is not None:
            self._set("jdr_hub_last_success_timestamp_seconds", _ts(hub_last_success))

    def seed_drill(self, last_success: datetime, rto_seconds: float | None, rpo_seconds: float | None) -> None:
        """The last passed drill, read from the repository's reports when a worker starts."""
        self._set("jdr_drill_last_success_timestamp_seconds", _ts(last_success))
        if rto_seconds is not None:
            self._set("jdr_drill_rto_seconds", rto_seconds)
        if rpo_seconds is not None:
            self._set("jdr_drill_rpo_seconds", rpo_seconds)

    def record_job(self, job: str, exit_code: int, started: datetime, finished: datetime) -> None:
        """One run of a scheduled job (``jdr worker``); result is ok (0), partial (1) or failed."""
        result = {0: "ok", 1: "partial"}.get(exit_code, "failed")
        self._inc("jdr_worker_job_runs_total", job=job, result=result)
        self._set("jdr_worker_job_last_exit_code", exit_code, job=job)
        self._set("jdr_worker_job_last_duration_seconds", max(0.0, (finished - started).total_seconds()),
                  job=job)
        self._set("jdr_worker_job_last_run_timestamp_seconds", _ts(finished), job=job)

    def record_skipped(self, job: str) -> None:
        self._inc("jdr_worker_skipped_runs_total", job=job)

    def record_lock_retry(self, job: str) -> None:
        self._inc("jdr_worker_lock_retries_total", job=job)

    def record_lock_timeout(self, job: str) -> None:
        self._inc("jdr_worker_lock_timeouts_total", job=job)

    # --- output ---------------------------------------------------------------------------------------

    def families(self, groups: Iterable[Group] = GROUPS, counters: bool = True) -> Iterator[Metric]:
        """The metric families of ``groups`` that have at least one sample (counters only if asked)."""
        wanted = set(groups)
        for spec in _SPECS:
            with self._mutex:
                samples = dict(self._values[spec.name])
            if spec.group not in wanted or not samples or (spec.kind == "counter" and not counters):
                continue
            family: Metric
            if spec.kind == "counter":
                family = CounterMetricFamily(spec.name.removesuffix("_total"), spec.help,
                                             labels=spec.labels)
            else:
                family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            for key, value in sorted(samples.items()):
                family.add_metric(list(key), value)
            yield family

    def registry(self, groups: Sequence[Group] = GROUPS, counters: bool = True) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_GroupCollector(self, groups, counters))
        return registry

    def render(self, groups: Sequence[Group] = GROUPS, counters: bool = True) -> bytes:
        """The samples of ``groups`` in the Prometheus text exposition format (``CONTENT_TYPE``)."""
        return bytes(generate_latest(self.registry(groups, counters)))

    def write_textfile(self, path: str | os.PathLike[str], groups: Sequence[Group] = GROUPS,
                       counters: bool = True, merge: bool = False) -> None:
        """Write the samples of ``groups`` for node_exporter's textfile collector, atomically: a reader sees
        the old file or the new one, never a partial one. The temporary file does not end in ``.prom``, so
        the collector never reads it.

        ``merge``: metric families this object has no sample of are kept from the file being replaced, as a
        Pushgateway POST keeps them (a run that could not read the repository leaves the last success time
        as the previous run published it, instead of dropping it)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        body = self.render(groups, counters)
        if merge:
            body += _kept_families(target, body)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            tmp_path = Path(tmp)
            tmp_path.chmod(0o644)  # mkstemp makes it 0600; node_exporter usually runs as another user
            tmp_path.replace(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def push(self, gateway_url: str, job: str = "jdr", grouping_key: dict[str, str] | None = None,
             timeout: float = 10.0, groups: Sequence[Group] = GROUPS, counters: bool = True,
             merge: bool = False) -> bool:
        """Push ``groups`` to a Pushgateway: HTTP PUT to ``/metrics/job/<job>`` (replacing that grouping key
        only), or with ``merge`` a POST, which replaces only the metric families pushed.

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
            send = pushadd_to_gateway if merge else push_to_gateway
            send(gateway_url, job=job, registry=self.registry(groups, counters),
                 grouping_key=grouping_key, timeout=timeout, handler=handler)
        except Exception as e:  # urllib raises many kinds; none of them may fail the caller
            log.warning("could not push metrics to the Pushgateway at %s: %s", host, _safe_error(e))
            return False
        log.debug("pushed metrics to the Pushgateway at %s (job %s)", host, job)
        return True


_SPEC_BY_NAME = {s.name: s for s in _SPECS}


class _Replay:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def _kept_families(previous: Path, new_body: bytes) -> bytes:
    """The families of the textfile ``previous`` that ``new_body`` does not have, rendered again."""
    try:
        old_text = previous.read_text(encoding="utf-8")
    except OSError:
        return b""
    try:
        new_names = {f.name for f in text_string_to_metric_families(new_body.decode("utf-8"))}
        kept = [f for f in text_string_to_metric_families(old_text) if f.name not in new_names]
    except ValueError as e:
        log.warning("ignoring the unreadable previous metrics file %s: %s", previous, e)
        return b""
    if not kept:
        return b""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Replay(kept))
    return bytes(generate_latest(registry))


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
