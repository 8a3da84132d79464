"""Checks of a restore request against a local hub, made before anything is done (no server stopped,
nothing written), and the ownership a restore ``--as`` another user gives.

They turn an operator's mistake (an empty ``--as``, a typo, an ``--into`` that exists or crosses a mount
point) into an error that names it, with exit code 2. They read, never write; a check that passes does
not make the restore safe by itself — the restore engine (dr.deployments.volume_swap) verifies every
step again as it acts, since the user may change their home in between.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from dr.deployments.base import VolumeRestore
from dr.errors import JdrError, NotFoundError, UsageError
from dr.hubdb.capture import inspect_database
from dr.policy.owners import OwnerMap, owner_map
from dr.policy.restore_plan import NAME_MAX

log = logging.getLogger(__name__)


def check_local_restore(req: VolumeRestore, home: Path, hub_db: Path) -> None:
    """Raise UsageError/NotFoundError if restoring ``req`` into ``home`` (the target user's home, per the
    deployment's template) cannot be done: a path component longer than file names may be; for ``--as``,
    a user the hub database does not know or whose home does not exist; for ``--into``, a destination
    that exists already, crosses a symlink or a non-directory, or lies on another file system than the
    home (a mount point in between: the restored tree could not be moved there)."""
    target = req.target_user or ""
    for part in home.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UsageError(f"user {target!r}: the home directory name {part[:40]!r}… is longer than "
                             f"{NAME_MAX} bytes")
    home_st = _stat(home, follow=True)  # the home's path is the operator's (as the engine opens it)
    if target != req.item.user:
        _check_known_user(target, hub_db)
        if home_st is None or not stat.S_ISDIR(home_st.st_mode):
            raise NotFoundError(f"--as {target!r}: their home {home} does not exist (or is not a directory)",
                                hint="a restore as another user goes into that user's existing home; "
                                     "start their server once to create it")
    if req.into is not None and home_st is not None and stat.S_ISDIR(home_st.st_mode):
        _check_into(home, home_st, req.into)


def _check_known_user(user: str, hub_db: Path) -> None:
    try:
        users = inspect_database(hub_db).users
    except JdrError as e:  # the hub DB may be what is being recovered; the home must exist then
        log.warning("cannot read the hub database to check --as %r: %s", user, e)
        return
    if user not in users:
        raise NotFoundError(f"--as {user!r}: the hub has no such user",
                            hint="check the name (it is case-sensitive); users: "
                                 + ", ".join(sorted(users)[:20]))


def _check_into(home: Path, home_st: os.stat_result, into: str) -> None:
    current = home
    for part in [p for p in into.split("/") if p not in ("", ".")]:
        current = current / part
        st = _stat(current, follow=False)  # inside the home: the user's, never followed
        if st is None:
            break  # created by the restore, on the file system of its parent
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise UsageError(f"--into {into!r}: {current} is {kind}",
                             hint="give a new directory whose parents are plain directories of the home")
        if st.st_dev != home_st.st_dev:
            raise UsageError(f"--into {into!r}: {current} is on another file system than the home "
                             "(a mount point); the restored files could not be moved there",
                             hint="choose a directory on the home's own file system")
    else:
        raise UsageError(f"--into {into!r}: {current} already exists; choose a new directory name")


def _stat(path: Path, *, follow: bool) -> os.stat_result | None:
    try:
        return os.stat(path, follow_symlinks=follow)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise UsageError(f"{path}: a name longer than this file system allows") from None
        raise


def restore_owner_map(req: VolumeRestore, home: Path) -> OwnerMap | None:
    """The ownership mapping of a restore ``--as`` another user into ``home`` (None for a user's own
    restore, which keeps the archive's owners): see :func:`dr.policy.owners.owner_map`."""
    if req.target_user is None or req.target_user == req.item.user:
        return None
    st = os.stat(home)
    return owner_map((st.st_uid, st.st_gid))
