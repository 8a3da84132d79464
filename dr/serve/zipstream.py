"""A folder as a zip archive whose exact size is known before its first byte, written as it is read.

Why not :mod:`zipfile`: a streamed, deflated zip has a size nobody knows until it ends, so the browser
can show no progress. Here every member is STORED (no compression: the bytes of a file are its bytes
in the zip), so each member's size follows from the index alone — the file sizes, the symlink targets,
the names — and :meth:`ZipPlan.size` is the ``Content-Length``. The CRC-32 of a file is only known once
it is read, so file members carry it in a data descriptor after their data (general purpose flag bit 3,
APPNOTE 4.3.9), and in the central directory, as every zip reader expects.

Memory is bounded by one chunk plus one central-directory record per member (the index is in memory
already). The layout (APPNOTE 6.3.10):

- files: local header (sizes and CRC zero, bit 3 set) · data · data descriptor (16 bytes, or 24 with
  zip64 sizes); a file of 4 GiB or more gets a zip64 extra field in both headers (version 4.5);
- folders: a local header named ``…/`` with no data (so empty folders come back too);
- symbolic links: a STORED member whose data is the link's target, ``external_attr`` holding
  ``S_IFLNK`` in its upper 16 bits and "made by" Unix — what Info-ZIP's ``zip -y`` writes and
  ``unzip`` restores as a link. The target is the index's text, never resolved or followed here;
- the central directory, then (when a count, size or offset no longer fits 16/32 bits) the zip64
  end-of-central-directory record and locator, then the end-of-central-directory record.

Names are the index's bytes: flagged UTF-8 (bit 11) when they decode as UTF-8, else written as they are.
"""

from __future__ import annotations

import stat
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from dr.errors import IntegrityError

_U16, _U32 = 0xFFFF, 0xFFFFFFFF
_LOCAL = struct.Struct("<IHHHHHIIIHH")            # 30 bytes
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")    # 46 bytes
_DESC32 = struct.Struct("<IIII")                  # signature, crc, compressed, uncompressed
_DESC64 = struct.Struct("<IIQQ")
_EOCD = struct.Struct("<IHHHHIIH")                # 22 bytes
_EOCD64 = struct.Struct("<IQHHIIQQQQ")            # 56 bytes
_LOCATOR64 = struct.Struct("<IIQI")               # 20 bytes
_FLAG_DESCRIPTOR, _FLAG_UTF8 = 0x0008, 0x0800
_UNIX = 3


@dataclass(frozen=True)
class Member:
    """One member of the zip. ``size``: a file's length in bytes (from the index); ``link``: a symbolic
    link's target (its data in the zip); ``mode``: permission bits; ``key``: what the content source
    names this file by (the index path), to check contents arrive in the planned order."""

    name: bytes
    kind: Literal["file", "dir", "symlink"]
    mtime: float = 0.0
    mode: int = 0o644
    size: int = 0
    link: bytes = b""
    key: bytes = b""

    @property
    def data_size(self) -> int:
        return self.size if self.kind == "file" else len(self.link) if self.kind == "symlink" else 0

    @property
    def zip64(self) -> bool:
        return self.data_size >= _U32


