"""Writing a volume archive: walk a tree once, stream a pax tar through zstd, and the index beside it.

Nothing is staged on disk: headers and file content go into independent zstd frames of a few MiB that a
thread pool compresses while this thread reads and hashes the next files (:mod:`dr.archive.frames`), and
memory holds those few frames, one 1 MiB buffer, one directory listing per level of the current path, and
the map of hard-linked inodes. Files
that change, shrink, grow, vanish or cannot be read while the walk passes are warnings, not failures: the
archive stays valid, and the index records exactly the bytes that were archived.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from dr.archive import Writable, frames
from dr.archive.frames import CompressionPool, FramedOut
from dr.archive.index import IndexWriter
from dr.archive.tarfmt import BLOCK, RECORD, header, ns_to_float
from dr.archive.walk import WalkEntry, walk
from dr.model import EntryType, IndexEntry
from dr.util.timefmt import utcnow

CHUNK = 1 << 20
_PROGRESS_EVERY = 0.25  # seconds between progress callbacks

# Test hook: called with the relative path of a regular file after its header is written and before its
# content is read, so tests can change a real file at exactly that moment (tests/unit/test_archive_*.py).
_after_header_hook: Callable[[bytes], None] | None = None


@dataclass
class ArchiveStats:
    """What :func:`write_archive` wrote."""

    files: int = 0  # regular files archived (hard links to an archived file not counted)
    entries: int = 0  # all entries, the root directory included
    bytes: int = 0  # bytes of file content read
    warnings: list[str] = field(default_factory=list)  # one per skipped or changed entry, naming the path
    #: :func:`fingerprint` of the tree as this walk saw it (each entry's lstat when it was reached), so a
    #: first backup need not list the tree a second time to record it.
    fingerprint: str = ""


def fingerprint(root: Path, excludes: Sequence[str] = ()) -> tuple[str, int, int]:
    """Hex SHA-256 of the listing of the tree at ``root``, plus (regular file count, total file bytes).

    The listing holds, for every entry :func:`write_archive` would archive and in the same order: path,
    type, size, mode, uid, gid, mtime in nanoseconds, and symlink target. File contents are not read. The
    same tree gives the same fingerprint; a change of any listed attribute gives another one. Sockets,
    FIFOs and devices are left out, as from the archive. Raises OSError if ``root`` cannot be opened.
    :func:`write_archive` computes the same fingerprint of the tree it walks (``ArchiveStats.fingerprint``).
    """
    fp = _Fingerprint()
    with closing(walk(root, excludes, lambda _msg: None)) as entries:
        for e in entries:
            kind = _kind(e.st.st_mode)
            if kind is None:
                continue
            link = b""
            if kind == "symlink":
                try:
                    link = e.readlink()
                except OSError:
                    continue
            fp.add(e, kind, link)
    return fp.digest.hexdigest(), fp.files, fp.total


class _Fingerprint:
    """The running listing hash of :func:`fingerprint`."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256(b"jdr-fingerprint-1\n")
        self.files = self.total = 0

    def add(self, e: WalkEntry, kind: EntryType, link: bytes) -> None:
        st = e.st
        size = st.st_size if kind == "file" else 0
        if kind == "file":
            self.files += 1
            self.total += size
        fields = f"{kind}\0{size}\0{stat.S_IMODE(st.st_mode)}\0{st.st_uid}\0{st.st_gid}\0{st.st_mtime_ns}"
        self.digest.update(e.rel + b"\0" + fields.encode() + b"\0" + link + b"\n")


