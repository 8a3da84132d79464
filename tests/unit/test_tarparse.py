"""The header parser of dr/archive/tarparse.py reads exactly what tarfile reads, or leaves it to tarfile.

The oracle is the reading :class:`dr.archive.tarstream.TarStream` did with ``tarfile`` alone (before
tarparse): ``tarfile.open(mode="r|")`` for the first header, ``TarInfo.fromtarfile`` for each later one,
the same error mapping. For random members written by jdr's header writer (tarfmt.header, which
writer.py and seek.py use) and by ``tarfile`` itself, then damaged at random (bytes overwritten, streams
cut, checksums broken, pax records rewritten by hand, base-256 numbers, hostile names and sizes), both
must yield the same members — every attribute, the same data — and end the same way: read through, or
the same IntegrityError message.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any, cast

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dr.archive import tarparse
from dr.archive.tarfmt import BLOCK, RECORD, header
from dr.archive.tarstream import PlainSource, TarStream
from dr.archive.writer import write_archive
from dr.errors import IntegrityError

_SLOTS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname", "gname",
          "devmajor", "devminor", "offset", "offset_data", "pax_headers", "sparse")


class OracleStream:
    """TarStream as it was before tarparse: every header read by tarfile (the reference behaviour)."""

    def __init__(self, src: io.BytesIO) -> None:
        self._source = PlainSource(src, what="archive")  # type: ignore[arg-type]
        try:
            self._tar = tarfile.open(fileobj=self._source, mode="r|", bufsize=1 << 16,
                                     encoding="utf-8", errors="surrogateescape")
        except (tarfile.TarError, ValueError) as e:
            raise IntegrityError(f"archive is not a valid tar stream: {e}") from e
        self.count = 0

    def members(self) -> Any:
        try:
            member = self._tar.next()
        except (tarfile.TarError, ValueError) as e:
            raise IntegrityError(f"archive is not a valid tar stream: {e}") from e
        while member is not None:
            self.count += 1
            yield member
            member = self._next()
        leftover = getattr(self._tar.fileobj, "buf", b"")
        if leftover.count(0) != len(leftover):
            raise IntegrityError("archive has data after its end-of-archive marker")
        self._source.drain()

    def data(self, member: tarfile.TarInfo) -> bytes:
        f = self._tar.extractfile(member)
        assert f is not None
        chunks, remaining = [], member.size
        try:
            while remaining > 0:
                chunk = f.read(min(1 << 20, remaining))
                if not chunk:
                    raise IntegrityError(f"archive is truncated inside the data of {member.name!r}")
                remaining -= len(chunk)
                chunks.append(chunk)
        except tarfile.TarError as e:
            raise IntegrityError(f"archive: cannot read the data of {member.name!r}: {e}") from e
        return b"".join(chunks)

    def _next(self) -> tarfile.TarInfo | None:
        tar = self._tar
        cast(Any, tar).members.clear()
        try:
            if tar.offset != tar.fileobj.tell():
                tar.fileobj.seek(tar.offset - 1)
                if not tar.fileobj.read(1):
                    raise IntegrityError(f"archive is truncated (data of member {self.count} ends early)")
            return tar.tarinfo.fromtarfile(tar)
        except tarfile.HeaderError as e:
            if type(e).__name__ == "EOFHeaderError":
                return None
            if type(e).__name__ == "EmptyHeaderError":
                raise IntegrityError(f"archive is truncated: it ends after member {self.count} without an "
                                     "end-of-archive marker") from e
            raise IntegrityError(f"archive has a damaged tar header after member {self.count} "
                                 f"(offset {tar.offset}): {e}") from e
        except ValueError as e:  # the one change: this used to escape as a ValueError (a crash)
            raise IntegrityError(f"archive has a damaged tar header after member {self.count} "
                                 f"(offset {tar.offset}): {e}") from e
        except tarfile.TarError as e:
            raise IntegrityError(f"archive: cannot read member {self.count + 1}: {e}") from e


Outcome = tuple[list[tuple[Any, ...]], str | None, int]


def _describe(m: tarfile.TarInfo, data: bytes | None) -> tuple[Any, ...]:
    return (*(getattr(m, slot, "<unset>") for slot in _SLOTS), data)


def read_new(tar: bytes, *, skip_data: bool = False) -> Outcome:
    """Members (every attribute and the data) read by TarStream, the error (or None), and how many
    members the fast parser read."""
    got: list[tuple[Any, ...]] = []
    fast = 0
    try:
        stream = TarStream(io.BytesIO(tar), compressed=False)  # type: ignore[arg-type]
        for m in stream:
            fast += m is stream._fast
            data = None if skip_data or not m.isreg() else b"".join(stream.chunks(m))
            got.append(_describe(m, data))
    except Exception as e:  # anything but IntegrityError fails the comparison below
        return got, f"{type(e).__name__}: {e}", fast
    return got, None, fast


def read_oracle(tar: bytes, *, skip_data: bool = False) -> Outcome:
    got: list[tuple[Any, ...]] = []
    try:
        stream = OracleStream(io.BytesIO(tar))
        for m in stream.members():
            got.append(_describe(m, None if skip_data or not m.isreg() else stream.data(m)))
    except Exception as e:
        return got, f"{type(e).__name__}: {e}", 0
    return got, None, 0


def assert_same(tar: bytes) -> int:
    """Both readers agree (reading every file's data, and skipping it); the count of fast-read members."""
    fast = 0
    for skip in (False, True):
        new, old = read_new(tar, skip_data=skip), read_oracle(tar, skip_data=skip)
        assert new[:2] == old[:2]
        assert new[1] is None or new[1].startswith("IntegrityError: ")
        fast = new[2]
    return fast


def finish(*members: bytes) -> bytes:
    body = b"".join(members) + bytes(2 * BLOCK)
    return body + bytes(-len(body) % RECORD)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


# --- members as jdr writes them ---------------------------------------------------------------------

_NAME_PART = st.one_of(
    st.text(st.sampled_from("abcXYZ019_-. é日\\"), min_size=1, max_size=12).map(lambda s: s.encode()),
    st.binary(min_size=1, max_size=6).filter(lambda b: b"/" not in b and b"\0" not in b),
    st.just(b".."), st.just(b"."), st.sampled_from([b"x" * 60, b"y" * 101]),
)
_NAME = st.lists(_NAME_PART, min_size=1, max_size=4).map(b"/".join) | st.sampled_from([b"/abs/path", b"."])
_KIND = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE])
_MTIME = st.one_of(st.integers(0, 2**33 * 10**9), st.integers(-(10**18), 10**18),
                   st.sampled_from([0, 10**9, 1_700_000_000 * 10**9, 8**11 * 10**9]))


