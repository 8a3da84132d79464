"""Opening one home inside a shared (static) home volume, in a mover that mounts the whole volume.

A batch mover of static homes (:mod:`.batch`) mounts the shared PVC once and archives many homes from it. The
kubelet's ``subPath`` is not there to confine each home, so the mover confines it itself: the home's
subdirectory is opened one component at a time, each relative to its parent's descriptor with ``O_NOFOLLOW``
(a symlink anywhere on the way — a user who replaced her home ``alice`` with a link to ``bob``, or a parent
directory that links to ``/`` — fails the open), each must be a directory on the volume's own device, and the
home is then read through ``/proc/self/fd/N``: the directory that was opened, whatever is renamed or replaced
on the volume afterwards.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath

from dr.errors import DeploymentError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class HomeRefused(DeploymentError):
    """The home's subdirectory is not a real directory of the shared volume (a link, a file, another device)."""


def open_home(root: Path, sub: str) -> int:
    """A descriptor of the directory ``sub`` (a relative subPath) of the volume mounted at ``root``.

    Raises HomeRefused when ``sub`` is absolute, empty, has ``..``, or any of its components is a symlink, not
    a directory, or on another device than ``root``; OSError when ``root`` or a component cannot be opened
    otherwise (e.g. missing). The caller closes the descriptor.
    """
    parts = PurePosixPath(sub).parts
    if not parts or sub.startswith("/") or any(p in ("..", ".") for p in parts):
        raise HomeRefused(f"{sub!r} is not a subdirectory of the shared volume")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        device = os.fstat(fd).st_dev
        for i, part in enumerate(parts):
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    where = "/".join(parts[: i + 1])
                    raise HomeRefused(f"{where} on the shared volume is a symlink or not a directory: jdr never "
                                      f"follows a link out of a home (home {sub} not backed up)") from None
                raise
            os.close(fd)
            fd = child
            if os.fstat(fd).st_dev != device:
                raise HomeRefused(f"{'/'.join(parts[: i + 1])} is on another file system than the shared volume "
                                  f"(home {sub} not backed up)")
        return fd
    except BaseException:
        os.close(fd)
        raise


def fd_path(fd: int) -> Path:
    """A path that names the open directory ``fd`` itself (not whatever holds its name now)."""
    return Path(f"/proc/self/fd/{fd}")
