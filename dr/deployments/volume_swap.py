"""Restoring into a volume without ever losing what it held: extract beside, verify, then swap.

Used in-process for local homes and inside mover pods for PVCs (the PVC's mount point cannot be renamed,
so the swap moves entries, not the root). jdr runs as root over a directory its user controls, and the
user's processes may change it while the restore runs, so:

- Restore state lives in a fresh private directory at the volume's root, verified before every use
  (:mod:`dr.deployments.restore_state`): the archive is extracted into its ``staging/``; any refusal
  (hostile entry, bad checksum, full disk) removes it and leaves the volume as it was.
- Every step of the swap works on directory descriptors opened with ``O_NOFOLLOW | O_DIRECTORY`` and
  bare names (:mod:`dr.util.fsops`): a directory of the home is opened once, then merged into through
  its descriptor; attributes are set with ``fchown``/``fchmod``/``futimens`` on descriptors; no path is
  resolved twice, so swapping a directory for a symlink mid-restore cannot redirect a write, a rename or
  a mode change.
- Entries are moved with ``renameat2(RENAME_NOREPLACE)``: a name the user (re)creates meanwhile is put
  aside too, never renamed over; kept names are never reused.
- The replaced entries are collected in ``replaced/`` (root-only while the restore runs) and at the end
  handed over to the home's owner as ``<volume>/jdr-replaced-<time>/``, a directory jdr never touches
  again. The journal lets a killed restore be rolled forward by the next run (:func:`recover`).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dr.archive.globs import exact_matcher, path_matcher
from dr.archive.reader import extract_archive
from dr.archive.walk import LEGACY_STATE_NAME, STATE_NAME, is_restore_state
from dr.deployments import restore_state
from dr.deployments.restore_state import REPLACED, STAGING, Journal, StateDir
from dr.errors import DeploymentError, UsageError
from dr.model import IndexEntry
from dr.util import fsops
from dr.util.testhooks import pause_at
from dr.util.timefmt import utcnow

log = logging.getLogger(__name__)

#: The fixed name of earlier versions' restore state (still recognised, never used).
RESTORE_DIR = LEGACY_STATE_NAME.decode()
KEPT_PREFIX = "jdr-replaced-"
KEPT_NAME = re.compile(r"jdr-replaced-\d{8}T\d{6}Z(-\d+)?")
_ATTEMPTS = 50  # a name the user keeps re-creating while it is being restored


@dataclass(frozen=True)
class SwapResult:
    files: int
    bytes: int
    previous: str | None  # where the replaced entries were handed to the user, or None


def restore_into(root: Path, archive: BinaryIO, *, run: str, index: Mapping[bytes, IndexEntry] | None,
                 paths: tuple[str, ...] = (), into: str | None = None, keep_previous: bool = True,
                 exact_paths: tuple[str, ...] = (),
                 drain: Callable[[BinaryIO], None] | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 map_owner: Callable[[int, int], tuple[int, int]] | None = None,
                 compressed: bool = True) -> SwapResult:
    """Restore the (decrypted, zstd-compressed; a plain tar with ``compressed=False``) ``archive`` into
    the volume at ``root``.

    ``paths``: only the entries matching these globs, merged into the current contents (entries they
    replace are kept). ``into``: extract into ``root/into`` (which must not exist; no component may be a
    symlink) and touch nothing else. Otherwise the whole volume is replaced. ``drain`` reads the rest of
    ``archive`` so that a verifying reader below it checks the artifact's checksum before anything is
    swapped in. ``map_owner(uid, gid)`` maps the archive's owners (restoring as another user).
    ``exact_paths`` (self-service) selects by exact index path instead of ``paths`` globs (a directory
    with everything under it; ``dr.archive.globs.exact_matcher``).

    The path ``root`` is the operator's (its parents must not be writable by the user); it is opened once.
    Raises UsageError for a bad ``into`` (before anything is written), HostileArchiveError /
    IntegrityError / DeploymentError from the extraction (the volume left as it was).
    """
    home_fd = _open_home(root)
    try:
        _recover_fd(home_fd, root)
        before = os.fstat(home_fd)
        into_parts = _into_parts(into) if into is not None else None
        try:
            select = (exact_matcher(exact_paths) if exact_paths else path_matcher(paths) if paths else None)
        except ValueError as e:
            raise UsageError(str(e)) from e
        if into_parts is not None:
            _check_into_free(home_fd, into, into_parts)
        state = restore_state.create(home_fd)
        with state:
            try:
                staging = state.make_dir(STAGING)
                try:
                    stats = extract_archive(archive, staging, select=select,
                                            index=index, map_owner=map_owner, progress=progress,
                                            label=str(root / state.name / STAGING),
                                            compressed=compressed)
                    if drain is not None:
                        drain(archive)
                    root_attrs = restore_state.attrs_of(os.fstat(staging))
                finally:
                    os.close(staging)
            except BaseException:
                state.remove()
                _set_times(home_fd, before)  # a refused restore leaves the home exactly as it was
                raise
            if into is not None and into_parts is not None:
                try:
                    _move_into(home_fd, state, into, into_parts, before)
                finally:
                    state.remove()
                return SwapResult(stats.files, stats.bytes, None)
            journal = Journal(run=run, mode="paths" if paths or exact_paths else "full", phase="move-out",
                              root_attrs=root_attrs)
            state.write_journal(journal)
            kept = _finish(home_fd, state, journal, keep_previous=keep_previous)
        _apply_attrs(home_fd, journal.root_attrs)  # again: removing the state changed the home's mtime
    finally:
        os.close(home_fd)
    return SwapResult(stats.files, stats.bytes, str(root / kept) if kept else None)


def recover(root: Path) -> bool:
    """Finish every swap that a killed restore left half done in the volume at ``root``, and remove the
    state of restores killed before their swap began. Returns True if a swap was finished."""
    home_fd = _open_home(root)
    try:
        return _recover_fd(home_fd, root)
    finally:
        os.close(home_fd)


def unfinished_restore(root: Path) -> str | None:
    """The name of the state directory of a half-done swap in the volume at ``root``, or None."""
    home_fd = _open_home(root)
    try:
        return restore_state.unfinished(home_fd)
    finally:
        os.close(home_fd)


# --- the swap ----------------------------------------------------------------------------------------------


def _recover_fd(home_fd: int, root: Path) -> bool:
    finished = False
    for state in restore_state.find(home_fd):
        with state:
            journal = state.read_journal()
            if journal is None:  # killed before its swap began: staging only, incomplete
                log.info("removing the state of a restore of %s killed before its swap (%s)", root, state.name)
                state.remove()
                continue
            log.warning("finishing an interrupted restore of %s (run %s)", root, journal.run)
            kept = _finish(home_fd, state, journal, keep_previous=True)
            _apply_attrs(home_fd, journal.root_attrs)
            if kept:
                log.warning("what that restore replaced is kept in %s", root / kept)
            finished = True
    return finished


def _finish(home_fd: int, state: StateDir, journal: Journal, *, keep_previous: bool) -> str | None:
    """Roll the swap of ``journal`` forward to the end; returns the name the replaced entries were handed
    over under (in the home), or None. Each step is idempotent, so a kill anywhere is finished by rerun."""
    owner = (journal.root_attrs["uid"], journal.root_attrs["gid"])
    aside = _Aside.top(state, owner)
    try:
        if journal.phase == "move-out":
            if journal.mode == "full":
                _move_out(home_fd, aside)
            journal = journal.at("move-in")
            state.write_journal(journal)
        if journal.phase == "move-in":
            staging = state.open_sub(STAGING)
            if staging is not None:
                try:
                    _merge(staging, home_fd, aside, top=True)
                finally:
                    os.close(staging)
            _apply_attrs(home_fd, journal.root_attrs)
            journal = journal.at("handover")
            state.write_journal(journal)
    finally:
        aside.close()
    pause_at("restore-handover")
    kept = _hand_over(home_fd, state, owner, keep=keep_previous)
    state.remove_journal()
    state.remove()
    return kept


def _move_out(home_fd: int, aside: _Aside) -> None:
    """Full restore: every entry of the home goes aside, but jdr's own state and the copies earlier
    restores handed over (``jdr-replaced-*`` directories: the user's to delete, not ours to bury)."""
    for moved, name in enumerate(sorted(os.listdir(home_fd))):
        st = fsops.lstat_at(name, home_fd)
        if st is None or is_restore_state(os.fsencode(name), st) or aside.is_state(st):
            continue  # jdr's state, also when the user renamed it (it is found by identity)
        if stat.S_ISDIR(st.st_mode) and KEPT_NAME.fullmatch(name):
            continue
        pause_at("restore-move-out", moved)
        aside.put(home_fd, name)


def _merge(src_fd: int, dst_fd: int, aside: _Aside, *, top: bool = False) -> None:
    """Move every entry of ``src_fd`` (staging, ours) into ``dst_fd`` (the home); an entry of the home it
    replaces goes to ``aside``. Directories on both sides are merged recursively, through descriptors.
    Each step is a rename, so re-running after a kill continues where it stopped. At the ``top``, an
    entry that would pass for jdr's own restore state is never moved in (a crafted archive could carry a
    forged one; a user's own ``.jdr-restore…`` is theirs, not root's 0700, and is restored)."""
    for name in sorted(os.listdir(src_fd)):
        if top:
            st = fsops.lstat_at(name, src_fd)
            if st is not None and is_restore_state(os.fsencode(name), st):
                log.warning("not restoring %r: the archive holds what looks like jdr's restore state", name)
                continue
        _merge_one(src_fd, dst_fd, name, aside)


def _is_state_name(name: str) -> bool:
    raw = os.fsencode(name)
    return bool(STATE_NAME.fullmatch(raw)) or raw == LEGACY_STATE_NAME


def _merge_one(src_fd: int, dst_fd: int, name: str, aside: _Aside) -> None:
    s_st = fsops.lstat_at(name, src_fd)
    if s_st is None:
        return
    for _ in range(_ATTEMPTS):
        d_st = fsops.lstat_at(name, dst_fd)
        if d_st is not None and aside.is_state(d_st):
            raise DeploymentError(
                f"the restore's own state directory was renamed to {os.fsdecode(name)!r} while it ran",
                hint=f"rename it back to {aside.state.name} (its contents are the restore's), then run the "
                     "restore again to finish it")
        if stat.S_ISDIR(s_st.st_mode):
            pause_at("restore-merge-dir")
            d_fd = _open_dir_or_none(name, dst_fd)
            if d_fd is not None:  # a real directory of the home, pinned: merge into it
                try:
                    s_fd = fsops.open_dir(name, src_fd)
                    try:
                        _merge(s_fd, d_fd, aside.sub(name))
                    finally:
                        os.close(s_fd)
                    _apply_attrs(d_fd, restore_state.attrs_of(s_st))
                finally:
                    os.close(d_fd)
                os.rmdir(name, dir_fd=src_fd)
                return
        if fsops.lstat_at(name, dst_fd) is not None:
            aside.put(dst_fd, name)
        pause_at("restore-move-in")
        try:
            fsops.rename_noreplace(src_fd, name, dst_fd, name)
            return
        except FileExistsError:
            continue  # made again meanwhile: put that aside too, then retry
    raise DeploymentError(f"{os.fsdecode(name)!r} was re-created {_ATTEMPTS} times while it was being "
                          "restored", hint="stop whatever writes into the home, then run the restore again "
                                           "(it finishes this one; nothing was lost)")


def _open_dir_or_none(name: str, dir_fd: int) -> int | None:
    try:
        return fsops.open_dir(name, dir_fd)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return None
        raise


class _Aside:
    """Where replaced entries go: ``replaced/`` of the state directory, with the sub-directories of a
    merge mirrored on demand (created 0700 and owned by the home's owner, who gets them all)."""

    def __init__(self, parent: _Aside | None, name: str, state: StateDir, owner: tuple[int, int]) -> None:
        self.parent = parent
        self.name = name
        self.state = state
        self.owner = owner
        self._fd = -1
        self._subs: list[_Aside] = []

    @classmethod
    def top(cls, state: StateDir, owner: tuple[int, int]) -> _Aside:
        return cls(None, REPLACED, state, owner)

    def is_state(self, st: os.stat_result) -> bool:
        """Whether ``st`` is the state directory itself (which the user may have renamed)."""
        own = os.fstat(self.state.fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    def sub(self, name: str) -> _Aside:
        child = _Aside(self, name, self.state, self.owner)
        self._subs.append(child)
        return child

    def fd(self) -> int:
        if self._fd < 0:
            if self.parent is None:
                fd = self.state.open_sub(REPLACED)
                self._fd = fd if fd is not None else self.state.make_dir(REPLACED)
            else:
                self._fd = self._make_child(self.parent.fd(), self.name)
        return self._fd

    def _make_child(self, parent_fd: int, name: str) -> int:
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            pass  # made by an earlier, killed run (or the home's own directory, put aside whole)
        else:
            fd = fsops.open_dir(name, parent_fd)
            if os.geteuid() == 0:
                os.fchown(fd, *self.owner)
            return fd
        try:
            return fsops.open_dir(name, parent_fd)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        for n in range(1, 1000):  # a non-directory kept under that name: mirror beside it
            alt = _alternative(name, n)
            try:
                os.mkdir(alt, 0o700, dir_fd=parent_fd)
            except FileExistsError:
                continue
            fd = fsops.open_dir(alt, parent_fd)
            if os.geteuid() == 0:
                os.fchown(fd, *self.owner)
            return fd
        raise DeploymentError(f"cannot keep the replaced entries of {name!r}: every name is taken")

    def put(self, src_fd: int, name: str) -> None:
        """Move ``name`` of ``src_fd`` here, under its own name or, if that is taken (a re-run after a
        kill), under a new one: a kept entry is never replaced."""
        target = self.fd()
        for n in range(1000):
            try:
                fsops.rename_noreplace(src_fd, name, target, _alternative(name, n) if n else name)
                return
            except FileExistsError:
                continue
            except FileNotFoundError:
                return  # removed by the user meanwhile: nothing to keep
        raise DeploymentError(f"cannot keep {name!r}: every name is taken")

    def close(self) -> None:
        for s in self._subs:
            s.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _alternative(name: str, n: int) -> str:
    raw = os.fsencode(name)[:200]  # room for the suffix within NAME_MAX
    return os.fsdecode(raw + f".jdr-{n}".encode())


def _hand_over(home_fd: int, state: StateDir, owner: tuple[int, int], *, keep: bool) -> str | None:
    """Give ``replaced/`` to the home's owner as ``jdr-replaced-<time>`` in the home (or delete it when
    not ``keep``); returns its name, or None when nothing was replaced. Ownership and mode are set while
    the directory is still inside the private state directory; after the rename jdr never opens it."""
    fd = state.open_sub(REPLACED)
    if fd is None:
        return None
    try:
        empty = not os.listdir(fd)
        if not empty and keep:
            if os.geteuid() == 0:
                os.fchown(fd, *owner)
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    if empty or not keep:
        fsops.remove_tree_at(REPLACED, state.fd)
        return None
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        name = f"{KEPT_PREFIX}{stamp}" + (f"-{n}" if n else "")
        try:
            fsops.rename_noreplace(state.fd, REPLACED, home_fd, name)
            return name
        except FileExistsError:
            continue
    raise DeploymentError("cannot hand over the replaced entries: every name is taken")


# --- --into ------------------------------------------------------------------------------------------------


def _into_parts(into: str) -> list[str]:
    parts = [p for p in into.split("/") if p not in ("", ".")]
    if into.startswith("/") or not parts or ".." in parts or "\0" in into or _is_state_name(parts[0]):
        raise UsageError(f"--into {into!r}: give a new directory name relative to the home directory")
    return parts


def _check_into_free(home_fd: int, into: str | None, parts: list[str]) -> None:
    """Before anything is written: no component of ``into`` is a symlink or a non-directory, and the
    last one does not exist."""
    fd = os.dup(home_fd)
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                nxt = fsops.open_dir(part, fd)
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UsageError(f"--into {into}: {'/'.join(parts[:i + 1])} is a symlink or not a "
                                     "directory") from None
                raise
            os.close(fd)
            fd = nxt
        if fsops.lstat_at(parts[-1], fd) is not None:
            raise UsageError(f"--into {into}: it already exists; choose a new directory name")
    finally:
        os.close(fd)


def _move_into(home_fd: int, state: StateDir, into: str, parts: list[str], before: os.stat_result) -> None:
    """Rename the staging directory to ``into``, creating missing parents (owned by the home's owner)
    one descriptor at a time; a component that became a symlink is refused, never followed."""
    fd = os.dup(home_fd)
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                created = True
            except FileExistsError:
                created = False
            try:
                nxt = fsops.open_dir(part, fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UsageError(f"--into {into}: {'/'.join(parts[:i + 1])} is a symlink or not a "
                                     "directory") from None
                raise
            if created and os.geteuid() == 0:
                os.fchown(nxt, before.st_uid, before.st_gid)
            os.close(fd)
            fd = nxt
        try:
            fsops.rename_noreplace(state.fd, STAGING, fd, parts[-1])
        except FileExistsError:
            raise UsageError(f"--into {into}: it already exists; choose a new directory name") from None
    finally:
        os.close(fd)


# --- helpers -----------------------------------------------------------------------------------------------


def _open_home(root: Path) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"restore target {root} does not exist or is not a directory") from None


def _apply_attrs(fd: int, attrs: Mapping[str, int]) -> None:
    """Owner (as root), mode (setuid cleared) and times of the directory open as ``fd``. Failures are
    logged, not raised: a non-root mover cannot chown, and the contents matter more than the root's
    attributes."""
    try:
        if os.geteuid() == 0:
            os.fchown(fd, attrs["uid"], attrs["gid"])
        os.fchmod(fd, attrs["mode"] & ~stat.S_ISUID)
        os.utime(fd, ns=(attrs["atime_ns"], attrs["mtime_ns"]))
    except OSError as e:
        log.warning("cannot set a restored directory's owner, mode or times: %s", e.strerror)


def _set_times(fd: int, st: os.stat_result) -> None:
    try:
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    except OSError as e:
        log.warning("cannot reset the home's times: %s", e.strerror)
