"""The tar dialect of volume archives: POSIX pax headers written by hand, read back exactly.

Headers come from :meth:`tarfile.TarInfo.tobuf` (pax format, names as UTF-8 with ``surrogateescape``, so a
name that is not UTF-8 gets ``hdrcharset=BINARY`` and keeps its exact bytes). User and group names are
left empty so that every restore uses the numeric ids. Sub-second mtimes go in a pax ``mtime`` record with
nanosecond digits; :func:`member_mtime_ns` reads that record back without the float rounding of tarfile.
"""

from __future__ import annotations

import os
import tarfile

from dr.model import EntryType, IndexEntry

BLOCK = 512
RECORD = 20 * BLOCK  # GNU tar's default record; the archive's length is a multiple of it
ENCODING = "utf-8"
ERRORS = "surrogateescape"  # undecodable name bytes survive the str round trip

_NS = 1_000_000_000


def mtime_text(ns: int) -> str:
    """A pax ``mtime`` value: decimal seconds with up to nine fractional digits (``-1.5`` is 1.5 s before)."""
    sign = "-" if ns < 0 else ""
    sec, frac = divmod(abs(ns), _NS)
    return f"{sign}{sec}.{frac:09d}".rstrip("0").rstrip(".")


def parse_mtime_ns(text: str) -> int:
    """Inverse of :func:`mtime_text`; accepts any number of fractional digits. Raises ValueError."""
    neg = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"bad pax mtime {text!r}")
    ns = int(whole) * _NS + int((frac + "000000000")[:9])
    return -ns if neg else ns


def ns_to_float(ns: int) -> float:
    """The index's ``mtime``: seconds as a float, computed the same way on both sides of a round trip."""
    return ns / _NS


_PAX_NAME = b"././@PaxHeader"
_USTAR_MAGIC = b"ustar\x0000"


def _ustar(name: bytes, kind: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
           linkname: bytes) -> bytes:
    """One ustar header block, byte for byte as ``tarfile`` writes it for a pax archive."""
    # One formatting operation for the numeric fields (mode, uid, gid: 8 bytes; size, mtime: 12).
    numbers = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode & 0o7777, uid, gid, size, mtime)
    # The checksum sums every byte of the block, its own field counted as spaces; the padding is zeros
    # and the magic a constant, so only the variable fields are summed (not all 512 bytes, twice per file).
    chksum = sum(name) + sum(numbers) + kind[0] + sum(linkname) + _CONSTANT_SUM
    return b"".join((name.ljust(100, b"\0"), numbers, b"%06o\0 " % chksum, kind, linkname.ljust(100, b"\0"),
                     _USTAR_MAGIC, _USTAR_TAIL))


# Owner names (64), no device numbers (tarfile leaves them empty, 16), no prefix (155), then padding to 512.
_USTAR_TAIL = b"\0" * (BLOCK - 100 - 48 - 8 - 1 - 100 - len(_USTAR_MAGIC))
_CONSTANT_SUM = 8 * ord(" ") + sum(_USTAR_MAGIC)  # the checksum field (as spaces) and the magic


def _pax_record(keyword: bytes, value: bytes) -> bytes:
    length = len(keyword) + len(value) + 3
    n = p = 0
    while True:
        n = length + len(str(p))
        if n == p:
            break
        p = n
    return b"%d %s=%s\n" % (p, keyword, value)


