"""The extraction directory, written so that no archive member can reach outside it.

Every path is walked from the directory's own descriptor, one component at a time, with
``O_DIRECTORY | O_NOFOLLOW``: a component that is a symlink (or not a directory) is a HostileArchiveError,
so nothing is ever written through a symlink. Files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW``,
hard links with ``linkat`` without following, symlinks are created verbatim and never followed.
Directory modes and mtimes are applied at the end, deepest first, so restrictive modes cannot block the
extraction and writing into a directory does not spoil its restored mtime.

Privileges are not restored from an archive (anyone who can write the repository can craft one): setuid
and setgid bits are cleared on everything but directories (whose setgid only makes new entries inherit
the group, as kubelet's ``fsGroup`` sets on every volume), and setuid is cleared on directories too. The
file index keeps the original mode.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dr.archive.safety import shown
from dr.archive.walk import ROOT
from dr.errors import DeploymentError, HostileArchiveError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SETID = stat.S_ISUID | stat.S_ISGID
_HOLE = 1 << 16  # granularity of the holes left in restored files
_ZEROS = bytes(_HOLE)


@dataclass(frozen=True)
class Attrs:
    """What is restored about an inode besides its content."""

    mode: int
    uid: int
    gid: int
    mtime_ns: int


def _no_space(e: OSError, where: str) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DeploymentError(f"no space left on the device while writing {where}",
                               hint="free space on the restore target (or raise its quota), then retry")
    return e


class Target:
    """An empty directory being filled from an archive. Use as a context manager; call :meth:`finish`.

    ``dest`` is a path, or an open directory descriptor (duplicated; the caller keeps its own) with
    ``label`` naming it in messages. ``implied(path)`` gives the attributes for a parent directory that
    must be created before its own member is extracted (or None for defaults). With ``same_owner``,
    uid/gid are restored with lchown, through ``map_owner(uid, gid)`` when given. Setuid/setgid bits are
    cleared (see the module docstring).
    """

    def __init__(self, dest: Path | int, *, same_owner: bool,
                 implied: Callable[[bytes], Attrs | None] = lambda _p: None,
                 map_owner: Callable[[int, int], tuple[int, int]] | None = None, label: str = "") -> None:
        if isinstance(dest, int):
            self.dest = Path(label or "staging")
            self.root_fd = os.dup(dest)
        else:
            self.dest = dest
            self.root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if os.listdir(self.root_fd):
            os.close(self.root_fd)
            raise DeploymentError(f"restore staging directory {self.dest} is not empty")
        self._same_owner = same_owner
        self._map_owner = map_owner
        self._implied = implied
        self._dirs: dict[bytes, Attrs] = {}  # directory attributes to apply at the end
        self._cached: tuple[bytes, int] | None = None  # the last parent directory opened

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._uncache()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    # --- members ----------------------------------------------------------------------------------

    def make_dir(self, path: bytes, attrs: Attrs) -> None:
        """Create (or, for a repeated entry, reuse) a directory; its mode and mtime come at the end."""
        if path != ROOT:
            parent, name = self._parent(path)
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                    raise HostileArchiveError(f"hostile archive: directory {shown(path)} would replace "
                                              "an earlier entry that is not a directory") from None
            except OSError as e:
                raise _no_space(e, self._where(path)) from e
        self._dirs[path] = attrs

    def make_file(self, path: bytes, attrs: Attrs, size: int, chunks: Iterable[bytes]) -> None:
        """Write a regular file of ``size`` bytes from ``chunks``, leaving all-zero stretches as holes."""
        parent, name = self._parent(path)
        try:
            try:
                fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent)
            except FileExistsError:  # a repeated entry (rare): no stat for every file of a restore
                self._clear(parent, name, path)
                fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent)
        except OSError as e:
            raise _no_space(e, self._where(path)) from e
        try:
            pos = end = 0
            for chunk in chunks:
                end = _write_sparse(fd, chunk, pos) or end
                pos += len(chunk)
            if end < size:  # the file ends in a hole: give it its size (it was created empty)
                os.ftruncate(fd, size)
            if self._same_owner:
                os.fchown(fd, *self._owner(attrs))
            os.fchmod(fd, attrs.mode & ~_SETID)  # after chown, which would clear them anyway
            os.utime(fd, ns=(attrs.mtime_ns, attrs.mtime_ns))
        except OSError as e:
            raise _no_space(e, self._where(path)) from e
        finally:
            os.close(fd)

    def make_symlink(self, path: bytes, target: bytes, attrs: Attrs) -> None:
        parent, name = self._parent(path)
        self._clear(parent, name, path)
        try:
            os.symlink(target, name, dir_fd=parent)
            if self._same_owner:
                os.chown(name, *self._owner(attrs), dir_fd=parent, follow_symlinks=False)
            os.utime(name, ns=(attrs.mtime_ns, attrs.mtime_ns), dir_fd=parent, follow_symlinks=False)
        except OSError as e:
            raise _no_space(e, self._where(path)) from e

    def make_hardlink(self, path: bytes, target: bytes) -> None:
        """Link ``path`` to the regular file ``target`` extracted earlier. Raises HostileArchiveError if
        ``target`` is not a regular file inside the directory (it started empty, so anything there is an
        earlier entry)."""
        tparent, tname = self._parent(target, create=False, link_of=path)
        try:
            st = os.stat(tname, dir_fd=tparent, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise HostileArchiveError(f"hostile archive: hard link {shown(path)} -> {shown(target)}: "
                                      "target is not an earlier regular file of the archive")
        tfd = os.dup(tparent)  # _parent below may replace the cached descriptor
        try:
            parent, name = self._parent(path)
            self._clear(parent, name, path)
            os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=parent, follow_symlinks=False)
        except OSError as e:
            raise _no_space(e, self._where(path)) from e
        finally:
            os.close(tfd)

    def remove_tree(self, path: bytes) -> None:
        """Delete a directory this extraction made for its own use (no symlinks are followed)."""
        parent, name = self._parent(path, create=False)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        try:
            for entry in os.listdir(fd):
                os.unlink(entry, dir_fd=fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=parent)
        self._dirs.pop(path, None)

    def finish(self) -> None:
        """Apply directory owners, modes and mtimes, deepest first, the root (the directory itself) last."""
        self._uncache()
        for path in sorted(self._dirs, reverse=True):  # "a/b" sorts after "a": children first
            attrs = self._dirs[path]
            if path == ROOT:
                continue
            parent, name = self._parent(path, create=False)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            try:
                self._apply_dir(fd, attrs)
            finally:
                os.close(fd)
        self._uncache()
        if ROOT in self._dirs:
            self._apply_dir(self.root_fd, self._dirs[ROOT])

    # --- internals --------------------------------------------------------------------------------

    def _owner(self, attrs: Attrs) -> tuple[int, int]:
        return self._map_owner(attrs.uid, attrs.gid) if self._map_owner else (attrs.uid, attrs.gid)

    def _apply_dir(self, fd: int, attrs: Attrs) -> None:
        if self._same_owner:
            os.fchown(fd, *self._owner(attrs))
        os.fchmod(fd, attrs.mode & ~stat.S_ISUID)  # after chown, which may clear setgid
        os.utime(fd, ns=(attrs.mtime_ns, attrs.mtime_ns))

    def _where(self, path: bytes) -> str:
        return str(self.dest / os.fsdecode(path))

    def _uncache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _clear(self, parent: int, name: bytes, path: bytes) -> None:
        """Make room for a repeated entry (the later one wins, as with tar), but never over a directory."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise HostileArchiveError(f"hostile archive: entry {shown(path)} would overwrite a directory")
        os.unlink(name, dir_fd=parent)

    def _parent(self, path: bytes, *, create: bool = True, link_of: bytes = b"") -> tuple[int, bytes]:
        """The open directory holding ``path`` (borrowed: do not close it) and the last component.

        Missing parents are created (with ``implied`` attributes) when ``create``. Raises
        HostileArchiveError if a parent is a symlink or not a directory, or (without ``create``) missing.
        """
        head, _, name = path.rpartition(b"/")
        if self._cached is not None and self._cached[0] == head:
            return self._cached[1], name
        fd = os.dup(self.root_fd)
        done = b""
        try:
            for part in head.split(b"/") if head else ():
                done = done + b"/" + part if done else part
                fd = self._step(fd, part, done, path, create=create, link_of=link_of)
        except BaseException:
            os.close(fd)
            raise
        self._uncache()
        self._cached = (head, fd)
        return fd, name

    def _step(self, fd: int, part: bytes, done: bytes, path: bytes, *, create: bool, link_of: bytes) -> int:
        subject = f"hard link {shown(link_of)} -> {shown(path)}" if link_of else f"entry {shown(path)}"
        try:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise HostileArchiveError(f"hostile archive: {subject}: {shown(done)} is missing") from None
            implied = self._implied(done)
            try:
                # Without attributes from the archive, a plain directory (as tar makes for a missing one).
                os.mkdir(part, 0o700 if implied else 0o755, dir_fd=fd)
            except OSError as e:
                raise _no_space(e, self._where(done)) from e
            if implied is not None:
                self._dirs[done] = implied
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise HostileArchiveError(f"hostile archive: {subject}: parent {shown(done)} is a symlink "
                                          "or not a directory") from None
            raise
        os.close(fd)
        return nxt


def _write_sparse(fd: int, chunk: bytes, pos: int) -> int:
    """Write ``chunk`` at ``pos`` but its all-zero 64 KiB pieces; where the last write ended (0: none)."""
    end = 0
    size = len(chunk)
    if 0 < size <= _HOLE:  # most files are one piece: no loop, no view
        if chunk[0] or chunk[-1] or chunk != _ZEROS[:size]:
            os.pwrite(fd, chunk, pos)
            end = pos + size
        return end
    view = memoryview(chunk)
    for start in range(0, size, _HOLE):
        stop = min(start + _HOLE, size)
        # A piece that starts or ends with a non-zero byte (most data) needs no full comparison.
        if chunk[start] or chunk[stop - 1] or chunk[start:stop] != _ZEROS[:stop - start]:
            os.pwrite(fd, view[start:stop], pos + start)
            end = pos + stop
    return end