@st.composite
def jdr_member(draw: st.DrawFn) -> bytes:
    return b"".join(draw(jdr_parts()))


@st.composite
def jdr_parts(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """The header block(s) of a member and its padded data."""
    kind = draw(_KIND)
    size = draw(st.sampled_from([0, 1, 511, 512, 513, 3000])) if kind == tarfile.REGTYPE else 0
    head = header(draw(_NAME), kind, mode=draw(st.sampled_from([0o644, 0o755, 0o4755, 0o1777, 0o7777, 0])),
                  uid=draw(st.sampled_from([0, 1000, 8**7 - 1, 8**7, 2**32])),
                  gid=draw(st.sampled_from([0, 100, 8**7 + 5])), mtime_ns=draw(_MTIME), size=size,
                  linkname=draw(_NAME) if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else b"")
    return head, padded(os.urandom(size) if size else b"")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(jdr_parts(), min_size=1, max_size=8))
def test_jdr_members_read_as_tarfile_reads_them(members: list[tuple[bytes, bytes]]) -> None:
    tar = finish(*(head + data for head, data in members))
    fast = assert_same(tar)
    # All but the first (tarfile reads that) took the fast path, but names that are not UTF-8 (jdr writes
    # them with a pax hdrcharset=BINARY record, which tarparse leaves to tarfile).
    assert fast == sum(b"hdrcharset=" not in head for head, _ in members[1:])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["a", "b/c", "é", "x" * 120, "d/" + "y" * 99]),
                          st.sampled_from(["file", "dir", "link"]),
                          st.integers(0, 2000), st.integers(-(10**17), 2 * 10**18)), min_size=1, max_size=6))