def write_archive(root: Path, sink: Writable, index_sink: Writable, *, excludes: Sequence[str] = (),
                  level: int = 3, threads: int = 0,
                  progress: Callable[[int, int], None] | None = None,
                  frame_size: int | None = None, pool: CompressionPool | None = None) -> ArchiveStats:
    """Archive the tree at ``root``: a zstd-compressed pax tar to ``sink``, its index to ``index_sink``.

    The walk never follows a symlink and does not descend into other file systems (see
    :func:`dr.archive.walk.walk`); ``excludes`` are globs as in :func:`dr.archive.walk.exclude_matcher`.
    Members appear in walk order: the root as ``./``, then relative paths. Regular files, directories,
    symlinks (as links) and hard links (later names as links to the first) are kept, with numeric uid/gid,
    permission bits and nanosecond mtimes. Sockets, FIFOs and devices are skipped with a warning, and are
    never opened. A regular file is archived with the size it had when opened: if it then yields fewer
    bytes, the rest is zeros; if more, the excess is left out; either way, and if it vanished or could not
    be read, ``warnings`` says so. Both sinks receive only ``write`` calls and stay open. ``level`` and
    ``threads`` set the compression (0 threads: compress in this thread; -1: one worker per CPU; n: n
    workers); every entry's index line records where its frame starts (docs/FORMAT.md, "Seekable
    archive"); a frame is cut every ``frame_size`` bytes of tar (default
    :data:`dr.archive.frames.FRAME_SIZE`). With ``pool``, the frames are compressed by that pool, shared
    with other archives written at once, and ``threads`` is ignored; the bytes are the same either way.
    ``progress(files, bytes)`` is called every quarter second or so, and once at the end.

    Raises OSError if ``root`` cannot be opened, and whatever the sinks raise.
    """
    stats = ArchiveStats()
    index = IndexWriter(index_sink, root=os.fsdecode(root), created=utcnow(), level=level)
    framed = FramedOut(sink, index.add, level=level, threads=threads,
                       frame_size=frame_size or frames.FRAME_SIZE, pool=pool)
    out = _TarOut(framed)
    links: dict[tuple[int, int], IndexEntry] = {}  # (st_dev, st_ino) -> first archived name
    buf = memoryview(bytearray(CHUNK))
    last_report = time.monotonic()
    fp = _Fingerprint()
    try:
        with closing(walk(root, excludes, stats.warnings.append)) as entries:
            for e in entries:
                where = framed.mark()
                kind = _kind(e.st.st_mode)
                entry = _archive_one(e, kind, out, links, buf, stats)
                # As fingerprint(): every entry of a kind archives hold, except a symlink it could not read.
                if kind is not None and (entry is not None or kind != "symlink"):
                    fp.add(e, kind, entry.link if entry is not None and kind == "symlink" else b"")
                if entry is None:
                    continue
                framed.entry(where, entry)
                stats.entries += 1
                if progress is not None and time.monotonic() - last_report >= _PROGRESS_EVERY:
                    progress(stats.files, stats.bytes)
                    last_report = time.monotonic()
        out.finish()
    finally:
        framed.close()
    index.close()
    stats.fingerprint = fp.digest.hexdigest()
    if progress is not None:
        progress(stats.files, stats.bytes)
    return stats


def _kind(mode: int) -> EntryType | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return None


def _header(rel: bytes, kind: bytes, st: os.stat_result, *, size: int = 0, linkname: bytes = b"") -> bytes:
    return header(rel, kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                  mtime_ns=st.st_mtime_ns, size=size, linkname=linkname)


def _entry(rel: bytes, kind: EntryType, st: os.stat_result, *, size: int = 0, sha256: str = "",
           link: bytes = b"") -> IndexEntry:
    return IndexEntry(path=rel, type=kind, size=size, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
                      gid=st.st_gid, mtime=ns_to_float(st.st_mtime_ns), sha256=sha256, link=link)


def _archive_one(e: WalkEntry, kind: EntryType | None, out: _TarOut, links: dict[tuple[int, int], IndexEntry],
                 buf: memoryview, stats: ArchiveStats) -> IndexEntry | None:
    """Write one walked entry of ``kind`` (:func:`_kind` of its mode); return its index entry, or None
    if it was skipped (with a warning)."""
    st, rel = e.st, e.rel
    if kind == "file":
        first = links.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
        if first is not None:
            out.write(_header(rel, tarfile.LNKTYPE, st, linkname=first.path))
            return _entry(rel, "hardlink", st, link=first.path, size=first.size, sha256=first.sha256)
        entry = _archive_file(e, out, buf, stats)
        if entry is not None and st.st_nlink > 1:
            links[(st.st_dev, st.st_ino)] = entry
        return entry
    if kind == "dir":
        out.write(_header(rel, tarfile.DIRTYPE, st))
        return _entry(rel, "dir", st)
    if kind == "symlink":
        try:
            target = e.readlink()
        except OSError as err:
            stats.warnings.append(f"{os.fsdecode(rel)}: symlink vanished or unreadable ({err.strerror}); skipped")
            return None
        out.write(_header(rel, tarfile.SYMTYPE, st, linkname=target))
        return _entry(rel, "symlink", st, link=target)
    what = "socket" if stat.S_ISSOCK(st.st_mode) else "FIFO" if stat.S_ISFIFO(st.st_mode) else "device"
    stats.warnings.append(f"{os.fsdecode(rel)}: {what} skipped (only files, directories and links are archived)")
    return None


def _open_file(e: WalkEntry) -> int:
    # O_NONBLOCK: should the file have been swapped for a FIFO since the lstat, open must not hang.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        # O_NOATIME keeps a backup from touching every atime; only the owner (or root) may ask for it.
        return os.open(e.name, flags | os.O_NOATIME, dir_fd=e.dir_fd)
    except PermissionError:
        return os.open(e.name, flags, dir_fd=e.dir_fd)


