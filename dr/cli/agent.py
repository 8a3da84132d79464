"""``jdr agent …``: the commands mover pods run (hidden from ``jdr --help``; not for people).

Each command opens the repository from the ``JDR_…`` environment the mover was given, runs one task of
:mod:`dr.deployments.kubernetes.agent` on the volumes mounted in the pod, and writes its JSON result to
the termination message (``--result-file``). A failure is a result too (``{"status": "failed", …}``) with
the error's exit code, so the jdr process that started the pod always learns why.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dr import wiring
from dr.cli.main import Context, cli, pass_ctx
from dr.errors import EXIT_FAILED, JdrError, UsageError
from dr.model import Artifact, VolumeItem
from dr.policy.object_lock import ObjectLockPolicy
from dr.repository.repository import Repository

RESULT_FILE = "/dev/termination-log"


@cli.group(hidden=True)
def agent() -> None:
    """Tasks run inside mover pods (Kubernetes)."""


def _result_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--result-file", type=click.Path(dir_okay=False, path_type=Path),
                        default=RESULT_FILE, show_default=True, help="Where the JSON result goes.")(f)


def _run_task(ctx: Context, run: str, key: str, result_file: Path,
              task: Callable[[Repository], dict[str, Any]]) -> None:
    from dr.deployments.kubernetes.agent import emit_result

    repo: Repository | None = None
    try:
        repo = _open_repository(ctx)
        result = task(repo)
        code = 0
    except JdrError as e:
        result = {"status": "failed", "error": e.message, "hint": e.hint, "kind": type(e).__name__}
        code = e.exit_code
    except OSError as e:
        result = {"status": "failed", "error": f"{e.strerror or e}: {e.filename or ''}".rstrip(": "),
                  "kind": "OSError"}
        code = EXIT_FAILED
    emit_result(result, repo, run, key, result_file)
    sys.exit(code)


#: Movers write their artifacts unlocked; the backup locks them before it commits the run
#: (Repository.commit_manifest), so a mover needs neither the retention policy nor the lock permission.
MOVER_LOCK = ObjectLockPolicy(deferred=True)


def _open_repository(ctx: Context) -> Repository:
    """The repository as the mover may use it: a mover given only public recipients (a backup or a hub
    capture: no decryption key in its pod) encrypts to them and can read nothing back."""
    from dr.deployments.kubernetes.agent import seal_only_from_env

    s = ctx.settings
    seal = seal_only_from_env()
    if seal is not None and not (s.encryption.key_env and os.environ.get(s.encryption.key_env)):
        return Repository.open(wiring.make_store(s), seal,  # type: ignore[arg-type]  # write-only: see SealOnly
                               stale_after=s.repository.lock_stale_after, lock_policy=MOVER_LOCK)
    repo = wiring.open_repository(s, lock_policy=MOVER_LOCK)
    if repo.encrypted and repo.encryptor is None:
        raise UsageError("the repository is encrypted and this mover got neither the key nor the recipients")
    return repo


def _json_arg(text: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{what}: not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise UsageError(f"{what}: expected a JSON object")
    return doc


@agent.command("backup-volume")
@click.option("--run", required=True)
@click.option("--key", required=True, help="The volume's key in the run.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("/data"))
@click.option("--exclude", "excludes", multiple=True)
@click.option("--level", type=int, default=3)
@click.option("--threads", type=int, default=0)
@click.option("--previous-fingerprint", default=None)
@_result_option
@pass_ctx
def backup_volume(ctx: Context, run: str, key: str, root: Path, excludes: tuple[str, ...], level: int,
                  threads: int, previous_fingerprint: str | None, result_file: Path) -> None:
    """Archive the volume mounted at --root into the repository."""
    from dr.deployments.kubernetes import agent as tasks

    _run_task(ctx, run, key, result_file, lambda repo: tasks.backup_volume(
        repo, run=run, key=key, root=root, excludes=excludes, level=level, threads=threads,
        previous_fingerprint=previous_fingerprint))


@agent.command("backup-volumes")
@click.option("--run", required=True)
@click.option("--batch", required=True, help="The batch's name (names its result object).")
@click.option("--volume", "volumes", type=(str, str, str), multiple=True,
              metavar="KEY ROOT PREVIOUS", help="A volume's key, mount path and previous fingerprint ('-': none).")
@click.option("--home", "homes", type=(str, str, str, str), multiple=True, metavar="KEY ROOT SUBPATH PREVIOUS",
              help="A home on a shared volume mounted whole at ROOT: its key, subPath and previous fingerprint.")
@click.option("--exclude", "excludes", multiple=True)
@click.option("--level", type=int, default=3)
@click.option("--threads", type=int, default=0)
@_result_option
@pass_ctx
def backup_volumes(ctx: Context, run: str, batch: str, volumes: tuple[tuple[str, str, str], ...],
                   homes: tuple[tuple[str, str, str, str], ...], excludes: tuple[str, ...], level: int,
                   threads: int, result_file: Path) -> None:
    """Archive each volume mounted in this pod (a batch mover), and each home of a shared volume mounted
    whole: one result per volume."""
    from dr.deployments.kubernetes import agent as tasks

    if not volumes and not homes:
        raise UsageError("give at least one --volume or --home")
    todo = [(key, Path(root), None if prev == "-" else prev) for key, root, prev in volumes]
    shared = [(key, Path(root), sub, None if prev == "-" else prev) for key, root, sub, prev in homes]
    _run_task(ctx, run, batch, result_file, lambda repo: tasks.backup_volumes(
        repo, run=run, volumes=todo, homes=shared, excludes=excludes, level=level, threads=threads))


@agent.command("list-dirs")
@click.option("--run", required=True, help="Id of the operation (names results).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("/data"))
@click.option("--dir", "dirs", multiple=True, help="A directory (relative to --root) to list.")
@_result_option
@pass_ctx
def list_dirs(ctx: Context, run: str, root: Path, dirs: tuple[str, ...], result_file: Path) -> None:
    """List directories of the shared home volume mounted at --root (static storage)."""
    from dr.deployments.kubernetes import agent as tasks

    _run_task(ctx, run, "list-dirs", result_file, lambda repo: tasks.list_dirs(root=root, dirs=dirs))


@agent.command("restore-volume")
@click.option("--run", required=True, help="Id of the restore operation (names results).")
@click.option("--item-json", default=None, help="The manifest's item to restore (JSON).")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Copy from this mounted volume instead of an archive.")
@click.option("--source-home", default=None, metavar="SUBPATH",
              help="With --source (a shared volume mounted whole): copy only this home, opened safely.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("/data"))
@click.option("--path", "paths", multiple=True)
@click.option("--into", default=None)
@click.option("--discard-previous", is_flag=True)
@click.option("--exact-path", "exact_paths", multiple=True, help="An index path, matched exactly (self-service).")
@click.option("--while-running", is_flag=True, help="New files only under --into (the server may be running).")
@click.option("--replace-file", is_flag=True, help="With --while-running: swap one file in, the current kept.")
@_result_option
@pass_ctx
def restore_volume(ctx: Context, run: str, item_json: str | None, source: Path | None,
                   source_home: str | None, root: Path, paths: tuple[str, ...], into: str | None,
                   discard_previous: bool, exact_paths: tuple[str, ...], while_running: bool, replace_file: bool,
                   result_file: Path) -> None:
    """Restore into the volume mounted at --root (staged, then swapped)."""
    from dr.deployments.kubernetes import agent as tasks

    if (item_json is None) == (source is None):
        raise UsageError("give exactly one of --item-json and --source")
    if while_running and (source is not None or not into):
        raise UsageError("--while-running restores an archive (--item-json) into a new --into directory")
    if source_home is not None and source is None:
        raise UsageError("--source-home names a home of the shared volume mounted at --source")
    if exact_paths and source is not None:
        raise UsageError("--exact-path selects from an archive's index; a copy from --source takes --path")

    def task(repo: Repository) -> dict[str, Any]:
        if source is not None and source_home is not None:
            return tasks.copy_home(source=source, sub=source_home, root=root, run=run, paths=paths, into=into,
                                   keep_previous=not discard_previous)
        if source is not None:
            return tasks.copy_volume(source=source, root=root, run=run, paths=paths, into=into,
                                     keep_previous=not discard_previous)
        item = VolumeItem.from_dict(_json_arg(item_json or "", "--item-json"))
        if while_running:
            assert into is not None
            return tasks.restore_new_files(repo, item, root=root, into=into, paths=paths,
                                           exact_paths=exact_paths, replace_file=replace_file)
        return tasks.restore_volume(repo, item, root=root, paths=paths, into=into,
                                    keep_previous=not discard_previous, exact_paths=exact_paths)

    _run_task(ctx, run, "restore", result_file, task)


@agent.command("capture-hub-db")
@click.option("--run", required=True)
@click.option("--path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The live hub database, e.g. /srv/jupyterhub/jupyterhub.sqlite.")
@click.option("--level", type=int, default=3)
@_result_option
@pass_ctx
def capture_hub_db(ctx: Context, run: str, path: Path, level: int, result_file: Path) -> None:
    """Copy the live hub database consistently into the repository (the hub keeps running)."""
    from dr.deployments.kubernetes import agent as tasks

    _run_task(ctx, run, "hub", result_file, lambda repo: tasks.capture_hub_db(repo, run=run, path=path, level=level))


@agent.command("capture-server-hub-db")
@click.option("--run", required=True)
@click.option("--url", "url_text", required=True,
              help="The hub database's URL, without a password (it comes from $JDR_HUB_DB_PASSWORD).")
@click.option("--level", type=int, default=3)
@_result_option
@pass_ctx
def capture_server_hub_db(ctx: Context, run: str, url_text: str, level: int, result_file: Path) -> None:
    """Dump the hub's PostgreSQL/MySQL database with its own tool into the repository (the hub keeps running)."""
    from dr.deployments.kubernetes import hubdb_agent as tasks

    _run_task(ctx, run, "hub", result_file,
              lambda repo: tasks.capture_server_hub_db(repo, run=run, url_text=url_text, level=level))