def test_archives_written_by_jdr_read_as_tarfile_reads_them(tmp_path_factory: Any,
                                                            tree: list[tuple[str, str, int, int]]) -> None:
    home = Path(tmp_path_factory.mktemp("home"))
    for name, kind, size, mtime_ns in tree:
        path = home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            continue
        if kind == "file":
            path.write_bytes(os.urandom(size // 2) + bytes(size - size // 2))
        elif kind == "dir":
            path.mkdir()
        else:
            path.symlink_to("../" + name)
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    out = io.BytesIO()
    write_archive(home, out, io.BytesIO())
    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out.getvalue())).read()
    new, old = read_new(tar), read_oracle(tar)
    assert new[:2] == old[:2] and new[1] is None
    assert new[2] == len(new[0]) - 1


# --- hostile and damaged headers --------------------------------------------------------------------

_PAX_KEYS = st.sampled_from(["path", "linkpath", "size", "mtime", "uid", "gid", "uname", "gname", "atime",
                             "ctime", "hdrcharset", "comment", "GNU.sparse.size", "GNU.sparse.map",
                             "GNU.sparse.major", "GNU.sparse.minor", "SCHILY.xattr.user.x", "é"])
_PAX_VALUE = st.one_of(st.sampled_from(["0", "12", "-1", "1.5", "1e3", "", " 7", "BINARY", "../../etc/passwd",
                                        "/abs", "a/b/", "99999999999999999999999", "1_0", "١٢", "0.1.0"]),
                       st.text(max_size=20))


def _bounded(key: str, value: str) -> str:
    """A pax size of at most 10 MB: the oracle's stream skips a member's data 64 KiB at a time, so a
    size of 10**23 would keep it busy for ever (TarStream seeks in one step)."""
    return "10000000" if key == "size" and value.isascii() and value.isdigit() and int(value) > 10**7 else value


@st.composite
def raw_record(draw: st.DrawFn) -> bytes:
    """A pax record, right or with a wrong length, a missing newline, no '='."""
    key = draw(_PAX_KEYS)
    value = _bounded(key, draw(_PAX_VALUE)).encode() + draw(st.sampled_from([b"", b"\xff", b"\n"]))
    body = b" " + key.encode() + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    length = len(body) + len(str(length))  # one more digit when the first guess crossed a power of ten
    form = draw(st.sampled_from(["ok", "ok", "ok", "long", "short", "zero", "nonl", "noeq", "junk"]))
    if form == "long":
        length += draw(st.integers(1, 40))
    elif form == "short":
        length -= draw(st.integers(1, 10))
    elif form == "zero":
        length = 0
    elif form == "nonl":
        body = body[:-1] + b"X"
    elif form == "noeq":
        body = body.replace(b"=", b":", 1)
    elif form == "junk":
        return draw(st.binary(max_size=30))
    return str(length).encode() + body


def ustar_block(name: bytes, kind: bytes, size: int, *, fields: dict[int, bytes] | None = None,
                chksum: str = "right") -> bytes:
    """One ustar header block as tarfmt writes it, with raw bytes overwritten at given offsets."""
    block = bytearray(header(b"n", tarfile.REGTYPE, mode=0o644, uid=1, gid=2, mtime_ns=10**9, size=0))
    block[0:100] = name[:100].ljust(100, b"\0")
    block[124:136] = b"%011o\0" % (size % 8**11)
    block[156:157] = kind
    for at, raw in (fields or {}).items():
        block[at:at + len(raw)] = raw
    block[148:156] = b" " * 8
    total = sum(block)
    if chksum == "right":
        block[148:156] = b"%06o\0 " % total
    elif chksum == "signed":  # the signed sum tarfile also accepts
        block[148:156] = b"%06o\0 " % (total - 256 * sum(1 for b in block if b > 127))
    elif chksum == "wrong":
        block[148:156] = b"%06o\0 " % (total + 1)
    return bytes(block)


