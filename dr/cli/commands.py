"""The commands of ``jdr``. Each one: options → one operation → rendered result and exit code."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from dr import wiring
from dr.cli import render
from dr.cli.main import Context, cli, confirm_plan, exit_with, pass_ctx, wait_for_lock_option
from dr.cli.progress import progress_reporter
from dr.errors import UsageError
from dr.util.timefmt import iso, parse_iso


def _at(value: str | None) -> object:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError as e:
        raise UsageError(f"--at: {e}", hint="use ISO-8601, e.g. 2026-11-20T02:00:00Z") from e


@cli.command()
@click.option("--user", "users", multiple=True, help="Back up only this user (repeatable).")
@click.option("--method", type=click.Choice(["archive", "snapshot", "snapshot+archive"]), default=None,
              help="How user volumes are captured (Kubernetes). Default: backup.method.")
@click.option("--full", is_flag=True, help="Archive every volume, even those unchanged since the last run.")
@click.option("--dry-run", is_flag=True, help="Show what would be backed up; write nothing.")
@wait_for_lock_option
@pass_ctx
def backup(ctx: Context, users: tuple[str, ...], method: str | None, full: bool, dry_run: bool,
           wait_for_lock: int) -> None:
    """Run one backup: the hub database (and Secret) and every user's volume."""
    from dr.cli import jobs
    from dr.operations.backup import render_report

    with progress_reporter("backup", enabled=not ctx.json) as progress:
        result = jobs.backup(ctx.settings, users=users, method=method, full=full, dry_run=dry_run,
                             progress=progress,
                             attempt=jobs.waiting_for_lock("backup", wait_for_lock, ctx.settings))

    def text() -> str:
        if result.status == "dry-run":
            return "\n".join(["would back up the hub database and:"] + [
                f"  {p['label']}  {p['source']}"
                + ("  (server running)" if p["running"] else "") for p in result.planned])
        if result.manifest is None:
            return f"run {result.run}: FAILED {result.error}"
        return render_report(result.manifest).rstrip() + (
            "" if result.status != "failed" else f"\nnothing was committed: {result.error}")

    ctx.emit(result.to_dict(), text)
    exit_with(result.exit_code)


@cli.command(name="list")
@click.option("--user", default=None, help="Only runs that hold this user's volume.")
@pass_ctx
def list_(ctx: Context, user: str | None) -> None:
    """List runs, newest first."""
    from dr.catalog import lite

    repo = wiring.open_repository(ctx.settings)
    # A SQLite catalog is read, and built or synced when stale, with sqlite3 alone (no SQLAlchemy: issue 12,
    # `jdr list` in 0.5 s); any other catalog database goes through Catalog.
    url, ids, ident = wiring.default_catalog_url(ctx.settings), repo.run_ids(), (repo.url, repo.id)
    rows = lite.list_runs(url, ids, repository_url=ident[0], repository_id=ident[1], user=user)
    if rows is None:
        rows = lite.synced_runs(url, ids, repo.load_manifest, repository_url=ident[0], repository_id=ident[1],
                                user=user)
    if rows is None:
        from dr.operations.inspect import list_runs

        with wiring.open_catalog(ctx.settings, repo) as catalog:
            rows = list_runs(repo, catalog, user)
    ctx.emit(lambda: [r.to_dict() for r in rows], lambda: render.runs_table(rows))


@cli.command()
@click.argument("run")
@pass_ctx
def show(ctx: Context, run: str) -> None:
    """Show one run: hub database, each user's item, sizes, checksums, status."""
    from dr.operations.inspect import show_run

    m = show_run(wiring.open_repository(ctx.settings), run)
    doc = m.to_dict()
    if m.authenticity:  # how the run stands against the configured MAC keys (none configured: absent)
        doc["authenticity"] = {"status": m.authenticity, "key": m.mac_key}
    ctx.emit(doc, lambda: render.manifest_text(m))


@cli.command()
@click.argument("run")
@click.argument("path", required=False)
@click.option("--user", required=True, help="Whose volume to list.")
@click.option("--server", default="", help="Named server.")
@pass_ctx
def ls(ctx: Context, run: str, path: str | None, user: str, server: str) -> None:
    """List the files of one user's volume in a run (from the index, without extracting)."""
    from dr.operations.inspect import ls_files

    listing = ls_files(wiring.open_repository(ctx.settings), run, user, path, server)
    ctx.emit(listing.to_dict(), lambda: "\n".join(render.ls_line(e) for e in listing.entries))


@cli.command()
@click.option("--user", default=None, help="Restore this user's home.")
@click.option("--volume", default=None, help="Restore a volume of no user: an extra volume (by name or PVC), "
                                             "an orphan home.")
