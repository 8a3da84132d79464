"""Reading a volume archive for a restore: only the frames a ``--path`` selection needs, when it can.

A restore of chosen paths from a seekable archive (docs/FORMAT.md, "Seekable archive") reads the
index, then only the frames holding the chosen entries, with ranged reads of the repository
(:func:`dr.archive.seek.open_ranged`). A whole restore, and a restore from an archive written before
frames were recorded, stream the whole artifact and check its SHA-256 at the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from dr.archive.globs import exact_matcher, path_matcher
from dr.archive.seek import open_ranged, seekable
from dr.model import Artifact, IndexEntry
from dr.repository.repository import Repository


@dataclass
class ArchiveSource:
    """The archive to extract: ``compressed`` says whether it is the zstd stream (whole) or a plain tar
    of the selected entries (ranged); ``whole`` whether it must be drained to check the artifact."""

    stream: BinaryIO
    compressed: bool
    whole: bool


@contextmanager
def open_for_restore(repo: Repository, archive: Artifact, index: Mapping[bytes, IndexEntry],
                     paths: tuple[str, ...], exact_paths: tuple[str, ...] = ()) -> Iterator[ArchiveSource]:
    """The archive of a restore of ``paths`` globs or ``exact_paths`` (all when both are empty; the
    selection of :func:`dr.deployments.volume_swap.restore_into`), read ranged where it can be."""
    entries = list(index.values())
    if (paths or exact_paths) and seekable(entries):
        select = exact_matcher(exact_paths) if exact_paths else path_matcher(paths)
        fetch, size = repo.artifact_range(archive)
        what = f"archive {archive.key} (of run {archive.run or '?'})"
        with open_ranged(entries, select, fetch, size, what=what) as stream:
            yield ArchiveSource(stream, compressed=False, whole=False)
        return
    with repo.open_artifact(archive) as stream:
        yield ArchiveSource(stream, compressed=True, whole=True)
