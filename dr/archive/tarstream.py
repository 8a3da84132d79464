"""Reading a compressed tar strictly in order, where every irregularity is an error.

:mod:`tarfile`'s own iteration ends quietly at a damaged header or a missing end marker (it only complains
at offset 0), and keeps every member in a list. :class:`TarStream` reads member headers itself, so a bad
checksum, a truncated header or data, and non-zero bytes after the end-of-archive marker all raise
IntegrityError; and it keeps no member list, so memory stays flat however many members there are.

The headers jdr writes are parsed by :mod:`dr.archive.tarparse` (a quarter of a restore's time went to
``tarfile``'s general parser); every other header — the first one, the end marker, anything unusual or
damaged — is read by the documented :meth:`tarfile.TarInfo.fromtarfile`, so what is refused, and how, is
``tarfile``'s decision as before.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

from dr.archive.tarfmt import ENCODING, ERRORS
from dr.archive.tarparse import parse_member
from dr.archive.zstdio import ZstdSource
from dr.errors import IntegrityError

CHUNK = 1 << 20
_PIECE = 1 << 17  # bytes asked of the source at a time, unless it says (``piece_size``) what suits it


class PlainSource(io.RawIOBase):
    """An uncompressed tar stream, with the :meth:`ZstdSource.drain` check of what follows its end."""

    def __init__(self, src: BinaryIO, *, what: str) -> None:
        super().__init__()
        self._src = src
        self._what = what

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        # Straight from the source: no copy through a buffer (RawIOBase.read would make two).
        return self._src.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._src.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read ``src`` to its EOF; IntegrityError if anything but zeros remains."""
        while data := self._src.read(1 << 20):
            if data.count(0) != len(data):
                raise IntegrityError(f"{self._what} has data after its end-of-archive marker")


