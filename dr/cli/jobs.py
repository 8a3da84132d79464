"""Backup, prune, drill and copy as one call each, with their metrics and webhooks: what ``jdr backup``/``prune``/
``drill`` run, and what the worker's jobs run (so both publish exactly the same way).

``attempt`` wraps the part that takes the repository lock: the worker passes a retry-while-locked wrapper
(dr/scheduler/retry.py); the one-shot commands call it once. A failure that is not the user's mistake
(UsageError) is published (status ``failed``, webhook) before it propagates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from dr import wiring
from dr.cli import publishing
from dr.errors import JdrError, UsageError
from dr.settings import Settings
from dr.util.timefmt import utcnow

if TYPE_CHECKING:
    from dr.metrics import Metrics
    from dr.operations.backup import BackupResult
    from dr.operations.copy import CopyResult
    from dr.operations.drill import DrillOptions, DrillResult
    from dr.operations.prune import PruneResult
    from dr.repository.repository import Repository
    from dr.scheduler.retry import LockRetry

T = TypeVar("T")
Attempt = Callable[[Callable[[], Any]], Any]


def once(fn: Callable[[], T]) -> T:
    return fn()


def lock_retry(settings: Settings, window: float) -> LockRetry:
    """The worker's lock back-off (``worker.lock_retry_min``/``lock_retry_max``) for a wait of ``window`` s."""
    from dr.scheduler.retry import LockRetry

    w = settings.worker
    return LockRetry(window=window, first=w.lock_retry_min, longest=w.lock_retry_max)


def waiting_for_lock(job: str, seconds: int, settings: Settings) -> Attempt:
    """What a one-shot command runs its locked part with: once, or (``--wait-for-lock``) retried while
    another process holds the repository lock, for up to ``seconds``, with the worker's back-off
    (``worker.lock_retry_min``/``lock_retry_max``). A CronJob that meets a running prune waits for it."""
    if seconds <= 0:
        return once
    import time

    from dr.scheduler.retry import retry_while_locked

    policy = lock_retry(settings, seconds)

    def wait(delay: float) -> bool:
        time.sleep(delay)
        return False

    def attempt(fn: Callable[[], Any]) -> Any:
        return retry_while_locked(job, fn, policy, wait=wait)

    return attempt


def backup(settings: Settings, *, users: tuple[str, ...] = (), method: str | None = None, full: bool = False,
           dry_run: bool = False, progress: Any = None, metrics: Metrics | None = None,
           attempt: Attempt = once) -> BackupResult:
    from dr.operations.backup import BackupOptions, run_backup

    s = settings
    store = wiring.make_store(s)  # the whole configuration is checked before anything is created
    deployment = wiring.make_deployment(s)
    opts = BackupOptions(users=users, method=method or s.backup.method, full=full, dry_run=dry_run,
                         excludes=tuple(s.backup.excludes), level=s.backup.compression_level,
                         threads=s.backup.threads, secret_in_clear=s.encryption.secret_in_clear,
                         full_every=wiring.full_every(s))
    started = utcnow()
    repo: Repository | None = None
    try:
        repo = wiring.open_repository(s, create=not dry_run, store=store)
        opened = repo
        result: BackupResult = attempt(lambda: run_backup(opened, deployment, opts, progress=progress))
    except JdrError as e:
        if not dry_run and not isinstance(e, UsageError):
            publishing.backup_error(s, repo, e, started, metrics)
        raise
    if not dry_run:
        publishing.backup_done(s, repo, result, metrics)
    return result


def prune(settings: Settings, *, dry_run: bool = False, metrics: Metrics | None = None,
          attempt: Attempt = once, allow_unsigned: bool = False) -> PruneResult:
    from dr.operations.prune import prune as do_prune

    s = settings
    started = utcnow()
    try:
        repo = wiring.open_repository(s, store=wiring.make_store(s, prune=True))  # the prune role's keys
        deployment = wiring.make_deployment(s) if s.deployment.kind == "kubernetes" else None
        deleter = getattr(deployment, "delete_snapshots", None)
        policy, tz = wiring.retention_policy(s), wiring.timezone(s)
        result: PruneResult = attempt(lambda: do_prune(repo, policy, tz, dry_run=dry_run,
                                                       delete_snapshots=deleter, allow_unsigned=allow_unsigned))
    except JdrError as e:
        if not dry_run and not isinstance(e, UsageError):
            publishing.prune_error(s, e, started, metrics)
        raise
    if not dry_run:
        publishing.prune_done(s, repo, result, started, metrics)
    return result


def drill(settings: Settings, opts: DrillOptions, *, on_step: Callable[[str], None] | None = None,
          metrics: Metrics | None = None, attempt: Attempt = once) -> tuple[Repository, DrillResult]:
    from dr.cli.drill_cmd import make_drill_target
    from dr.operations.drill import run_drill

    s = settings
    started = utcnow()
    repo: Repository | None = None
    try:
        repo = wiring.open_repository(s)
        target = make_drill_target(s)
        opened = repo
        result: DrillResult = attempt(lambda: run_drill(opened, target, opts, on_step=on_step))
    except JdrError as e:
        if not isinstance(e, UsageError):
            publishing.drill_error(s, repo, e, started, metrics)
        raise
    publishing.drill_done(s, repo, result.report, metrics)
    return repo, result


def copy(settings: Settings, *, to: str | None = None, runs: tuple[str, ...] = (), dry_run: bool = False,
         metrics: Metrics | None = None, attempt: Attempt = once) -> CopyResult:
    """``jdr copy``: the configured repository's runs to ``to`` (default ``copy.to``), without any key."""
    from dr.operations.copy import CopyOptions, copy_runs

    s = settings
    started = utcnow()
    try:
        destination = wiring.make_copy_store(s, to)
        source = wiring.open_repository(s, keys=False)
        opts = CopyOptions(runs=runs, dry_run=dry_run)
        result: CopyResult = attempt(lambda: copy_runs(source, destination, opts))
    except JdrError as e:
        if not dry_run and not isinstance(e, UsageError):
            publishing.copy_error(s, e, started, metrics)
        raise
    if not dry_run:
        done = set(result.copied)
        missing = None if runs else len([r for r in result.planned if r not in done])
        publishing.copy_done(s, result, missing, metrics)
    return result
