"""``jdr worker``: backup, prune, drill and copy (``schedule.copy``, off by default) on the configured
schedules, with /healthz and /metrics.

Each job runs exactly what the one-shot command runs (dr/cli/jobs.py), so it publishes the same per-command
textfiles / Pushgateway groups, and records into the worker's own metrics for ``/metrics``. A job that
finds the repository locked by another process retries with back-off for ``worker.lock_wait`` seconds
(dr/scheduler/retry.py), then fails loudly: an error in the log, ``jdr_worker_lock_timeouts_total``, the
command's ``failed`` status and its webhook.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dr import wiring
from dr.cli.main import Context, cli, pass_ctx
from dr.settings import Settings

if TYPE_CHECKING:
    from dr.metrics import Metrics
    from dr.scheduler.retry import LockRetry

log = logging.getLogger(__name__)


def make_attempt(job: str, policy: LockRetry, stop: threading.Event,
                 metrics: Metrics) -> Callable[[Callable[[], Any]], Any]:
    """The retry-while-locked wrapper of one job, counting retries and timeouts in ``metrics``."""
    from dr.scheduler.retry import LockWaitExpired, retry_while_locked

    def attempt(fn: Callable[[], Any]) -> Any:
        try:
            return retry_while_locked(job, fn, policy, wait=stop.wait,
                                      on_retry=lambda _e, _d: metrics.record_lock_retry(job))
        except LockWaitExpired:
            metrics.record_lock_timeout(job)
            raise

    return attempt


def make_jobs(settings: Settings, metrics: Metrics, stop: threading.Event) -> dict[str, Callable[[], int]]:
    """name -> job function (exit code) for every job with a schedule."""
    from dr.cli import jobs
    from dr.operations.drill import DrillOptions
    policy = jobs.lock_retry(settings, settings.worker.lock_wait)

    def backup() -> int:
        return jobs.backup(settings, metrics=metrics, attempt=make_attempt("backup", policy, stop, metrics)).exit_code

    def prune() -> int:
        return jobs.prune(settings, metrics=metrics, attempt=make_attempt("prune", policy, stop, metrics)).exit_code

    def drill() -> int:
        opts = DrillOptions(users=settings.drill.users, start_hub=settings.drill.start_hub)
        _repo, result = jobs.drill(settings, opts, metrics=metrics,
                                   attempt=make_attempt("drill", policy, stop, metrics))
        return result.exit_code

    def copy() -> int:
        return jobs.copy(settings, metrics=metrics, attempt=make_attempt("copy", policy, stop, metrics)).exit_code

    found = {"backup": (settings.schedule.backup, backup), "prune": (settings.schedule.prune, prune),
             "drill": (settings.schedule.drill, drill), "copy": (settings.schedule.copy, copy)}
    return {name: fn for name, (expr, fn) in found.items() if expr}


def seed_metrics(settings: Settings, metrics: Metrics) -> None:
    """What the repository already says (last complete backup, last passed drill, its size), so that
    ``/metrics`` tells the truth from the start, not only after each job has run once."""
    from dr.cli import publishing
    from dr.operations.observed import last_passed_drill, try_repository_facts

    try:
        repo = wiring.open_repository(settings)
    except Exception as e:  # the worker must start even when the repository is down tonight
        log.warning("metrics: cannot open the repository at start-up (%s); metrics fill in as jobs run", e)
        return
    with publishing.catalog_for(settings, repo) as catalog:
        facts = try_repository_facts(repo, catalog)
    if facts is not None:
        metrics.record_repository(facts.repository)
        metrics.seed_backup(facts.last_complete, facts.last_hub)
    try:
        drill = last_passed_drill(repo)
    except Exception as e:
        log.warning("metrics: cannot read drill reports at start-up: %s", e)
        drill = None
    if drill is not None:
        metrics.seed_drill(drill.finished, drill.rto_seconds, drill.rpo_seconds)


@cli.command()
@click.option("--health-port", type=int, default=None, help="Port of /healthz and /metrics "
                                                           "(default: metrics.port; 0 turns it off).")
@click.option("--grace", type=float, default=None,
              help="Seconds a running job may finish on SIGTERM (default: worker.stop_grace, 80).")
@pass_ctx
def worker(ctx: Context, health_port: int | None, grace: float | None) -> None:
    """Run backup, prune, drill and copy on the configured schedules until stopped (SIGTERM)."""
    from dr.cli.logs import setup_logging
    from dr.metrics import Metrics
    from dr.scheduler.schedule import JobSpec
    from dr.scheduler.worker import Worker

    s = ctx.settings
    setup_logging(max(ctx.verbose, 1), s.log_format)  # a daemon logs its jobs' start and end by default
    metrics = Metrics()
    stop = threading.Event()
    funcs = make_jobs(s, metrics, stop)
    jobs = {name: JobSpec(name=name, func=fn, cron=getattr(s.schedule, name)) for name, fn in funcs.items()}
    port = s.metrics.port if health_port is None else health_port
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jdr"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        state: Path | None = cache / "worker-state.json"
    except OSError:
        state = None
    w = Worker(jobs, wiring.timezone(s), health_port=port or None, metrics=metrics,
               health_host=s.metrics.bind, grace_seconds=s.worker.stop_grace if grace is None else grace,
               state_path=state, stop_event=stop)
    seed_metrics(s, metrics)
    log.info("jdr worker: %s", ", ".join(f"{n} [{j.schedule}]" for n, j in jobs.items()) or "no jobs")
    raise SystemExit(w.run_forever())
