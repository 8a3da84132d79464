"""What the repository itself says, for metrics: the newest complete run, each volume's last success and
failure streak, the size the runs occupy, the newest passed drill.

Metrics computed here are true whichever process publishes them and whenever: a worker that just
restarted, a CronJob pod that only ran a prune, a backup that failed. Reading uses the catalog (synced from
the repository: one LIST of runs, manifests fetched only for new ones) and the drills' report.json files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

from dr.catalog import Catalog
from dr.errors import JdrError
from dr.metrics import BackupMetrics, DrillMetrics, ItemMetrics, RepositoryMetrics
from dr.model import Manifest
from dr.operations.inspect import synced_catalog
from dr.repository import layout
from dr.repository.damage import damaged_keys
from dr.repository.repository import Repository
from dr.util.timefmt import parse_iso

log = logging.getLogger(__name__)

HISTORY_RUNS = 30  # earlier runs looked at for a volume's failure streak and last success


@dataclass(frozen=True)
class RepositoryFacts:
    repository: RepositoryMetrics
    last_complete: datetime | None  # finish of the newest complete run
    last_hub: datetime | None  # finish of the newest run holding the hub database
    history: list[Manifest]  # newest first, at most HISTORY_RUNS


def repository_facts(repo: Repository, catalog: Catalog, history: int = HISTORY_RUNS) -> RepositoryFacts:
    """Sync ``catalog`` with ``repo`` and read the facts metrics need. Raises JdrError when the repository
    cannot be read."""
    synced_catalog(repo, catalog)
    runs, size = catalog.totals()
    complete = catalog.runs(status=["complete"], limit=1)
    rows = catalog.runs(limit=max(history, 1))
    hub_rows = [r for r in rows if r.hub] or [r for r in catalog.runs(limit=1000) if r.hub]
    manifests = [m for m in (catalog.manifest(r.id) for r in rows[:history]) if m is not None]
    damaged = len(damaged_keys(repo.store))
    return RepositoryFacts(repository=RepositoryMetrics(size_bytes=size, runs=runs, damaged_artifacts=damaged),
                           last_complete=complete[0].finished if complete else None,
                           last_hub=hub_rows[0].finished if hub_rows else None, history=manifests)


def try_repository_facts(repo: Repository | None, catalog: Catalog | None) -> RepositoryFacts | None:
    """:func:`repository_facts`, or None (logged) when there is no repository or it cannot be read."""
    if repo is None or catalog is None:
        return None
    try:
        return repository_facts(repo, catalog)
    except (JdrError, OSError) as e:
        log.warning("metrics: cannot read the repository's runs (%s); publishing only what this run knows", e)
        return None


def backup_metrics(m: Manifest, facts: RepositoryFacts | None) -> BackupMetrics:
    """Summarise a committed run; ``facts`` (read after the commit) give streaks and last successes."""
    history = [h for h in facts.history if h.run != m.run] if facts else []
    items = []
    for v in m.volumes:
        streak = 0
        last_ok: datetime | None = None
        if v.status == "failed":
            streak = 1
            for old in history:
                prev = old.volume_for(v.user or "", v.server) if v.user is not None else None
                if prev is not None and prev.status == "ok":
                    last_ok = old.finished
                    break
                if prev is None or prev.status != "failed":
                    break
                streak += 1
        stored = sum(a.size for a in v.artifacts() if a.run == m.run)
        items.append(ItemMetrics(user=v.user if v.user is not None else v.label, server=v.server,
                                 status=v.status, bytes_read=v.bytes, bytes_stored=stored,
                                 files=v.files, seconds=v.seconds, consecutive_failures=streak,
                                 last_success=last_ok))
    hub_stored = m.hub.db.size if m.hub and m.hub.db and m.hub.db.run == m.run else 0
    hub_ok = (m.hub.status == "ok") if m.hub else None
    last_complete = facts.last_complete if facts else None
    if m.status == "complete" and (last_complete is None or last_complete < m.finished):
        last_complete = m.finished
    last_hub = facts.last_hub if facts else None
    if hub_ok and (last_hub is None or last_hub < m.finished):
        last_hub = m.finished
    return BackupMetrics(
        run=m.run, started=m.started, finished=m.finished, status=m.status,
        bytes_read=sum(v.bytes for v in m.volumes),
        bytes_stored=sum(i.bytes_stored for i in items) + hub_stored,
        files=sum(v.files for v in m.volumes), items=items, hub_ok=hub_ok, hub_bytes_stored=hub_stored,
        last_success=last_complete, hub_last_success=last_hub)


def failed_backup_metrics(run: str, started: datetime, finished: datetime,
                          facts: RepositoryFacts | None) -> BackupMetrics:
    """A run that committed nothing: its time and status; last successes from the repository if readable."""
    return BackupMetrics(run=run, started=started, finished=finished, status="failed", committed=False,
                         last_success=facts.last_complete if facts else None,
                         hub_last_success=facts.last_hub if facts else None)


@dataclass(frozen=True)
class PassedDrill:
    finished: datetime
    rto_seconds: float | None
    rpo_seconds: float | None


def last_passed_drill(repo: Repository, limit: int = 200) -> PassedDrill | None:
    """The newest drill whose report says it passed (None if there is none). Reads report.json files
    newest first, so normally one GET."""
    keys = sorted((o.key for o in repo.store.list(layout.DRILLS) if o.key.endswith("/report.json")),
                  reverse=True)
    for key in keys[:limit]:
        try:
            doc = json.loads(repo.get_report(key))
            if not isinstance(doc, dict) or not doc.get("ok"):
                continue
            finished = parse_iso(str(doc.get("finished") or doc["started"]))
        except (JdrError, ValueError, KeyError) as e:
            log.debug("skipping drill report %s: %s", key, e)
            continue
        rto, rpo = doc.get("rto_seconds"), doc.get("rpo_seconds")
        return PassedDrill(finished=finished, rto_seconds=float(rto) if rto is not None else None,
                           rpo_seconds=float(rpo) if rpo is not None else None)
    return None


def drill_metrics(started: datetime, finished: datetime, ok: bool, *, failures: int,
                  rto: float | None, rpo: float | None, run: str,
                  previous: PassedDrill | None) -> DrillMetrics:
    return DrillMetrics(started=started, finished=finished, ok=ok, rto_seconds=rto, rpo_seconds=rpo,
                        failures=failures, run=run,
                        last_success=previous.finished if previous else None,
                        last_success_rto=previous.rto_seconds if previous else None,
                        last_success_rpo=previous.rpo_seconds if previous else None)
