"""Read-only views of a repository: the list of runs, one run, the files of one volume in a run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dr.archive.globs import path_matcher
from dr.archive.index import read_index
from dr.catalog import Catalog, RunRow
from dr.errors import NotFoundError, UsageError
from dr.model import IndexEntry, Manifest
from dr.repository.artifacts import drain
from dr.repository.repository import Repository

log = logging.getLogger(__name__)


def synced_catalog(repo: Repository, catalog: Catalog) -> Catalog:
    """Bring the catalog in line with the repository (one LIST of runs; manifests only for new runs)."""
    ids = repo.run_ids()
    if catalog.is_stale(ids):
        result = catalog.sync(ids, repo.load_manifest)
        if result.changed:
            log.debug("catalog: %d runs added, %d removed", len(result.added), len(result.removed))
    return catalog


def list_runs(repo: Repository, catalog: Catalog, user: str | None = None) -> list[RunRow]:
    return synced_catalog(repo, catalog).runs(user=user)


def show_run(repo: Repository, run_ref: str) -> Manifest:
    return repo.load_manifest(repo.resolve_run(run_ref))


@dataclass(frozen=True)
class Listing:
    run: str
    user: str
    entries: list[IndexEntry]

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "user": self.user, "entries": [e.to_dict() for e in self.entries]}


def iter_index(repo: Repository, manifest: Manifest, user: str, server: str = "") -> Iterator[IndexEntry]:
    item = manifest.volume_for(user, server)
    if item is None:
        raise NotFoundError(f"run {manifest.run} has no volume of user {user!r}")
    if item.index is None:
        raise NotFoundError(f"run {manifest.run} has no file index for {user!r} "
                            f"(method {item.method}: snapshots are not indexed)")
    with repo.open_artifact(item.index) as src:
        yield from read_index(src)
        drain(src)


def ls_files(repo: Repository, run_ref: str, user: str, path: str | None = None,
             server: str = "") -> Listing:
    """Entries of a user's volume in a run, from the index: all, or those under/matching ``path``."""
    manifest = repo.load_manifest(repo.resolve_run(run_ref))
    try:
        select = path_matcher([path]) if path else None
    except ValueError as e:
        raise UsageError(str(e)) from e
    entries = [e for e in iter_index(repo, manifest, user, server)
               if e.path != b"." and (select is None or select(e))]
    if path and not entries:
        raise NotFoundError(f"nothing matches {path!r} in {user}'s volume in run {manifest.run}")
    return Listing(run=manifest.run, user=user, entries=entries)
