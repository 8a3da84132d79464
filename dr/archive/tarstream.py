"""Reading a compressed tar strictly in order, where every irregularity is an error.

:mod:`tarfile`'s own iteration ends quietly at a damaged header or a missing end marker (it only complains
at offset 0), and keeps every member in a list. :class:`TarStream` reads member headers itself with the
documented :meth:`tarfile.TarInfo.fromtarfile`, so a bad checksum, a truncated header or data, and
non-zero bytes after the end-of-archive marker all raise IntegrityError; and it keeps no member list,
so memory stays flat however many members there are.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

from dr.archive.zstdio import ZstdSource
from dr.errors import IntegrityError

CHUNK = 1 << 20
# tarfile's stream buffer: every header read copies what is left of it, so it stays modest.
_STREAM_BUFSIZE = 1 << 16


class PlainSource(io.RawIOBase):
    """An uncompressed tar stream, with the :meth:`ZstdSource.drain` check of what follows its end."""

    def __init__(self, src: BinaryIO, *, what: str) -> None:
        super().__init__()
        self._src = src
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._src.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read ``src`` to its EOF; IntegrityError if anything but zeros remains."""
        while data := self._src.read(1 << 20):
            if data.count(0) != len(data):
                raise IntegrityError(f"{self._what} has data after its end-of-archive marker")


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
        try:
            # Not a context manager: the stream lives as long as this object's iteration.
            self._tar = tarfile.open(fileobj=self._source, mode="r|", bufsize=_STREAM_BUFSIZE,  # noqa: SIM115
                                     encoding="utf-8", errors="surrogateescape")
        except tarfile.TarError as e:
            raise IntegrityError(f"{what} is not a valid tar stream: {e}") from e
        self.member_count = 0

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        try:
            # The first header was read by tarfile.open, whose checks are strict at offset 0.
            member = self._tar.next()
        except tarfile.TarError as e:
            raise IntegrityError(f"{self._what} is not a valid tar stream: {e}") from e
        while member is not None:
            self.member_count += 1
            yield member
            member = self._next()
        self._finish()

    def chunks(self, member: tarfile.TarInfo) -> Iterator[bytes]:
        """The data of the current member in chunks of up to 1 MiB; exactly ``member.size`` bytes."""
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

    def _next(self) -> tarfile.TarInfo | None:
        tar = self._tar
        cast(Any, tar).members.clear()  # tarfile lists the first member (not in the stubs); keep nothing
        try:
            # Skip whatever data of the previous member was not read (forward seek in a stream).
            if tar.offset != tar.fileobj.tell():
                tar.fileobj.seek(tar.offset - 1)
                if not tar.fileobj.read(1):
                    raise IntegrityError(f"{self._what} is truncated (data of member "
                                         f"{self.member_count} ends early)")
            return tar.tarinfo.fromtarfile(tar)
        except tarfile.HeaderError as e:
            # EOFHeaderError (not in the stubs) is the all-zero block: the end-of-archive marker.
            if type(e).__name__ == "EOFHeaderError":
                return None
            if type(e).__name__ == "EmptyHeaderError":
                raise IntegrityError(f"{self._what} is truncated: it ends after member "
                                     f"{self.member_count} without an end-of-archive marker") from e
            raise IntegrityError(f"{self._what} has a damaged tar header after member "
                                 f"{self.member_count} (offset {tar.offset}): {e}") from e
        except tarfile.TarError as e:
            raise IntegrityError(f"{self._what}: cannot read member {self.member_count + 1}: {e}") from e

    def _finish(self) -> None:
        # What tarfile buffered past the marker must be zeros too; the rest is checked by drain().
        leftover = getattr(self._tar.fileobj, "buf", b"")
        if isinstance(leftover, bytes) and leftover.count(0) != len(leftover):
            raise IntegrityError(f"{self._what} has data after its end-of-archive marker")
        self._source.drain()