@agent.command("check-server-hub-db")
@click.option("--run", required=True, help="Id of the restore operation.")
@click.option("--url", "url_text", required=True, help="The hub database's URL, without a password.")
@_result_option
@pass_ctx
def check_server_hub_db(ctx: Context, run: str, url_text: str, result_file: Path) -> None:
    """Whether the hub's PostgreSQL/MySQL database is reachable and empty (before a restore stops the hub)."""
    from dr.deployments.kubernetes import hubdb_agent as tasks

    _run_task(ctx, run, "hub-check", result_file, lambda repo: tasks.check_server_hub_db(url_text=url_text))


@agent.command("restore-server-hub-db")
@click.option("--run", required=True, help="Id of the restore operation (or drill).")
@click.option("--url", "url_text", required=True, help="The hub database's URL, without a password.")
@click.option("--artifact-json", required=True, help="The run's hub DB artifact (JSON).")
@click.option("--replace", is_flag=True, help="Set the database's current tables aside and restore.")
@click.option("--scratch", default="", help="Restore into this new database, inspect it, drop it (drills).")
@_result_option
@pass_ctx
def restore_server_hub_db(ctx: Context, run: str, url_text: str, artifact_json: str, replace: bool, scratch: str,
                          result_file: Path) -> None:
    """Load the run's dump into the hub's PostgreSQL/MySQL database (the hub stopped), or into a scratch one."""
    from dr.deployments.kubernetes import hubdb_agent as tasks

    artifact = Artifact.from_dict(_json_arg(artifact_json, "--artifact-json"))
    _run_task(ctx, run, "hub-restore", result_file,
              lambda repo: tasks.restore_server_hub_db(repo, artifact=artifact, url_text=url_text, replace=replace,
                                                       scratch=scratch))


@agent.command("restore-hub-db")
@click.option("--run", required=True, help="Id of the restore operation.")
@click.option("--artifact-json", required=True, help="The run's hub DB artifact (JSON).")
@click.option("--path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@_result_option
@pass_ctx
def restore_hub_db(ctx: Context, run: str, artifact_json: str, path: Path, result_file: Path) -> None:
    """Replace the hub database with the artifact's (the hub stopped); the old one is kept beside it."""
    from dr.deployments.kubernetes import agent as tasks

    artifact = Artifact.from_dict(_json_arg(artifact_json, "--artifact-json"))
    _run_task(ctx, run, "hub-restore", result_file,
              lambda repo: tasks.restore_hub_db(repo, artifact=artifact, path=path))
