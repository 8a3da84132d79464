"""The walk of a volume: every entry below a root, in a stable order, never following a symlink.

Directories are opened relative to their parent's file descriptor with ``O_NOFOLLOW``, so a user who swaps
a directory for a symlink while a backup runs cannot make the walk (which runs as root) read outside the
volume. Memory holds one sorted listing per level of the current path, nothing more.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

ROOT = b"."  # the relative path of the root itself, in archives and indexes

#: jdr's own restore state at a volume's root: ``.jdr-restore-<16 hex digits>`` (see
#: :mod:`dr.deployments.restore_state`); ``.jdr-restore`` is the fixed name earlier versions used.
STATE_NAME = re.compile(rb"\.jdr-restore-[0-9a-f]{16}")
LEGACY_STATE_NAME = b".jdr-restore"


def is_restore_state(name: bytes, st: os.stat_result) -> bool:
    """Whether the entry ``name`` *at a volume's root*, with lstat ``st``, is restore state jdr made.

    Only an exact name, a real directory (not a link), mode 0700, owned by root or by this process's user:
    a user cannot make a directory owned by root, so as root this is exactly what jdr created; a
    ``.jdr-restore-…`` of the user's own, or at any depth, is the user's data and is backed up.
    """
    if not (STATE_NAME.fullmatch(name) or name == LEGACY_STATE_NAME):
        return False
    return (stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
            and st.st_uid in (0, os.geteuid()))


@dataclass(frozen=True)
class WalkEntry:
    """One entry found by :func:`walk`. ``dir_fd`` and ``name`` are valid only until the walk advances."""

    rel: bytes  # path relative to the root, ``/``-separated; ROOT for the root
    name: bytes  # last component, to use with ``dir_fd`` (``.`` for the root)
    dir_fd: int  # the open parent directory (for the root: the root itself)
    st: os.stat_result  # lstat of the entry

    def readlink(self) -> bytes:
        return os.readlink(self.name, dir_fd=self.dir_fd)


def exclude_matcher(patterns: Sequence[str]) -> Callable[[bytes], bool]:
    """A predicate telling whether a relative path is excluded by ``patterns``.

    Each pattern is an ``fnmatch`` glob (``*``, ``?``, ``[...]``; case-sensitive). An entry is excluded when
    a pattern matches its whole relative path (where ``*`` also matches ``/``) or its last component:
    ``.cache`` and ``node_modules`` exclude those names at any depth, ``*.pyc`` any such file, and
    ``data/raw`` only that path. A leading ``/`` or ``./`` and a trailing ``/`` are ignored. The root itself
    is never excluded.
    """
    cleaned = [p.strip("/").removeprefix("./") for p in patterns]
    compiled = [re.compile(fnmatch.translate(p)) for p in cleaned if p]
    if not compiled:
        return lambda rel: False

    def excluded(rel: bytes) -> bool:
        text = os.fsdecode(rel)
        base = text.rsplit("/", 1)[-1]
        return any(rx.match(text) or rx.match(base) for rx in compiled)

    return excluded


def walk(root: Path, excludes: Sequence[str],
         warn: Callable[[str], None]) -> Generator[WalkEntry, None, None]:
    """Yield the root, then every entry below it, depth first, each directory's names in byte order.

    Excluded entries (see :func:`exclude_matcher`) are neither yielded nor descended, nor is jdr's own
    restore state at the root (:func:`is_restore_state`). A directory on
    another file system (a mount point) is yielded but not descended. Entries that vanish, and directories
    that cannot be listed, are reported through ``warn`` (a message naming the path) and skipped.
    Raises OSError if the root itself cannot be opened. Close the generator to release its descriptors.
    """
    is_excluded = exclude_matcher(excludes)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stack: list[tuple[int, bytes, Iterator[bytes]]] = []
    try:
        root_st = os.fstat(root_fd)
        yield WalkEntry(ROOT, b".", root_fd, root_st)
        listing = _listing(root_fd, ROOT, warn)
        stack.append((root_fd, b"", iter(listing or ())))
        while stack:
            fd, prefix, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if fd != root_fd:
                    os.close(fd)
                continue
            rel = prefix + name
            if is_excluded(rel):
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                warn(f"{os.fsdecode(rel)}: vanished before it was read; skipped")
                continue
            except OSError as e:
                warn(f"{os.fsdecode(rel)}: cannot stat ({e.strerror}); skipped")
                continue
            if fd == root_fd and is_restore_state(name, st):
                continue
            yield WalkEntry(rel, name, fd, st)
            if stat.S_ISDIR(st.st_mode):
                sub = _open_subdir(fd, name, rel, root_st.st_dev, warn)
                if sub is not None:
                    stack.append((sub, rel + b"/", iter(_listing(sub, rel, warn) or ())))
    finally:
        for fd, _, _ in stack:
            if fd != root_fd:
                os.close(fd)
        os.close(root_fd)


def _open_subdir(parent: int, name: bytes, rel: bytes, root_dev: int,
                 warn: Callable[[str], None]) -> int | None:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as e:
        # ELOOP/ENOTDIR: replaced by a symlink or a file since the lstat; its entry is already written.
        warn(f"{os.fsdecode(rel)}: cannot open directory ({e.strerror}); contents skipped")
        return None
    if os.fstat(fd).st_dev != root_dev:
        os.close(fd)
        warn(f"{os.fsdecode(rel)}: mount point of another file system; contents skipped")
        return None
    return fd


def _listing(fd: int, rel: bytes, warn: Callable[[str], None]) -> list[bytes] | None:
    try:
        # listdir(fd) gives str decoded with surrogateescape; fsencode restores the exact bytes.
        return sorted(os.fsencode(n) for n in os.listdir(fd))
    except OSError as e:
        warn(f"{os.fsdecode(rel)}: cannot list directory ({e.strerror}); contents skipped")
        return None
