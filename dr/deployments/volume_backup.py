"""Archiving one volume's tree into the repository: shared by the local deployment (in-process) and by
Kubernetes mover pods (``jdr agent backup-volume``), so both write byte-for-byte the same artifacts.

When a previous archive may be reused, the tree is fingerprinted first (a listing, no contents read);
when the fingerprint equals the one of the previous run's archive, nothing is uploaded and the caller
references that archive instead (only when the reuse decision, dr/deployments/reuse.py, found that
archive good). Otherwise the walk that writes the archive computes the fingerprint as it goes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dr.archive.frames import CompressionPool
from dr.archive.writer import fingerprint, write_archive
from dr.deployments.volume_swap import unfinished_restore
from dr.errors import DeploymentError
from dr.model import Artifact
from dr.repository import layout
from dr.repository.repository import Repository

log = logging.getLogger(__name__)

#: Patterns always left out of archives: none. jdr's own restore state is left out by the walk itself, by
#: exact name at the volume's root and verified ownership (:func:`dr.archive.walk.is_restore_state`), so a
#: user's own ``.jdr-restore…`` anywhere is backed up like any other file.
ALWAYS_EXCLUDED: tuple[str, ...] = ()


@dataclass(frozen=True)
class TreeBackup:
    """What archiving one tree produced. ``unchanged``: the fingerprint matched; nothing was written."""

    fingerprint: str
    files: int
    bytes: int
    unchanged: bool = False
    archive: Artifact | None = None
    index: Artifact | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def backup_tree(root: Path, repo: Repository, run: str, key: str, *, excludes: Sequence[str] = (),
                level: int = 3, threads: int = 0, previous_fingerprint: str | None = None,
                progress: Callable[[int, int], None] | None = None,
                pool: CompressionPool | None = None) -> TreeBackup:
    """Archive the tree at ``root`` as volume ``key`` of ``run``, unless its fingerprint equals
    ``previous_fingerprint`` (pass it only when :func:`dr.deployments.reuse.decide_reuse` allows the
    previous archive to be referenced again: not damaged, not too old, present at its size).

    ``threads`` is the ``backup.threads`` setting: the threads compressing the archive's frames (0 means
    one per CPU), so that compression runs beside (not after) the reading of files, as in ``tar | zstd -T0``.
    With ``pool`` (several trees archived at once), that shared pool compresses instead.

    Raises OSError when ``root`` cannot be read and JdrError for repository failures; an upload that
    fails is aborted (nothing appears under its key). Raises DeploymentError when a restore into the
    volume was killed during its swap: part of the home then sits in the restore's state, and archiving
    the rest would record a good-looking copy of a half-swapped home.
    """
    pending = unfinished_restore(root)
    if pending is not None:
        raise DeploymentError(
            f"an interrupted restore left {root} half swapped ({pending}), so it was not backed up: run "
            "the same `jdr restore` again to finish it (nothing is lost)")
    excludes = (*ALWAYS_EXCLUDED, *excludes)
    zstd_threads = threads if threads > 0 else -1  # zstandard: -1 = one worker per CPU
    expect = getattr(progress, "expect", None)
    # The listing is walked ahead of the archive only when something needs it first: the reuse decision,
    # or a progress bar's totals. Otherwise (a first backup) the archive's own walk computes it.
    if previous_fingerprint is not None or expect is not None:
        fp, files, size = fingerprint(root, excludes)
        if previous_fingerprint is not None and previous_fingerprint == fp:
            return TreeBackup(fingerprint=fp, files=files, bytes=size, unchanged=True)
        if expect is not None:
            expect(files, size)  # the listing's totals, so that a progress bar can show an ETA
    enc = repo.encrypted
    with repo.artifact_writer(layout.volume_archive_key(run, key, enc), run) as aw, \
            repo.artifact_writer(layout.volume_index_key(run, key, enc), run) as iw:
        stats = write_archive(root, aw, iw, excludes=excludes, level=level, threads=zstd_threads,
                               progress=progress, pool=pool)
    # The fingerprint recorded is that of the walk that archived: the tree as archived, not as listed
    # before (they differ only if the tree changed in between, and then the archive's is the true one).
    return TreeBackup(fingerprint=stats.fingerprint, files=stats.files, bytes=stats.bytes, archive=aw.artifact,
                      index=iw.artifact, warnings=tuple(stats.warnings))
