"""``jdr drill``: restore a run into a scratch place, verify it, measure RTO/RPO, write a report, clean up."""

from __future__ import annotations

import importlib
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from dr.cli.main import Context, cli, exit_with, pass_ctx, wait_for_lock_option
from dr.deployments.drill import DrillTarget
from dr.errors import ConfigError, Interrupted, UsageError
from dr.settings import Settings


def make_drill_target(settings: Settings) -> DrillTarget:
    """The scratch place for the configured deployment kind."""
    kind = settings.deployment.kind
    if kind == "local":
        from dr.deployments.drill import LocalDrillTarget
        from dr.operations.drill import scratch_parent

        return LocalDrillTarget(scratch_parent(settings), production_hub_db=settings.deployment.hub_db,
                                production_homes=settings.deployment.homes,
                                server_db=_server_db(settings))
    try:
        # TODO(kubernetes drills): dr/deployments/kubernetes/drill.py implements DrillTarget in a scratch
        # namespace (see dr.deployments.drill's docstring for the contract).
        module = importlib.import_module("dr.deployments.kubernetes.drill")
        factory = module.KubernetesDrillTarget
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"drills on deployment.kind {kind} are not available in this jdr yet ({e})",
                          hint="run drills from a local copy: a local deployment with the same repository") from e
    target: DrillTarget = factory(settings)
    return target


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a CronJob's pod being stopped) unwinds the drill so that it cleans up its scratch place."""
    if threading.current_thread() is not threading.main_thread():
        yield  # the worker runs drills in a thread; it handles signals itself
        return

    def on_term(signum: int, frame: Any) -> None:
        raise Interrupted("drill stopped by SIGTERM; its scratch place was removed")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@cli.command()
@click.option("--run", default=None, help="Run id (or a unique prefix, or 'latest'; default latest).")
@click.option("--users", type=click.IntRange(min=1), default=None,
              help="Restore a sample of N users' volumes and extrapolate the RTO (default: drill.users).")
@click.option("--all", "everyone", is_flag=True, help="Restore every user's volume (overrides drill.users).")
@click.option("--keep", is_flag=True, help="Keep the scratch place afterwards (and say where).")
@click.option("--start-hub/--no-start-hub", "start_hub", default=None,
              help="Start a real hub on the restored database and check that it answers "
                   "(default: drill.start_hub; local deployments only).")
@click.option("--allow-unsigned", is_flag=True, help="Drill a run whose manifest no configured MAC key "
                                                     "authenticates (made before MACs were configured).")
@wait_for_lock_option
@pass_ctx
def drill(ctx: Context, run: str | None, users: int | None, everyone: bool, keep: bool,
          start_hub: bool | None, allow_unsigned: bool, wait_for_lock: int) -> None:
    """Restore a run into a scratch place, verify it, measure RTO/RPO, write a report, clean up.

    Exit code 0: the drill passed; 1: it ran and found failures (the report says why); 3: it could not run.
    """
    from dr.cli import jobs
    from dr.operations.drill import DrillOptions
    from dr.operations.drill_html import render_markdown

    if everyone and users is not None:
        raise UsageError("give --users N or --all, not both")
    s = ctx.settings
    opts = DrillOptions(run=run, users=0 if everyone else (users if users is not None else s.drill.users),
                        keep=keep, start_hub=s.drill.start_hub if start_hub is None else start_hub,
                        allow_unsigned=allow_unsigned)
    with _sigterm_interrupts():
        repo, result = jobs.drill(s, opts, on_step=None if ctx.json else lambda m: click.echo(f"==> {m}", err=True),
                                  attempt=jobs.waiting_for_lock("drill", wait_for_lock, s))
    doc = result.to_dict()

    def text() -> str:
        where = f"\nreport: {repo.url}/{result.keys[0].rsplit('/', 1)[0]}/" if result.keys else ""
        return render_markdown(doc).rstrip() + where

    ctx.emit(doc, text)
    exit_with(result.exit_code)


from dr.cli import drill_agent  # noqa: E402,F401  (registers ``jdr agent verify-volume``, run by drill movers)


def _server_db(settings: Settings) -> Any:
    """The production hub DB's adapter when it lives on a database server (drills restore beside it)."""
    from dr.hubdb.connect import password_from_env, server_database
    from dr.hubdb.url import parse_db_url

    d = settings.deployment
    if not d.hub_db_url:
        return None
    url = parse_db_url(d.hub_db_url)
    return None if url.kind == "sqlite" else server_database(password_from_env(url, d.hub_db_password_env))