class _Reader:
    """A forward-only view of a stream, with the ``read``/``tell``/``seek`` that :class:`tarfile.TarFile`
    uses and a :meth:`peek` for the header parser. Seeking backwards raises ``tarfile.StreamError``, as
    tarfile's own stream does."""

    def __init__(self, src: ZstdSource | PlainSource, piece: int) -> None:
        self._src = src
        self._piece = piece
        self._buf = b""
        self._pos = 0  # read position in _buf
        self._base = 0  # stream offset of _buf[0]

    def tell(self) -> int:
        return self._base + self._pos

    def _fill(self, n: int) -> bool:
        """Have at least ``n`` unread bytes buffered; False if the stream ends first."""
        have = len(self._buf) - self._pos
        if have >= n:
            return True
        parts = [self._buf[self._pos:]] if have else []
        while have < n:
            data = self._src.read(max(self._piece, n - have))
            if not data:
                break
            parts.append(data)
            have += len(data)
        self._base += self._pos
        self._buf = parts[0] if len(parts) == 1 else b"".join(parts)  # one piece: no copy
        self._pos = 0
        return have >= n

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer only at the end of the stream), not consumed."""
        if self._pos + n > len(self._buf):
            self._fill(n)
        return self._buf[self._pos:self._pos + n]

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise io.UnsupportedOperation("read of a tar stream to its end")
        if self._pos + n > len(self._buf):
            self._fill(n)
        data = self._buf[self._pos:self._pos + n]
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("seek relative to a tar stream's position or end")
        ahead = pos - self._base - self._pos
        if ahead < 0:
            raise tarfile.StreamError("seeking backwards is not allowed")
        if self._pos + ahead <= len(self._buf):  # within what is buffered (a member's padding)
            self._pos += ahead
            return pos
        while self.tell() < pos and self._fill(1):
            self._pos += min(pos - self.tell(), len(self._buf) - self._pos)
        return self.tell()

    def seekable(self) -> bool:
        return False

    def leftover(self) -> bytes:
        """What is buffered but unread."""
        return self._buf[self._pos:]


class TarStream:
    """The members of the zstd-compressed (or, with ``compressed=False``, plain) tar ``src``, in order.

    Iterate once; while a member is current, :meth:`chunks` reads its data. When iteration ends normally,
    the whole of ``src`` has been read through to its EOF (so a checksumming wrapper around ``src`` has
    seen every byte). Raises IntegrityError naming the problem for corrupt zstd data, a damaged or
    truncated tar, or data after the end marker.
    """

    def __init__(self, src: BinaryIO, *, what: str = "archive", compressed: bool = True) -> None:
        self._what = what
        self._source: ZstdSource | PlainSource = (ZstdSource(src, what=what) if compressed
                                                  else PlainSource(src, what=what))
        # A parallel source hands out whole decompressed frames when asked for as much (no copy).
        self._reader = _Reader(self._source, max(_PIECE, getattr(src, "piece_size", 0)))
        try:
            # tarfile reads the first header, with its strict checks at offset 0; later ones are read in
            # _next. Not a context manager: the stream lives as long as this object's iteration.
            # (Reading needs only read/tell/seek of the file object, not the write/close of its stub type.)
            self._tar = tarfile.TarFile(fileobj=self._reader, mode="r",  # type: ignore[arg-type]
                                        encoding=ENCODING, errors=ERRORS)
        except (tarfile.TarError, ValueError) as e:  # ValueError: see _next
            raise IntegrityError(f"{what} is not a valid tar stream: {e}") from e
        self._next_at = 0  # where the header after the current member starts
        self._fast: tarfile.TarInfo | None = None  # the current member, when read by tarparse
        self.member_count = 0

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        try:
            member = self._tar.next()
        except (tarfile.TarError, ValueError) as e:
            raise IntegrityError(f"{self._what} is not a valid tar stream: {e}") from e
        cast(Any, self._tar).members.clear()  # tarfile lists the first member (not in the stubs); keep nothing
        self._next_at = self._tar.offset
        while member is not None:
            self.member_count += 1
            yield member
            member = self._next()
        self._finish()

    def chunks(self, member: tarfile.TarInfo) -> Iterator[bytes]:
        """The data of the current member in chunks of up to 1 MiB; exactly ``member.size`` bytes."""
        return self._fast_chunks(member) if member is self._fast else self._tar_chunks(member)

    def _tar_chunks(self, member: tarfile.TarInfo) -> Iterator[bytes]:
        data = self._tar.extractfile(member)
        if data is None:
            return
        remaining = member.size
        try:
            while remaining > 0:
                chunk = data.read(min(CHUNK, remaining))
                if not chunk:
                    raise IntegrityError(f"{self._what} is truncated inside the data of {member.name!r}")
                remaining -= len(chunk)
                yield chunk
        except tarfile.TarError as e:
            raise IntegrityError(f"{self._what}: cannot read the data of {member.name!r}: {e}") from e

    def _fast_chunks(self, member: tarfile.TarInfo) -> Iterator[bytes]:
        reader = self._reader
        if reader.tell() != member.offset_data:
            raise IntegrityError(f"{self._what}: the data of {member.name!r} was read already")
        remaining = member.size
        while remaining > 0:
            chunk = reader.read(min(CHUNK, remaining))
            if len(chunk) < min(CHUNK, remaining):  # the words tarfile's reader used
                raise IntegrityError(f"{self._what}: cannot read the data of {member.name!r}: "
                                     "unexpected end of data")
            remaining -= len(chunk)
            yield chunk

    def _next(self) -> tarfile.TarInfo | None:
        reader, tar = self._reader, self._tar
        self._fast = None
        # Skip whatever data of the previous member was not read (forward seek in a stream).
        if reader.tell() != self._next_at:
            try:
                reader.seek(self._next_at - 1)
            except tarfile.TarError as e:
                raise IntegrityError(f"{self._what}: cannot read member {self.member_count + 1}: {e}") from e
            if not reader.read(1):
                raise IntegrityError(f"{self._what} is truncated (data of member "
                                     f"{self.member_count} ends early)")
        if not tar.pax_headers:  # a global pax header applies to all later members: tarfile's job
            parsed = parse_member(reader.peek, self._next_at)
            if parsed is not None:
                member, header_length, data_length = parsed
                reader.read(header_length)
                self._next_at = member.offset_data + data_length
                self._fast = member
                return member
        tar.offset = self._next_at
        try:
            member = tar.tarinfo.fromtarfile(tar)
        except tarfile.HeaderError as e:
            # EOFHeaderError (not in the stubs) is the all-zero block: the end-of-archive marker.
            if type(e).__name__ == "EOFHeaderError":
                return None
            if type(e).__name__ == "EmptyHeaderError":
                raise IntegrityError(f"{self._what} is truncated: it ends after member "
                                     f"{self.member_count} without an end-of-archive marker") from e
            raise IntegrityError(f"{self._what} has a damaged tar header after member "
                                 f"{self.member_count} (offset {tar.offset}): {e}") from e
        except ValueError as e:
            # tarfile lets a pax GNU.sparse.size (or sparse map) that is not a number out as ValueError.
            raise IntegrityError(f"{self._what} has a damaged tar header after member "
                                 f"{self.member_count} (offset {tar.offset}): {e}") from e
        except tarfile.TarError as e:
            raise IntegrityError(f"{self._what}: cannot read member {self.member_count + 1}: {e}") from e
        self._next_at = tar.offset
        return member

    def _finish(self) -> None:
        # What was buffered past the marker must be zeros too; the rest is checked by drain().
        leftover = self._reader.leftover()
        if leftover.count(0) != len(leftover):
            raise IntegrityError(f"{self._what} has data after its end-of-archive marker")
        self._source.drain()