_FIELD_DAMAGE = st.sampled_from([
    {}, {}, {}, {100: b"\x80\0\0\0\0\0\x01\xa4"},  # base-256 mode
    {108: b"\xff\xff\xff\xff\xff\xff\xff\xfe"},  # base-256 negative uid
    {124: b"\x80" + bytes(10) + b"\x05"},  # base-256 size
    {100: b"  644 \0\0"}, {100: b"0000948\0"}, {136: b"1_0000000000"}, {136: b"+0000000001\0"},
    {329: b"0000001\0"}, {345: b"prefix"}, {257: b"ustar  \0"}, {265: b"root\0"}, {0: b"\xc3\xa9\xff"},
    {157: b"../../etc/passwd"}, {0: b"/etc/shadow\0"}, {0: b"../x\0"},
])
_TYPES = st.sampled_from([tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                          tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE,
                          tarfile.GNUTYPE_LONGNAME, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, b"Z"])


@st.composite
def hostile_member(draw: st.DrawFn) -> bytes:
    form = draw(st.sampled_from(["pax", "pax", "ustar", "tarfile"]))
    if form == "tarfile":  # tarfile's own writer in any format, with any pax headers
        info = tarfile.TarInfo(draw(_NAME).decode("utf-8", "surrogateescape"))
        info.type = draw(_TYPES)
        info.size = draw(st.sampled_from([0, 5, 600])) if info.type in tarfile.REGULAR_TYPES else 0
        info.linkname = draw(_NAME).decode("utf-8", "surrogateescape")
        info.mtime = draw(st.sampled_from([0, 1.5, -3, 8**11]))
        info.pax_headers = {k: _bounded(k, v) for k, v in draw(st.dictionaries(_PAX_KEYS, _PAX_VALUE, max_size=3)).items()}
        fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
        try:
            head = info.tobuf(fmt, "utf-8", "surrogateescape")
        except (ValueError, UnicodeError):
            head = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        return head + padded(os.urandom(info.size))
    kind = draw(_TYPES) if draw(st.booleans()) else draw(st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE]))
    size = draw(st.sampled_from([0, 3, 512, 700, 10**7]))
    block = ustar_block(draw(_NAME), kind, size, fields=draw(_FIELD_DAMAGE),
                        chksum=draw(st.sampled_from(["right", "right", "right", "signed", "wrong"])))
    data = padded(os.urandom(size)) if size < 1000 and kind in tarfile.REGULAR_TYPES else b""
    if form == "ustar":
        return block + data
    records = b"".join(draw(st.lists(raw_record(), max_size=4)))
    pad = draw(st.sampled_from([b"", b"", b"7 a=b\n", b"\x01"]))
    xsize = len(records) + draw(st.sampled_from([0, 0, 0, -1, 3]))
    xhead = ustar_block(b"././@PaxHeader", draw(st.sampled_from([tarfile.XHDTYPE, tarfile.XHDTYPE,
                                                                 tarfile.XGLTYPE])), max(xsize, 0),
                        chksum=draw(st.sampled_from(["right", "right", "wrong"])))
    return xhead + padded(records + pad) + block + data


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    first = draw(jdr_member())
    members = [first, *draw(st.lists(st.one_of(jdr_member(), hostile_member()), min_size=1, max_size=5))]
    tar = bytearray(finish(*members))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(tar) - 1))
        tar[at] = draw(st.integers(0, 255))
    cut = draw(st.sampled_from([None, None, "anywhere", "block"]))
    if cut == "anywhere":
        del tar[draw(st.integers(0, len(tar))):]
    elif cut == "block":
        del tar[draw(st.integers(0, len(tar) // BLOCK)) * BLOCK:]
    if draw(st.booleans()):
        tar += draw(st.sampled_from([b"", b"\0" * 100, b"trailing junk"]))
    return bytes(tar)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_hostile_and_damaged_streams_read_or_fail_as_with_tarfile(tar: bytes) -> None:
    assert_same(tar)


# --- examples that must stay on (or off) the fast path ----------------------------------------------


def test_pax_records_are_applied_as_tarfile_applies_them() -> None:
    records = (b"30 mtime=1700000000.123456789\n" b"13 path=a/b/\n" b"16 linkpath=x/y\n" b"8 uid=7\n"
               b"11 size=10\n" b"15 uname=alice\n" b"21 ctime=1.000000001\n")
    xhead = ustar_block(b"././@PaxHeader", tarfile.XHDTYPE, len(records))
    root = header(b".", tarfile.DIRTYPE, mode=0o755, uid=0, gid=0, mtime_ns=0)
    tar = finish(root, xhead + padded(records) + ustar_block(b"short", tarfile.REGTYPE, 3) + padded(b"0123456789"))
    assert assert_same(tar) == 1
    member = read_new(tar)[0][1]
    assert member[0] == "a/b" and member[5] == 1700000000.123456789 and member[4] == 10


def test_unusual_headers_are_left_to_tarfile() -> None:
    head = header(b".", tarfile.DIRTYPE, mode=0o755, uid=0, gid=0, mtime_ns=0)
    unusual = [
        ustar_block(b"f", tarfile.REGTYPE, 0, chksum="signed", fields={0: b"\xc3\xa9"}),  # high bytes
        ustar_block(b"f", tarfile.REGTYPE, 0, fields={124: b"\x80" + bytes(10) + b"\x01"}),  # base-256
        ustar_block(b"f", tarfile.REGTYPE, 0, fields={345: b"pre"}),  # a ustar prefix
        ustar_block(b"f", tarfile.AREGTYPE, 0),
        ustar_block(b"f", tarfile.REGTYPE, 0, fields={257: b"ustar  \0"}),  # GNU magic
    ]
    for block in unusual:
        assert tarparse.parse_member(lambda n, b=block: b[:n], 0) is None  # type: ignore[misc]
        assert assert_same(finish(head, block)) == 0
    records = b"20 hdrcharset=BINARY\n"
    x = ustar_block(b"././@PaxHeader", tarfile.XHDTYPE, len(records)) + padded(records)
    assert assert_same(finish(head, x + ustar_block(b"\xff", tarfile.REGTYPE, 0, chksum="signed"))) == 0


def test_bad_checksum_is_refused_as_before() -> None:
    head = header(b".", tarfile.DIRTYPE, mode=0o755, uid=0, gid=0, mtime_ns=0)
    tar = finish(head, ustar_block(b"f", tarfile.REGTYPE, 0, chksum="wrong"))
    new = read_new(tar)
    assert new[1] == "IntegrityError: archive has a damaged tar header after member 1 (offset 512): bad checksum"
    assert assert_same(tar) == 0


def test_a_huge_pax_size_ends_as_truncation_at_once() -> None:
    """tarfile's own stream skipped data 64 KiB at a time: a pax size of 10**23 kept the old reader busy
    for ever (the oracle cannot be run on it). TarStream reaches the end of the stream at once."""
    root = header(b".", tarfile.DIRTYPE, mode=0o755, uid=0, gid=0, mtime_ns=0)
    body = b" size=" + b"1" + b"0" * 23 + b"\n"
    records = str(len(body) + 2).encode() + body
    big = ustar_block(b"././@PaxHeader", tarfile.XHDTYPE, len(records)) + padded(records)
    tar = finish(root, big + ustar_block(b"big", tarfile.REGTYPE, 0))
    got, error, fast = read_new(tar, skip_data=True)
    assert fast == 1 and got[1][4] == 10**23
    assert error == "IntegrityError: archive is truncated (data of member 2 ends early)"
    assert read_new(tar)[1] == "IntegrityError: archive: cannot read the data of 'big': unexpected end of data"


@given(st.binary(min_size=512, max_size=512).map(lambda b: bytes(x & 0x7F for x in b)))
def test_the_checksum_shortcut_is_the_byte_sum_of_any_ascii_block(block: bytes) -> None:
    assert tarparse._byte_sum(block) == sum(block)
    assert tarparse._byte_sum(b"\x7f" * 512) == 127 * 512  # the largest: Adler-32's modulo never applies
