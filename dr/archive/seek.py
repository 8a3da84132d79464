"""Reading chosen entries of a seekable volume archive with ranged reads (docs/FORMAT.md, "Seekable archive").

The index records, for every entry, the compressed offset of the zstd frame holding its tar header and
the header's offset in that frame's decompressed bytes. :func:`ranged_tar` plans which entries a
selection needs, fetches only the frames they lie in (one ranged read per run of adjacent frames, in
pieces of at most :data:`PIECE` bytes), and yields a plain (uncompressed) tar of just those entries, in
archive order, for :func:`dr.archive.reader.extract_archive` with ``compressed=False`` to check and
extract as it does the whole archive:

- selected entries (and the first names of selected hard links) are copied from the archive: their
  header blocks as written, then their data;
- the root and the unselected directories above a selected entry get a header made from their index
  entry (their attributes; nothing of them is extracted but their directory).

Every frame read is checked by zstd (each carries a checksum), every tar header by its checksum, and
every extracted file's size and SHA-256 against the index. The archive's whole-artifact SHA-256 is not
checked (the rest of it is not read): ``jdr verify`` does that.
"""

from __future__ import annotations

import bisect
import io
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, cast

import zstandard

from dr.archive.tarfmt import BLOCK, header
from dr.archive.walk import ROOT
from dr.errors import IntegrityError
from dr.model import IndexEntry

PIECE = 16 << 20  # largest single ranged read
_FEED = 1 << 16  # compressed bytes given to the decompressor at a time
MAX_FRAME = 64 << 20  # decompressed bytes of one frame; jdr writes at most ~9 MiB
_EXTENDED = {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK,
             tarfile.SOLARIS_XHDTYPE}
_KIND = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE}

Fetch = Callable[[int, int], bytes]  # (start, length) -> bytes of the compressed archive


def seekable(entries: Sequence[IndexEntry]) -> bool:
    """Whether the index records frames for every entry (archives written before frames did not)."""
    return bool(entries) and all(e.frame >= 0 and e.frame_offset >= 0 for e in entries)


@dataclass(frozen=True)
class Plan:
    """What a selection needs: the entries to copy from the archive, those to make from the index,
    and the compressed byte ranges (runs of frames) to read."""

    copy: frozenset[int]  # positions in the index of entries copied from the archive
    make: frozenset[int]  # positions of directories made from their index entry
    runs: tuple[tuple[int, int], ...]  # (start, end) compressed offsets, ascending, disjoint

    @property
    def compressed_bytes(self) -> int:
        return sum(end - start for start, end in self.runs)


def plan(entries: Sequence[IndexEntry], select: Callable[[IndexEntry], bool], size: int) -> Plan:
    """Plan the ranged reads of the entries ``select`` picks from the seekable index ``entries`` (in
    archive order) of an archive of ``size`` compressed bytes. Raises IntegrityError if the index's
    frame offsets are out of order or beyond ``size``."""
    position = {e.path: i for i, e in enumerate(entries)}
    copy: set[int] = set()
    make: set[int] = set()
    for i, e in enumerate(entries):
        if e.path == ROOT or not select(e):
            continue
        copy.add(i)
        if e.type == "hardlink" and e.link in position:
            copy.add(position[e.link])
    for i in list(copy):
        parent = entries[i].path
        while b"/" in parent:
            parent = parent.rsplit(b"/", 1)[0]
            j = position.get(parent)
            if j is not None and j not in copy:
                make.add(j)
    root = position.get(ROOT)
    if root is not None and root not in copy:
        make.add(root)
    starts = sorted({e.frame for e in entries})
    if starts and starts[-1] >= size:
        raise IntegrityError(f"the index places a frame at {starts[-1]}, beyond the archive's {size} bytes")
    ranges: list[tuple[int, int]] = []
    for i in sorted(copy):
        start = entries[i].frame
        if i + 1 < len(entries):
            following = entries[i + 1].frame
            if following < start:
                raise IntegrityError("the index's frame offsets are not in archive order")
            k = bisect.bisect_right(starts, following)
            end = starts[k] if k < len(starts) else size
        else:
            end = size
        if ranges and start <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], end))
        else:
            ranges.append((start, end))
    return Plan(frozenset(copy), frozenset(make), tuple(ranges))


def ranged_tar(entries: Sequence[IndexEntry], select: Callable[[IndexEntry], bool], fetch: Fetch,
               size: int, *, what: str = "archive") -> Iterator[bytes]:
    """The plain tar of the entries ``select`` picks (see the module docstring), read with ``fetch``.

    Raises IntegrityError naming ``what`` for a corrupt or truncated frame, or a damaged tar header.
    """
    p = plan(entries, select, size)
    runs = iter(p.runs)
    cursor: _Cursor | None = None
    for i, e in enumerate(entries):
        if i in p.make:
            yield header(e.path, _KIND[e.type], mode=e.mode, uid=e.uid, gid=e.gid,
                         mtime_ns=round(e.mtime * 1e9))
        elif i in p.copy:
            if cursor is None or not cursor.holds(e.frame):
                cursor = _Cursor(fetch, *next(runs), what=what)
            cursor.goto(e.frame, e.frame_offset)
            yield from _member(cursor, e, what)
    yield bytes(2 * BLOCK)