@click.option("--hub", is_flag=True, help="Restore the hub database (and Secret) and restart the hub.")
@click.option("--all", "everything", is_flag=True, help="Full disaster recovery: hub and every user.")
@click.option("--run", default=None, help="Run id (or a unique prefix, or 'latest').")
@click.option("--at", default=None, help="The newest run at or before this ISO-8601 time.")
@click.option("--path", "paths", multiple=True, help="Only files matching this glob (repeatable).")
@click.option("--into", default=None, help="Restore beside the current files, into this subdirectory.")
@click.option("--as", "as_user", default=None, help="Restore into another user's volume.")
@click.option("--server", default="", help="A named server's volume.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Restore although the hub DB says the server runs and no "
                                             "Hub API is configured to stop it.")
@click.option("--no-secret", is_flag=True, help="Do not restore the hub Secret (Kubernetes).")
@click.option("--discard-previous", is_flag=True, help="Delete the replaced files after success "
                                                       "(default: keep them aside).")
@click.option("--allow-unsigned", is_flag=True, help="Accept a run whose manifest no configured MAC key "
                                                     "authenticates (made before MACs were configured).")
@click.option("--replace-hub-db", is_flag=True, help="PostgreSQL/MySQL hub: restore although the database "
                                                     "holds tables (PostgreSQL keeps them in a schema aside).")
@pass_ctx
def restore(ctx: Context, user: str | None, volume: str | None, hub: bool, everything: bool, run: str | None,
            at: str | None, paths: tuple[str, ...], into: str | None, as_user: str | None, server: str, dry_run: bool,
            yes: bool, force: bool, no_secret: bool, discard_previous: bool, allow_unsigned: bool,
            replace_hub_db: bool) -> None:
    """Restore one user's home (--user), the hub (--hub), or everything (--all)."""
    from dr.operations.restore import RestoreOptions, restore_all, restore_hub, restore_user

    chosen = [x for x in (user is not None, volume is not None, hub, everything) if x]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --user NAME, --hub, --all (or --volume NAME)")
    if (as_user or ((paths or into) and volume is None)) and user is None:
        raise UsageError("--path, --into and --as go with --user (--path and --into also with --volume)")
    if run is not None and at is not None:
        raise UsageError("--run and --at cannot be used together")
    if run is not None and not run.strip():
        raise UsageError("--run '': an empty run id (is a shell variable unset?)",
                         hint="give a run id, a unique prefix of one, or latest")
    s = ctx.settings
    repo = wiring.open_repository(s)
    deployment = wiring.make_deployment(s)
    opts = RestoreOptions(run=run, at=_at(at), paths=paths, into=into,  # type: ignore[arg-type]
                          as_user=as_user, server=server, dry_run=dry_run, force=force,
                          keep_previous=not discard_previous,
                          include_secret=not no_secret, allow_unsigned=allow_unsigned,
                          replace_hub_db=replace_hub_db)
    asked = confirm_plan(ctx, yes)
    with progress_reporter("restore", enabled=not ctx.json and not dry_run) as progress:
        opts = replace(opts, progress=progress)

        def confirm(plan: Any) -> bool:
            # The prompt is answered before the bar starts (it starts at the first file restored); the
            # total comes from the sizes the run's index recorded.
            ok = asked(plan)
            if ok:
                total = render.restore_total(plan)
                if total is not None:
                    progress.set_total(*total)
            return ok

        if volume is not None:
            from dr.operations.restore_volume import restore_volume

            result = restore_volume(repo, deployment, volume, opts, confirm)
        elif user is not None:
            result = restore_user(repo, deployment, user, opts, confirm,
                                  wiring.make_hub_api(s) if not dry_run else None)
        elif hub:
            result = restore_hub(repo, deployment, opts, confirm)
        else:
            result = restore_all(repo, deployment, opts, confirm,
                                 wiring.make_hub_api(s) if not dry_run else None)

    def text() -> str:
        if result.status == "dry-run":
            return "\n".join(result.plan.lines()) + "\n(dry run: nothing changed)"
        lines = [f"restore {result.status}"]
        if result.hub is not None:
            lines.append(f"  hub database restored (previous kept at {result.hub.previous or '-'})")
        for i in result.items:
            if i.status == "ok":
                lines.append(f"  {i.label}: {i.files} files, {render.human_bytes(i.bytes)} into {i.target}"
                             + (f"; replaced files kept in {i.previous}" if i.previous else ""))
            else:
                lines.append(f"  {i.label}: {i.status.upper()} {i.error}")
        lines += [f"  note: {w}" for w in result.warnings]
        return "\n".join(lines)

    ctx.emit(result.to_dict(), text)
    exit_with(result.exit_code)


@cli.command()
@click.argument("run", required=False)
@click.option("--deep", is_flag=True, help="Read every archive and check every file and the hub DB.")
@click.option("--extend-locks", is_flag=True,
              help="S3 Object Lock: extend objects locked shorter than their runs need.")
