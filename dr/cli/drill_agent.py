"""``jdr agent verify-volume``: the drill's verification mover (Kubernetes), registered on the hidden
``jdr agent`` group beside the adapter's own tasks (:mod:`dr.cli.agent`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dr.cli.agent import _json_arg, _result_option, _run_task, agent
from dr.cli.main import Context, pass_ctx
from dr.model import VolumeItem
from dr.repository.repository import Repository


@agent.command("verify-volume")
@click.option("--run", required=True, help="Id of the drill (names results).")
@click.option("--item-json", required=True, help="The manifest's item that was restored (JSON).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("/data"))
@click.option("--notebooks", type=int, default=20, show_default=True, help="Notebooks to check.")
@_result_option
@pass_ctx
def verify_volume(ctx: Context, run: str, item_json: str, root: Path, notebooks: int, result_file: Path) -> None:
    """Check the restored volume at --root against the run's index (every file), count files, sample notebooks."""
    from dr.deployments.kubernetes import drill_agent

    item = VolumeItem.from_dict(_json_arg(item_json, "--item-json"))

    def task(repo: Repository) -> dict[str, Any]:
        return drill_agent.verify_volume(repo, item, root=root, notebooks=notebooks)

    _run_task(ctx, run, "verify", result_file, task)
