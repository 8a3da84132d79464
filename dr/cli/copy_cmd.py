"""``jdr copy``: replicate runs to a second repository (dr/operations/copy.py)."""

from __future__ import annotations

import click

from dr.cli import render
from dr.cli.main import Context, cli, exit_with, pass_ctx, wait_for_lock_option
from dr.errors import UsageError


@cli.command()
@click.option("--to", "to", default=None, metavar="URL",
              help="The second repository (s3://bucket/prefix or file:///path). Default: copy.to.")
@click.option("--run", "runs", multiple=True, help="Copy only this run (id, unique prefix or 'latest'; "
                                                   "repeatable).")
@click.option("--all", "everything", is_flag=True, help="Copy every run the second repository lacks "
                                                        "(the default).")
@click.option("--dry-run", is_flag=True, help="Say which runs would be copied; write nothing.")
@wait_for_lock_option
@pass_ctx
def copy(ctx: Context, to: str | None, runs: tuple[str, ...], everything: bool, dry_run: bool,
         wait_for_lock: int) -> None:
    """Copy runs (manifests and the artifacts they name) that the second repository lacks, verified."""
    from dr.cli import jobs

    if everything and runs:
        raise UsageError("give --run or --all, not both")
    if any(not r.strip() for r in runs):
        raise UsageError("--run '': an empty run id (is a shell variable unset?)")
    result = jobs.copy(ctx.settings, to=to, runs=runs, dry_run=dry_run,
                       attempt=jobs.waiting_for_lock("copy", wait_for_lock, ctx.settings))

    def text() -> str:
        if result.dry_run:
            lines = [f"would copy {len(result.planned)} run(s) to {result.destination} "
                     f"({result.already} already there):"]
            return "\n".join(lines + [f"  {r}" for r in result.planned])
        lines = [f"copy {result.status}: {len(result.copied)} run(s) copied to {result.destination} "
                 f"({render.human_bytes(result.bytes_copied)} sent), {result.already} already there"]
        for r in result.runs:
            if r.status == "copied":
                lines.append(f"  {r.run}  copied: {r.artifacts_copied} artifacts sent, "
                             f"{r.artifacts_present} already there")
            else:
                lines.append(f"  {r.run}  {r.status.upper()} {r.error}")
        if result.error:
            lines.append(f"stopped: {result.error}")
            lines.append("next step: run `jdr copy` again once the storage answers; it goes on where it "
                         "stopped")
        return "\n".join(lines)

    ctx.emit(result.to_dict(), text)
    exit_with(result.exit_code)