@click.option("--allow-unsigned", is_flag=True, help="Check runs that no configured MAC key authenticates "
                                                     "(made before MACs were configured) instead of failing them.")
@pass_ctx
def verify(ctx: Context, run: str | None, deep: bool, extend_locks: bool, allow_unsigned: bool) -> None:
    """Check the checksums of a run's artifacts (every run when RUN is omitted)."""
    from dr.cli import publishing
    from dr.operations.verify import verify_runs

    repo = wiring.open_repository(ctx.settings)
    with repo.lock("verify", exclusive=False):
        result = verify_runs(repo, run, deep, extend=extend_locks, allow_unsigned=allow_unsigned)
    publishing.verify_done(ctx.settings, repo)  # the damage it recorded, for the alert

    def text() -> str:
        head = "".join(f"warning: {w}\n" for w in result.warnings)
        head += f"verified {result.checked} artifacts of {len(result.runs)} run(s)" + (" (deep)" if deep else "")
        if result.locks_extended:
            head += f"; extended the S3 Object Lock of {result.locks_extended} objects"
        if result.ok:
            return head + ": all intact"
        return (head + f": {len(result.problems)} PROBLEMS\n" + "\n".join(f"  {p}" for p in result.problems)
                + "".join(f"\nnext step: {step}" for step in result.next_steps))

    ctx.emit(result.to_dict(), text)
    exit_with(result.exit_code)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@click.option("--allow-unsigned", is_flag=True, help="Apply retention also to runs without a MAC (made before "
                                                     "MACs were configured); otherwise they are left alone.")
@wait_for_lock_option
@pass_ctx
def prune(ctx: Context, dry_run: bool, allow_unsigned: bool, wait_for_lock: int) -> None:
    """Apply the retention policy, saying why each run is kept or dropped."""
    from dr.cli import jobs

    result = jobs.prune(ctx.settings, dry_run=dry_run, allow_unsigned=allow_unsigned,
                        attempt=jobs.waiting_for_lock("prune", wait_for_lock, ctx.settings))

    def text() -> str:
        lines = [f"{'KEEP' if d.keep else 'DROP'} {d.run}  {', '.join(d.reasons)}"
                 + (f" (Object Lock until {iso(result.locked_runs[d.run])}: kept until then)"
                    if d.run in result.locked_runs else "") for d in result.decisions]
        if dry_run:
            lines.append("(dry run: nothing deleted)")
        else:
            lines.append(f"deleted {len(result.runs_deleted)} runs, {result.artifacts_deleted} artifacts "
                         f"({render.human_bytes(result.bytes_freed)})")
            if result.cleaned_runs:
                lines.append("removed what runs that never completed left: " + ", ".join(result.cleaned_runs))
        if result.locked_objects and result.locked_until is not None:
            lines.append(f"{result.locked_objects} objects, {render.human_bytes(result.locked_bytes)} locked "
                         f"until {iso(result.locked_until)} (S3 Object Lock): a prune after that deletes them")
        return "\n".join(lines)

    ctx.emit(result.to_dict(), text)


@cli.group()
def catalog() -> None:
    """The local index of runs (only a cache of the repository's manifests)."""


@catalog.command()
@pass_ctx
def rebuild(ctx: Context) -> None:
    """Rebuild the catalog from the repository's manifests."""
    repo = wiring.open_repository(ctx.settings)
    with wiring.open_catalog(ctx.settings, repo) as cat:
        n = cat.rebuild(repo.manifests())
    ctx.emit({"runs": n}, f"catalog rebuilt: {n} runs")


@cli.command()
@click.option("--all", "remove_all", is_flag=True, help="Remove every lock, not only stale ones.")
@pass_ctx
def unlock(ctx: Context, remove_all: bool) -> None:
    """Remove stale repository locks (of processes that died)."""
    from dr.repository import layout
    from dr.repository.lock import list_locks, stale_locks

    repo = wiring.open_repository(ctx.settings)
    removed = []
    for lock in list_locks(repo.store) if remove_all else stale_locks(repo.store, repo.stale_after):
        repo.store.delete(layout.lock_key(lock.id))
        removed.append(lock.describe())
    ctx.emit({"removed": removed}, "\n".join(["removed: " + r for r in removed]) or "no stale locks")


@cli.command()
@click.option("--dir", "workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to build the sandbox hub (default: a new temporary directory).")
@click.option("--keep", is_flag=True, help="Keep the sandbox afterwards.")
@pass_ctx
def demo(ctx: Context, workdir: Path | None, keep: bool) -> None:
    """A self-contained demonstration on a sandbox hub: backup → disaster → restore → verify."""
    from dr.operations.demo import run_demo

    report = run_demo(workdir, keep=keep, echo=None if ctx.json else click.echo)
    ctx.emit(report.to_dict(), report.text)
    exit_with(report.exit_code)
