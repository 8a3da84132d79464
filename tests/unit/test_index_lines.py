"""Index lines formatted directly (the writer's fast path, issue 12: per-file CPU) are byte for byte the
lines the JSON encoder makes of ``IndexEntry.to_dict``, and every entry the fast path declines still gets
the encoder's line."""

from __future__ import annotations

import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dr.archive.index import _ENCODER, IndexWriter, _plain_line, read_index
from dr.model import IndexEntry
from dr.util.timefmt import utcnow

_NAMES = st.one_of(
    st.binary(min_size=1, max_size=40),  # anything, not UTF-8 included
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), min_size=1, max_size=40)
    .map(str.encode),  # printable ASCII, with the quotes and backslashes JSON escapes
    st.from_regex(rb"[a-z0-9_./-]{1,60}", fullmatch=True),  # what homes hold
)
_ENTRIES = st.builds(
    IndexEntry, path=_NAMES, type=st.sampled_from(["file", "dir", "symlink", "hardlink"]),
    size=st.integers(0, 2**63), mode=st.integers(0, 0o7777), uid=st.integers(0, 2**32), gid=st.integers(0, 2**32),
    mtime=st.floats(allow_nan=True, allow_infinity=True) | st.integers(0, 2**34).map(lambda ns: ns / 1e9),
    sha256=st.sampled_from(["", "ab" * 32, 'x"y']),
    link=st.sampled_from([b"", b"target", b"a\"b"]))


def _encoded(entry: IndexEntry, frame: int, offset: int) -> bytes:
    doc = entry.to_dict()
    doc["frame"], doc["frame_offset"] = frame, offset
    return _ENCODER.encode(doc).encode() + b"\n"


@settings(max_examples=400, deadline=None)
@given(entry=_ENTRIES, frame=st.integers(0, 2**40), offset=st.integers(0, 2**23))
def test_direct_lines_are_the_encoders_bytes(entry: IndexEntry, frame: int, offset: int) -> None:
    line = _plain_line(entry, frame, offset)
    if line is not None:
        assert line == _encoded(entry, frame, offset)
        assert json.loads(line) == json.loads(_encoded(entry, frame, offset))


def test_plain_and_escaped_entries_read_back() -> None:
    entries = [IndexEntry(path=b"nb/a.ipynb", type="file", size=3, mode=0o644, mtime=1.5, sha256="ab" * 32),
               IndexEntry(path=b'q"uote\\d', type="file", size=1, mtime=2.25, sha256="cd" * 32),
               IndexEntry(path="é".encode(), type="dir", mtime=3.0),
               IndexEntry(path=b"\xff", type="symlink", link=b"t", mtime=4.0)]
    assert _plain_line(entries[0], 0, 0) is not None and _plain_line(entries[1], 0, 0) is None
    out = io.BytesIO()
    w = IndexWriter(out, root="/h", created=utcnow())
    for i, e in enumerate(entries):
        w.add(e, frame=i, frame_offset=7 * i)
    w.close()
    out.seek(0)
    back = list(read_index(out))
    assert back == entries and [(e.frame, e.frame_offset) for e in back] == [(i, 7 * i) for i in range(4)]
