"""Self-service restores (``jdr serve``, issue 13): the checks and the one extra step the local adapter
(and the Kubernetes mover) need beyond :func:`dr.deployments.volume_swap.restore_into`.

A self-service restore runs while the user's server runs, so it creates new files only
(``VolumeRestore.while_running``): everything goes under a directory that does not exist yet
(``restored/<date>``), through directory descriptors that never follow a link. "Replace" then renames the
current file aside and the restored one into its place — renames without replace, nothing removed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from dr.deployments.base import VolumeRestore
from dr.errors import DeploymentError, NotFoundError, UsageError
from dr.model import IndexEntry
from dr.util import fsops

_ATTEMPTS = 100


def check_self_service(req: VolumeRestore, index: Mapping[bytes, IndexEntry]) -> None:
    """Refuse, before anything is written, a self-service request that cannot be: ``while_running``
    without ``into``; an ``exact_paths`` entry the index does not hold; ``replace_file`` for anything but
    one regular file."""
    if req.while_running and not req.into:
        raise UsageError("a restore while the server runs needs a new directory to restore into")
    if req.replace_file and not req.while_running:
        raise UsageError("replace_file is a self-service restore: set while_running")
    for p in req.exact_paths:
        if os.fsencode(p) not in index:
            raise NotFoundError(f"{p!r} is not in the run's index of {req.item.label}")
    if req.replace_file:
        if len(req.exact_paths) != 1:
            raise UsageError("replace works on one file at a time")
        entry = index[os.fsencode(req.exact_paths[0])]
        if entry.type != "file":
            raise UsageError(f"replace works on regular files; {entry.name!r} is a {entry.type}")


def kept_name(name: str, stamp: str, n: int = 0) -> str:
    """``thesis.ipynb`` -> ``thesis.jdr-<stamp>.ipynb`` (``-<n>`` added after the stamp when n > 0);
    a name without a suffix (or a dot file) gets the stamp at its end."""
    tag = f".jdr-{stamp}" + (f"-{n}" if n else "")
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return name + tag
    return f"{stem}{tag}.{suffix}"


def swap_in_file(home: Path, into: str, path: str, stamp: str) -> str | None:
    """Move the file restored at ``home/into/path`` to ``home/path``; the current entry there, if any, is
    first renamed to :func:`kept_name` beside it. Returns the kept entry's path (relative to the home),
    or None when there was no current entry. Every directory is opened without following links; a
    missing parent directory or a name that appears meanwhile raises DeploymentError (the restored copy
    stays under ``into``, nothing is lost)."""
    parts = path.split("/")
    name = parts[-1]
    home_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    src_fd = dst_fd = -1
    try:
        src_fd = _walk(home_fd, [p for p in into.split("/") if p] + parts[:-1], "the restored copy")
        dst_fd = _walk(home_fd, parts[:-1], "the file's folder")
        st = fsops.lstat_at(name, src_fd)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise DeploymentError(f"the restored copy of {path!r} is missing under {into}")
        kept: str | None = None
        if fsops.lstat_at(name, dst_fd) is not None:
            for n in range(_ATTEMPTS):
                candidate = kept_name(name, stamp, n)
                try:
                    fsops.rename_noreplace(dst_fd, name, dst_fd, candidate)
                except FileExistsError:
                    continue
                kept = "/".join([*parts[:-1], candidate])
                break
            else:
                raise DeploymentError(f"cannot keep the current {path!r}: every kept name is taken")
        try:
            fsops.rename_noreplace(src_fd, name, dst_fd, name)
        except FileExistsError:
            raise DeploymentError(f"{path!r} was re-created while it was being replaced; the restored copy "
                                  f"is in {into}") from None
        return kept
    finally:
        for fd in (src_fd, dst_fd, home_fd):
            if fd >= 0:
                os.close(fd)


def _walk(root_fd: int, parts: list[str], what: str) -> int:
    fd = os.dup(root_fd)
    for i, part in enumerate(parts):
        try:
            nxt = fsops.open_dir(part, fd)
        except OSError as e:
            os.close(fd)
            raise DeploymentError(f"{what}: {'/'.join(parts[:i + 1])} is missing, a link or not a "
                                  f"directory ({e.strerror})") from None
        os.close(fd)
        fd = nxt
    return fd