def _archive_file(e: WalkEntry, out: _TarOut, buf: memoryview, stats: ArchiveStats) -> IndexEntry | None:
    shown = os.fsdecode(e.rel)
    try:
        fd = _open_file(e)
    except FileNotFoundError:
        stats.warnings.append(f"{shown}: vanished before it was read; skipped")
        return None
    except OSError as err:
        reason = "replaced by a symlink" if err.errno == errno.ELOOP else err.strerror
        stats.warnings.append(f"{shown}: cannot open ({reason}); skipped")
        return None
    try:
        st = os.fstat(fd)  # the file we hold, which is what gets archived
        if not stat.S_ISREG(st.st_mode):
            stats.warnings.append(f"{shown}: replaced by a non-regular file while read; skipped")
            return None
        size = st.st_size
        out.write(_header(e.rel, tarfile.REGTYPE, st, size=size))
        if _after_header_hook is not None:
            _after_header_hook(e.rel)
        digest = hashlib.sha256()
        # A file with as many blocks as bytes has no holes worth looking for: read it straight (the bytes
        # are the same either way; SEEK_DATA/SEEK_HOLE cost two system calls per small file).
        sparse = st.st_blocks * 512 < size
        copied, failure = _copy(fd, size, out, digest, buf, sparse=sparse)
        stats.bytes += copied
        after = os.fstat(fd)
        if copied < size:
            _feed_zeros(size - copied, out, digest)
            stats.warnings.append(f"{shown}: {failure or 'shrank'} while read; archived with its size when "
                                  f"opened ({size} bytes), the missing {size - copied} as zeros")
        elif after.st_size > size or _grew(fd, size):
            stats.warnings.append(f"{shown}: grew while read; archived its first {size} bytes")
        elif (after.st_mtime_ns, after.st_size) != (st.st_mtime_ns, st.st_size):
            stats.warnings.append(f"{shown}: changed while read; the archived copy may be inconsistent")
        out.pad()
    finally:
        os.close(fd)
    stats.files += 1
    return _entry(e.rel, "file", st, size=size, sha256=digest.hexdigest())


def _copy(fd: int, size: int, out: _TarOut, digest: hashlib._Hash, buf: memoryview, *,
          sparse: bool = True) -> tuple[int, str]:
    """Copy up to ``size`` bytes of the open file into the tar and the hash; return (bytes copied,
    failure message or ""). With ``sparse``, holes (found with SEEK_DATA) are fed as zeros without being
    read; without, the file is read from its current position (the start) to ``size``."""
    pos = 0
    while pos < size:
        if sparse:
            data = _next_data(fd, pos, size)
            if data > pos:
                _feed_zeros(data - pos, out, digest)
                pos = data
                continue
            try:
                end = min(os.lseek(fd, pos, os.SEEK_HOLE), size)
                os.lseek(fd, pos, os.SEEK_SET)
            except OSError:
                end = size
        else:
            end = size
        while pos < end:
            try:
                n = os.readv(fd, (buf[:min(CHUNK, end - pos)],))  # into the buffer: no bytes object made
            except OSError as err:
                return pos, f"read error ({err.strerror})"
            if not n:
                return pos, "shrank"
            out.write(buf[:n])
            digest.update(buf[:n])
            pos += n
    return pos, ""


def _next_data(fd: int, pos: int, size: int) -> int:
    """Where the next data at or after ``pos`` starts (``size`` if only a hole is left)."""
    try:
        return min(os.lseek(fd, pos, os.SEEK_DATA), size)
    except OSError as err:
        # ENXIO: nothing but a hole up to EOF. The file may also have shrunk below ``pos``; then the
        # caller's size check after the copy reports it. Any other error: just read.
        if err.errno == errno.ENXIO:
            return size if os.fstat(fd).st_size >= size else pos
        return pos


_ZERO_CHUNK = bytes(CHUNK)


def _feed_zeros(count: int, out: _TarOut, digest: hashlib._Hash) -> None:
    while count > 0:
        piece = _ZERO_CHUNK if count >= CHUNK else _ZERO_CHUNK[:count]
        out.write(piece)
        digest.update(piece)
        count -= len(piece)


def _grew(fd: int, size: int) -> bool:
    try:
        return bool(os.pread(fd, 1, size))
    except OSError:
        return False


class _TarOut:
    """The tar byte stream: counts what is written so members and the archive end on block boundaries."""

    def __init__(self, framed: FramedOut) -> None:
        self._w = framed

    def write(self, data: bytes | memoryview) -> None:
        self._w.write(data)

    def pad(self) -> None:
        """Fill the current member's data with zeros up to the next 512-byte block."""
        rest = -self._w.offset % BLOCK
        if rest:
            self.write(bytes(rest))

    def finish(self) -> None:
        """Write the end-of-archive marker (two zero blocks), fill the last record, write the last frame."""
        self.pad()
        self.write(bytes(2 * BLOCK))
        self.write(bytes(-self._w.offset % RECORD))
        self._w.finish()
