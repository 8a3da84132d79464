"""The deployment port: what backup and restore operations need from the place a hub runs.

An adapter finds the hub database and the users' volumes, captures them into a repository, and puts
them back. Operations (dr.operations) decide what to do; adapters only act. Both adapters run the same
contract suite (tests/contract/test_deployment_contract.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from dr.hubdb.info import DbInfo
from dr.model import Artifact, Manifest, VolumeItem, volume_label
from dr.repository.repository import Repository

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Volume:
    """One volume to back up: a user's home directory, or a PVC."""

    key: str
    user: str | None
    server: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    running: bool = False  # the user's server is running (per the hub DB or the cluster)
    last_activity: datetime | None = None

    @property
    def label(self) -> str:
        return volume_label(self.user, self.server, self.source, self.key)


@dataclass(frozen=True)
class BackupContext:
    repo: Repository
    run: str
    full: bool = False
    method: str = "archive"
    excludes: Sequence[str] = ()
    level: int = 3
    threads: int = 0
    previous: Manifest | None = None  # the newest run to reuse unchanged volumes from
    progress: Progress | None = None
    damaged: frozenset[str] = frozenset()  # artifact keys recorded damaged: never referenced again
    reuse_since: datetime | None = None  # artifacts written before this are not referenced (full_every)


@dataclass(frozen=True)
class VolumeRestore:
    """What to restore for one volume: the recorded item, where it goes, and how."""

    item: VolumeItem  # as recorded in the manifest
    target_user: str | None  # whose volume receives it (``--as``); None for an unmapped PVC
    target_server: str = ""
    paths: tuple[str, ...] = ()  # ``--path`` globs; empty means the whole volume
    into: str | None = None  # ``--into SUBDIR``: restore beside the current files
    keep_previous: bool = True  # keep the replaced contents aside after success
    progress: Progress | None = None  # called with (files, bytes) done, for progress display
    # Self-service (``jdr serve``, issue 13). ``exact_paths``: index entry paths (as in the index, no
    # leading ``/``), matched exactly, never as globs; naming a directory selects it with everything under
    # it. Empty: ``paths`` (or the whole volume) decides.
    exact_paths: tuple[str, ...] = ()
    # Create new files only: never replace, move or remove anything that exists, so the restore is allowed
    # while the user's server runs (no stop through the hub). Requires ``into`` (a directory that does not
    # exist yet, e.g. ``restored/2026-12-01``), also with ``replace_file``. On Kubernetes the mover runs on the
    # node of the user's pod (an RWO volume in use is mountable only there).
    while_running: bool = False
    # With ``while_running`` and one ``exact_paths`` entry that is a regular file: restore it over the
    # current file: the file is restored under ``into`` as above, then the current one is renamed (never
    # removed) to ``<stem>.jdr-<date><suffix>`` beside it (``previous``) and the restored one renamed into
    # its place (renames without replace: a name that appears meanwhile leaves the copy under ``into``).
    replace_file: bool = False


@dataclass(frozen=True)
class VolumeRestoreResult:
    target: str  # where it was restored (a path or a PVC name)
    files: int
    bytes: int
    previous: str | None  # where the replaced contents were kept, if any
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class CapturedHub:
    """A captured hub DB: a local copy, what it holds, and the artifact when the adapter stored it itself."""

    db_file: Path
    info: DbInfo
    artifact: Artifact | None = None  # already the run's hub DB artifact; None: the operation stores db_file


class HubCapture(Protocol):
    """Optional hook, for adapters whose hub DB is best captured straight into the repository (Kubernetes:
    a mover pod next to the hub writes it). Operations use it instead of ``hub_database()`` when present."""

    def capture_hub_database(self, repo: Repository, run: str, *, level: int = 3,
                             keep: bool = True) -> AbstractContextManager[CapturedHub]:
        """Capture the live hub DB as ``run``'s artifact and yield it with a local copy. ``keep=False``
        (a dry run): nothing stays in the repository, and ``artifact`` is None."""
        ...


class HubRestoreFrom(Protocol):
    """Optional hook, for adapters that put the hub DB back from its artifact (Kubernetes: a mover pod in
    the hub's volume downloads it). Operations use it instead of ``restore_hub_database()`` when present."""

    def restore_hub_database_from(self, repo: Repository, manifest: Manifest) -> str:
        """Replace the hub DB with ``manifest``'s (hub stopped); returns where the old one was kept."""
        ...


class Deployment(Protocol):
    kind: str

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the deployment (kind, namespace, paths …; no secrets)."""
        ...

    def hub_database(self) -> AbstractContextManager[tuple[Path, DbInfo]]:
        """A consistent, integrity-checked copy of the live hub DB in a temporary file (removed on exit)."""
        ...

    def hub_secret(self) -> bytes | None:
        """The ``hub`` Secret as JSON bytes (Kubernetes), or None where there is none (local)."""
        ...

    def volumes(self, db: DbInfo) -> list[Volume]:
        """Every volume to back up: users from the hub DB joined with what exists on disk / in the cluster."""
        ...

    def backup_volumes(self, volumes: Sequence[Volume], ctx: BackupContext) -> Iterator[VolumeItem]:
        """Back up each volume; yields one item per volume (failed items carry the error, never raise)."""
        ...

    def restore_volume(self, req: VolumeRestore, repo: Repository) -> VolumeRestoreResult:
        """Put one volume back, safely (staged, then swapped; the replaced contents kept).

        With ``req.while_running`` nothing existing is replaced or removed: the selected entries are
        created under ``req.into`` (which must not exist), owned by the volume's owner, through directory
        descriptors that never follow a link; ``target`` is then that directory (a path, or
        ``<pvc>:<into>``). With ``req.replace_file`` the current file is kept beside it (``previous``).
        Raises UsageError when ``into`` exists (its message says "already exists": ``jdr serve`` then
        tries the next name, ``restored/<date>-2``) or a component of it is a link, NotFoundError when an
        ``exact_paths`` entry is not in the run's index."""
        ...

    def server_running(self, user: str, server: str = "") -> bool:
        """Whether the user's server is running (and so mounts the volume)."""
        ...

    def hub_running(self) -> bool:
        ...

    def stop_hub(self) -> None:
        """Stop the hub and wait until it no longer uses its database."""
        ...

    def start_hub(self) -> None:
        """Start the hub again and wait until it is ready (where that can be known)."""
        ...

    def restore_hub_database(self, db_file: Path, info: DbInfo) -> str:
        """Replace the hub DB with ``db_file`` (hub stopped); returns where the old one was kept."""
        ...

    def restore_hub_secret(self, data: bytes) -> None:
        """Replace the ``hub`` Secret (Kubernetes); local deployments have none."""
        ...
