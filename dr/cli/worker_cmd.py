"""``jdr worker``: backup, prune and drill on the configured schedules, with /healthz and /metrics."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dr import wiring
from dr.cli.main import Context, cli, pass_ctx
from dr.errors import EXIT_FAILED, JdrError
from dr.settings import Settings

if TYPE_CHECKING:
    from dr.metrics import Metrics

log = logging.getLogger(__name__)


def backup_job(settings: Settings, metrics: Metrics) -> int:
    from dr.operations.backup import BackupOptions, run_backup
    from dr.operations.reporting import after_backup

    repo = wiring.open_repository(settings, create=True)
    result = run_backup(repo, wiring.make_deployment(settings), BackupOptions(
        method=settings.backup.method, excludes=tuple(settings.backup.excludes),
        level=settings.backup.compression_level, threads=settings.backup.threads,
        secret_in_clear=settings.encryption.secret_in_clear, full_every=wiring.full_every(settings)))
    after_backup(settings, repo, result, metrics)
    return result.exit_code


def prune_job(settings: Settings, metrics: Metrics) -> int:
    from dr.operations.prune import prune
    from dr.operations.reporting import after_prune

    repo = wiring.open_repository(settings)
    deployment = wiring.make_deployment(settings) if settings.deployment.kind == "kubernetes" else None
    result = prune(repo, wiring.retention_policy(settings), wiring.timezone(settings),
                   delete_snapshots=getattr(deployment, "delete_snapshots", None))
    after_prune(settings, repo, result, metrics)
    return result.exit_code


def cli_job(args: list[str], config: Path | None) -> int:
    """Run a jdr command in-process (its own metrics and reports are published by the command)."""
    base = ["--config", str(config)] if config else []
    try:
        cli.main(base + args, prog_name="jdr", standalone_mode=False)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def _guard(name: str, fn: object) -> object:
    def run() -> int:
        try:
            return int(fn())  # type: ignore[operator]
        except JdrError as e:
            log.error("%s failed: %s", name, e)
            return e.exit_code
        except Exception:
            log.exception("%s failed unexpectedly", name)
            return EXIT_FAILED

    return run


@cli.command()
@click.option("--health-port", type=int, default=None, help="Port of /healthz and /metrics "
                                                           "(default: metrics.port; 0 turns it off).")
@click.option("--grace", type=float, default=300.0, help="Seconds a running job may finish on SIGTERM.")
@pass_ctx
def worker(ctx: Context, health_port: int | None, grace: float) -> None:
    """Run backup, prune and drill on the configured schedules until stopped (SIGTERM)."""
    from dr.metrics import Metrics
    from dr.scheduler.schedule import JobSpec
    from dr.scheduler.worker import Worker

    s = ctx.settings
    metrics = Metrics()
    jobs = {}
    for name, expr in (("backup", s.schedule.backup), ("prune", s.schedule.prune), ("drill", s.schedule.drill)):
        if not expr:
            continue
        if name == "backup":
            fn = _guard(name, lambda: backup_job(s, metrics))
        elif name == "prune":
            fn = _guard(name, lambda: prune_job(s, metrics))
        else:
            fn = _guard(name, lambda: cli_job(["drill"], ctx.config))
        jobs[name] = JobSpec(name=name, func=fn, cron=expr)  # type: ignore[arg-type]
    port = s.metrics.port if health_port is None else health_port
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jdr"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        state: Path | None = cache / "worker-state.json"
    except OSError:
        state = None
    w = Worker(jobs, wiring.timezone(s), health_port=port or None, metrics=metrics,
               health_host=s.metrics.bind, grace_seconds=grace, state_path=state)
    click.echo(f"jdr worker: {', '.join(f'{n} [{j.schedule}]' for n, j in jobs.items())}", err=True)
    raise SystemExit(w.run_forever())
