"""Metrics and webhooks after a command, for the CLI and the worker alike (one code path, so that
``jdr backup`` in a CronJob and the worker's backup job publish the same thing).

The catalog gives the facts that metrics need (last complete run, repository size); when it cannot be
opened the command still publishes what it knows. Nothing here ever changes a command's outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from dr import wiring
from dr.errors import JdrError
from dr.settings import Settings

if TYPE_CHECKING:
    from dr.catalog import Catalog
    from dr.metrics import Metrics
    from dr.operations.backup import BackupResult
    from dr.operations.copy import CopyResult
    from dr.operations.drill_report import DrillReport
    from dr.operations.prune import PruneResult
    from dr.repository.repository import Repository

log = logging.getLogger(__name__)


@contextmanager
def catalog_for(settings: Settings, repo: Repository | None) -> Iterator[Catalog | None]:
    """The catalog of ``repo``, or None (logged) when there is no repository or the catalog cannot open."""
    if repo is None:
        yield None
        return
    try:
        catalog = wiring.open_catalog(settings, repo)
    except (JdrError, OSError) as e:
        log.warning("metrics: cannot open the catalog (%s); publishing only what this run knows", e)
        yield None
        return
    with catalog:
        yield catalog


def backup_done(settings: Settings, repo: Repository, result: BackupResult,
                metrics: Metrics | None = None) -> None:
    if not _reports_anything(settings, metrics):
        # Nothing would read the repository facts: skip the catalog sync (and the import of SQLAlchemy),
        # but index the new run in a SQLite catalog, so that the next `jdr list` finds it up to date.
        _index_run(settings, repo, result)
        return
    from dr.operations.reporting import after_backup

    with catalog_for(settings, repo) as catalog:
        after_backup(settings, repo, result, metrics, catalog)


def _index_run(settings: Settings, repo: Repository, result: BackupResult) -> None:
    """Add a committed run to an existing SQLite catalog of ``repo`` (dr/catalog/lite.py; not created here,
    nor synced: that is the next listing's job). Never fails the backup: the catalog is only a cache."""
    if result.manifest is None or result.status == "failed":
        return  # nothing was committed
    from dr.catalog import lite

    try:
        lite.add_run(wiring.default_catalog_url(settings), result.manifest, repository_url=repo.url,
                     repository_id=repo.id)
    except (JdrError, OSError) as e:
        log.warning("could not index run %s in the catalog (%s); the next listing will", result.run, e)


def _reports_anything(settings: Settings, metrics: Metrics | None) -> bool:
    """Whether a finished backup has anyone to report to: a caller's metrics (``jdr serve``), a textfile
    directory or Pushgateway, or a webhook. Without any, the repository facts read through the catalog
    (dr/operations/reporting.py) would feed only a Metrics object that is thrown away, so a plain
    ``jdr backup`` skips them; the catalog is a cache that ``jdr list`` brings up to date when it runs."""
    m = settings.metrics
    return (metrics is not None or bool(m.textfile_dir or m.textfile or m.pushgateway)
            or bool(settings.notify.webhook))


def backup_error(settings: Settings, repo: Repository | None, error: Exception, started: datetime,
                 metrics: Metrics | None = None) -> None:
    from dr.operations.reporting import backup_failed

    with catalog_for(settings, repo) as catalog:
        backup_failed(settings, repo, error, started, metrics, catalog)


def prune_done(settings: Settings, repo: Repository, result: PruneResult, started: datetime,
               metrics: Metrics | None = None) -> None:
    from dr.operations.reporting import after_prune

    with catalog_for(settings, repo) as catalog:
        after_prune(settings, repo, result, started, metrics, catalog)


def verify_done(settings: Settings, repo: Repository, metrics: Metrics | None = None) -> None:
    from dr.operations.reporting import after_verify

    with catalog_for(settings, repo) as catalog:
        after_verify(settings, repo, metrics, catalog)


def prune_error(settings: Settings, error: Exception, started: datetime, metrics: Metrics | None = None) -> None:
    from dr.operations.reporting import prune_failed

    prune_failed(settings, error, started, metrics)


def drill_done(settings: Settings, repo: Repository, report: DrillReport, metrics: Metrics | None = None) -> None:
    from dr.operations.drill import after_drill

    after_drill(settings, report, metrics, repo=repo)


def drill_error(settings: Settings, repo: Repository | None, error: Exception, started: datetime,
                metrics: Metrics | None = None) -> None:
    from dr.operations.drill import drill_failed

    drill_failed(settings, repo, error, started, metrics)


def copy_done(settings: Settings, result: CopyResult, missing: int | None, metrics: Metrics | None = None) -> None:
    from dr.operations.reporting import after_copy

    after_copy(settings, result, missing, metrics)


def copy_error(settings: Settings, error: Exception, started: datetime, metrics: Metrics | None = None) -> None:
    from dr.operations.reporting import copy_failed

    copy_failed(settings, error, started, metrics)