def open_ranged(entries: Sequence[IndexEntry], select: Callable[[IndexEntry], bool], fetch: Fetch,
                size: int, *, what: str = "archive") -> BinaryIO:
    """:func:`ranged_tar` as a readable binary stream."""
    return cast(BinaryIO, io.BufferedReader(_ChunkReader(ranged_tar(entries, select, fetch, size, what=what)),
                                            buffer_size=1 << 16))


class _ChunkReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._left:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._left = nxt
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


def _member(cursor: _Cursor, e: IndexEntry, what: str) -> Iterator[bytes]:
    """The header blocks and the data of entry ``e``, which starts at the cursor."""
    while True:
        block = cursor.read(BLOCK)
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.TarError as err:
            raise IntegrityError(f"{what}: damaged tar header of {e.name!r} at frame {e.frame}: {err}") from err
        yield block
        if info.type not in _EXTENDED:
            break
        yield cursor.read(-(-info.size // BLOCK) * BLOCK)
    remaining = -(-e.size // BLOCK) * BLOCK if e.type == "file" else 0
    while remaining:
        chunk = cursor.read(min(remaining, 1 << 20))
        remaining -= len(chunk)
        yield chunk


class _Cursor:
    """Decompresses the frames in compressed bytes ``[start, end)`` forward, knowing where each starts."""

    def __init__(self, fetch: Fetch, start: int, end: int, *, what: str) -> None:
        self._fetch = fetch
        self._what = what
        self._end = end
        self._fetched = start  # compressed offset up to which bytes were fetched
        self._input = bytearray()  # fetched compressed bytes not yet given to a decompressor
        self._next = start  # compressed offset of the next frame
        self.frame = -1  # compressed offset of the current frame
        self._out = b""  # decompressed bytes of the current frame
        self._pos = 0

    def holds(self, frame: int) -> bool:
        """Whether ``frame`` is at or after the current frame, within this run."""
        return self.frame <= frame < self._end

    def goto(self, frame: int, offset: int) -> None:
        """Move forward to ``offset`` in the decompressed bytes of the frame at ``frame``."""
        while self.frame < frame:
            self._load()
        if self.frame != frame:
            raise IntegrityError(f"{self._what}: no frame starts at {frame} (the index does not fit it)")
        if not self._pos <= offset <= len(self._out):
            raise IntegrityError(f"{self._what}: the index places an entry at {offset} in the frame at "
                                 f"{frame}, which does not fit it")
        self._pos = offset

    def read(self, n: int) -> bytes:
        """Exactly ``n`` decompressed bytes, continuing into following frames."""
        out = bytearray()
        while len(out) < n:
            if self._pos == len(self._out):
                self._load()
            take = min(n - len(out), len(self._out) - self._pos)
            out += self._out[self._pos:self._pos + take]
            self._pos += take
        return bytes(out)

    def _load(self) -> None:
        if self._next >= self._end:
            raise IntegrityError(f"{self._what} is truncated: an entry continues past the frames that "
                                 f"the index says hold it (offset {self._end})")
        dobj = zstandard.ZstdDecompressor().decompressobj()
        out = bytearray()
        fed = 0
        try:
            while not dobj.eof:
                piece = self._take()
                if not piece:
                    raise IntegrityError(f"{self._what} is truncated inside the frame at {self._next}")
                fed += len(piece)
                out += dobj.decompress(piece)
                if len(out) > MAX_FRAME:
                    raise IntegrityError(f"{self._what}: the frame at {self._next} decompresses to more "
                                         f"than {MAX_FRAME} bytes")
        except zstandard.ZstdError as err:
            raise IntegrityError(f"{self._what} is corrupt in the frame at {self._next}: {err}") from err
        unused = dobj.unused_data
        self._input[:0] = unused
        self.frame, self._next = self._next, self._next + fed - len(unused)
        self._out, self._pos = bytes(out), 0

    def _take(self) -> bytes:
        if not self._input and self._fetched < self._end:
            length = min(PIECE, self._end - self._fetched)
            data = self._fetch(self._fetched, length)
            self._fetched += len(data)
            if len(data) < length:
                self._end = self._fetched  # the archive ends early: a later read reports truncation
            self._input += data
        piece = bytes(self._input[:_FEED])
        del self._input[:_FEED]
        return piece