def _fast_header(rel: bytes, kind: bytes, mode: int, uid: int, gid: int, mtime_ns: int, size: int,
                 linkname: bytes) -> bytes | None:
    """The common case without ``tarfile``: short ASCII names, ids and sizes that fit the ustar fields.

    Building headers through ``TarInfo.tobuf`` cost a third of a backup's CPU time on homes of small
    files; this writes the same bytes (tests/unit/test_tarfmt.py compares them) or returns None.
    """
    name = rel + b"/" if kind == tarfile.DIRTYPE and not rel.endswith(b"/") else rel
    if (len(name) > 100 or len(linkname) > 100 or not name.isascii() or not linkname.isascii()
            or mtime_ns < 0 or uid >= 8**7 or gid >= 8**7 or size >= 8**11 or mtime_ns // _NS >= 8**11
            or uid < 0 or gid < 0):
        return None
    sec, frac = divmod(mtime_ns, _NS)
    head = _ustar(name, kind, mode, uid, gid, size, sec, linkname)
    if not frac:
        return head
    value = b"%d.%09d" % (sec, frac)  # mtime_text for a positive time, as bytes
    value = value.rstrip(b"0")
    # The pax header before ``head`` depends only on the record's length: its ustar block and padding
    # are made once per length (a handful of lengths in a whole backup), not twice per file.
    cached = _PAX_MTIME.get(len(value))
    if cached is None:
        records = _pax_record(b"mtime", value)
        length = int(records.split(b" ", 1)[0])
        cached = _PAX_MTIME[len(value)] = (
            _ustar(_PAX_NAME, tarfile.XHDTYPE, 0, 0, 0, len(records), 0, b"") + b"%d mtime=" % length,
            b"\n" + b"\0" * (-len(records) % BLOCK))
    return b"".join((cached[0], value, cached[1], head))


#: Length of an mtime value -> (the pax header's ustar block and the record up to its value, the
#: record's end and the padding to the next block); filled by :func:`_fast_header`.
_PAX_MTIME: dict[int, tuple[bytes, bytes]] = {}


def header(rel: bytes, kind: bytes, *, mode: int, uid: int, gid: int, mtime_ns: int, size: int = 0,
           linkname: bytes = b"") -> bytes:
    """The header block(s) of one member: a pax extended header when needed, then a ustar header."""
    fast = _fast_header(rel, kind, mode, uid, gid, mtime_ns, size, linkname)
    if fast is not None:
        return fast
    return _tarfile_header(rel, kind, mode=mode, uid=uid, gid=gid, mtime_ns=mtime_ns, size=size,
                           linkname=linkname)


def _tarfile_header(rel: bytes, kind: bytes, *, mode: int, uid: int, gid: int, mtime_ns: int,
                    size: int = 0, linkname: bytes = b"") -> bytes:
    info = tarfile.TarInfo(os.fsdecode(rel))
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.size = size
    info.linkname = os.fsdecode(linkname)
    sec = mtime_ns // _NS
    info.mtime = max(sec, 0)
    if mtime_ns % _NS or mtime_ns < 0:
        # tarfile writes the integer part in the ustar field and lets this record take priority.
        info.pax_headers = {"mtime": mtime_text(mtime_ns)}
    return info.tobuf(tarfile.PAX_FORMAT, ENCODING, ERRORS)


def member_name(member: tarfile.TarInfo) -> bytes:
    return member.name.encode(ENCODING, ERRORS)


def member_link(member: tarfile.TarInfo) -> bytes:
    return member.linkname.encode(ENCODING, ERRORS)


def member_mtime_ns(member: tarfile.TarInfo) -> int:
    """The member's mtime in nanoseconds, from the raw pax record when there is one."""
    raw = member.pax_headers.get("mtime")
    if raw is not None:
        try:
            return parse_mtime_ns(raw)
        except ValueError:
            pass
    return round(member.mtime * _NS)


def member_kind(member: tarfile.TarInfo) -> EntryType | None:
    """The index type of a member, or None for any type an archive of a volume may not hold."""
    if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.GNUTYPE_SPARSE):
        return "file"
    if member.type == tarfile.DIRTYPE:
        return "dir"
    if member.type == tarfile.SYMTYPE:
        return "symlink"
    if member.type == tarfile.LNKTYPE:
        return "hardlink"
    return None


def member_entry(member: tarfile.TarInfo, path: bytes, link: bytes = b"") -> IndexEntry:
    """What the archive says about a member, as an index entry (no content hash: that needs the data).

    ``path`` and ``link`` are the member's name and link target after normalisation by the caller.
    """
    kind = member_kind(member)
    if kind is None:
        raise ValueError(f"unsupported member type {member.type!r}")
    return IndexEntry(
        path=path, type=kind, size=member.size if kind == "file" else 0, mode=member.mode & 0o7777,
        uid=member.uid, gid=member.gid, mtime=ns_to_float(member_mtime_ns(member)),
        link=link if kind in ("symlink", "hardlink") else b"",
    )
