"""File-system steps relative to open directories, for code that runs as root in directories users control.

A path is resolved by the kernel each time it is used, so "check, then act on the path" lets a user who
swaps a directory for a symlink in between redirect the act. Everything here works on *directory file
descriptors* opened with ``O_NOFOLLOW | O_DIRECTORY`` and a single *bare name* (no ``/``): the directory
is pinned by its descriptor, and the name is looked up once, in it, without following a link.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_RENAME_NOREPLACE = 1  # linux/fs.h
_renameat2 = None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _renameat2 = _libc.renameat2
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _renameat2.restype = ctypes.c_int
except (OSError, AttributeError):  # a libc without renameat2 (glibc < 2.28, musl < 1.2.?)
    _renameat2 = None


def is_bare_name(name: bytes | str) -> bool:
    """True for one directory entry's name: not empty, no ``/`` or NUL, not ``.`` or ``..``."""
    raw = os.fsencode(name)
    return bool(raw) and b"/" not in raw and b"\0" not in raw and raw not in (b".", b"..")


def open_dir(name: bytes | str, dir_fd: int) -> int:
    """Open the directory ``name`` in ``dir_fd`` without following a link.

    Raises OSError (ELOOP or ENOTDIR when ``name`` is a symlink or not a directory; ENOENT when absent).
    """
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def lstat_at(name: bytes | str, dir_fd: int) -> os.stat_result | None:
    """``lstat`` of ``name`` in ``dir_fd``, or None if there is no such entry."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def rename_noreplace(src_fd: int, src: bytes | str, dst_fd: int, dst: bytes | str) -> None:
    """Move ``src`` (in ``src_fd``) to ``dst`` (in ``dst_fd``); never replaces an existing ``dst``.

    Raises FileExistsError when ``dst`` exists (whatever its type). Uses ``renameat2(RENAME_NOREPLACE)``;
    where the kernel or file system lacks it (EINVAL, ENOSYS), falls back to check-then-rename, which is
    race-free only when nobody else can write into ``dst_fd`` (callers say when that matters).
    """
    if _renameat2 is not None:
        rc = _renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), os.fsdecode(dst))
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), os.fsdecode(src))
    if lstat_at(dst, dst_fd) is not None:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(dst))
    os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def remove_tree_at(name: bytes | str, dir_fd: int) -> None:
    """Delete the entry ``name`` of ``dir_fd`` and, if it is a directory, everything below it, never
    following a symlink (:func:`shutil.rmtree` with ``dir_fd`` walks by descriptor). Missing: no error."""
    st = lstat_at(name, dir_fd)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def write_new_file(name: bytes | str, dir_fd: int, data: bytes, mode: int = 0o600) -> None:
    """Create ``name`` in ``dir_fd`` (never through a link, never over an existing entry), write ``data``
    and sync it. Raises FileExistsError when the name is taken."""
    fd = os.open(name, NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