class ZipPlan:
    """The layout of a zip of ``members`` (in this order); :attr:`size` is its exact length in bytes."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        for m in self.members:
            if m.kind == "dir" and not m.name.endswith(b"/"):
                raise ValueError(f"a folder's name ends with '/': {m.name!r}")
        self.offsets: list[int] = []
        pos = 0
        for m in self.members:
            self.offsets.append(pos)
            pos += _LOCAL.size + len(m.name) + _local_extra_len(m) + m.data_size + _desc_len(m)
        self.cd_offset = pos
        self.cd_size = sum(_CENTRAL.size + len(m.name) + _central_extra_len(m, off)
                           for m, off in zip(self.members, self.offsets, strict=True))
        self.eocd64 = (len(self.members) >= _U16 or self.cd_size >= _U32 or self.cd_offset >= _U32)
        self.size = (self.cd_offset + self.cd_size + (_EOCD64.size + _LOCATOR64.size if self.eocd64 else 0)
                     + _EOCD.size)

    def write(self, contents: Iterable[tuple[bytes, Iterator[bytes]]], emit: Callable[[bytes], None]) -> int:
        """Write the zip to ``emit``; ``contents`` yields (key, chunks) of every file member, in the
        plan's order. Returns the bytes written, always :attr:`size`: a file whose content is longer or
        shorter than its planned size, or a content out of order, raises IntegrityError (a streaming
        consumer must then abort what it sent: the zip is incomplete)."""
        source = iter(contents)
        crcs: list[int] = []
        written = 0

        def out(b: bytes) -> None:
            nonlocal written
            emit(b)
            written += len(b)

        for m, off in zip(self.members, self.offsets, strict=True):
            if written != off:  # cannot happen unless the plan and the writer disagree: never send a lie
                raise IntegrityError(f"zip layout error at {m.name!r}: {written} != {off}")
            out(_local_header(m))
            crc = 0
            if m.kind == "file":
                got = next(source, None)
                if got is None or got[0] != m.key:
                    raise IntegrityError(f"the archive's files are not in the index's order at {m.name!r}")
                n = 0
                for chunk in got[1]:
                    n += len(chunk)
                    if n > m.size:
                        raise IntegrityError(f"{m.name!r} is longer in the archive than in the index")
                    crc = zlib.crc32(chunk, crc)
                    out(bytes(chunk))
                if n != m.size:
                    raise IntegrityError(f"{m.name!r} is shorter in the archive than in the index")
                out(_DESC64.pack(0x08074B50, crc, n, n) if m.zip64 else _DESC32.pack(0x08074B50, crc, n, n))
            elif m.kind == "symlink":
                crc = zlib.crc32(m.link)
                out(m.link)
            crcs.append(crc)
        for m, off, crc in zip(self.members, self.offsets, crcs, strict=True):
            out(_central_header(m, off, crc))
        n = len(self.members)
        if self.eocd64:
            eocd64_at = written
            out(_EOCD64.pack(0x06064B50, _EOCD64.size - 12, (_UNIX << 8) | 45, 45, 0, 0, n, n,
                             self.cd_size, self.cd_offset))
            out(_LOCATOR64.pack(0x07064B50, 0, eocd64_at, 1))
        out(_EOCD.pack(0x06054B50, 0, 0, min(n, _U16), min(n, _U16), min(self.cd_size, _U32),
                       min(self.cd_offset, _U32), 0))
        if written != self.size:
            raise IntegrityError(f"zip layout error: wrote {written} bytes, planned {self.size}")
        return written


def _flags(m: Member) -> int:
    try:
        m.name.decode("utf-8")
        utf8 = _FLAG_UTF8
    except UnicodeDecodeError:
        utf8 = 0
    return utf8 | (_FLAG_DESCRIPTOR if m.kind == "file" else 0)


def _version(m: Member, offset: int = 0) -> int:
    return 45 if m.zip64 or offset >= _U32 else 20


def _local_extra_len(m: Member) -> int:
    return 20 if m.zip64 else 0


def _desc_len(m: Member) -> int:
    if m.kind != "file":
        return 0
    return _DESC64.size if m.zip64 else _DESC32.size


def _central_extra_len(m: Member, offset: int) -> int:
    fields = (2 if m.zip64 else 0) + (1 if offset >= _U32 else 0)
    return 4 + 8 * fields if fields else 0


def _local_header(m: Member) -> bytes:
    dtime, ddate = _dos_time(m.mtime)
    if m.kind == "file":  # CRC and sizes follow the data (data descriptor)
        crc, size, extra = 0, (_U32 if m.zip64 else 0), (struct.pack("<HHQQ", 1, 16, 0, 0) if m.zip64 else b"")
    else:
        crc, size, extra = (zlib.crc32(m.link) if m.kind == "symlink" else 0), m.data_size, b""
    return _LOCAL.pack(0x04034B50, _version(m), _flags(m), 0, dtime, ddate, crc, size, size,
                       len(m.name), len(extra)) + m.name + extra


def _central_header(m: Member, offset: int, crc: int) -> bytes:
    dtime, ddate = _dos_time(m.mtime)
    size = m.data_size
    extra = b""
    if m.zip64 or offset >= _U32:
        values = ([size, size] if m.zip64 else []) + ([offset] if offset >= _U32 else [])
        extra = struct.pack("<HH", 1, 8 * len(values)) + b"".join(struct.pack("<Q", v) for v in values)
    version = _version(m, offset)
    return _CENTRAL.pack(0x02014B50, (_UNIX << 8) | version, version, _flags(m), 0, dtime, ddate, crc,
                         _U32 if m.zip64 else size, _U32 if m.zip64 else size, len(m.name), len(extra), 0,
                         0, 0, _external_attr(m), min(offset, _U32)) + m.name + extra


def _external_attr(m: Member) -> int:
    if m.kind == "symlink":
        return (stat.S_IFLNK | 0o777) << 16
    if m.kind == "dir":
        return ((stat.S_IFDIR | (m.mode & 0o777 or 0o755)) << 16) | 0x10  # 0x10: MS-DOS directory bit
    return (stat.S_IFREG | (m.mode & 0o777 or 0o644)) << 16


def _dos_time(mtime: float) -> tuple[int, int]:
    t = time.gmtime(min(max(mtime, 315532800), 4354819199))  # zip holds 1980 … 2107
    return ((t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2),
            ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday)
