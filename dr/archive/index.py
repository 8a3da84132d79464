"""The file index of a volume archive: zstd-compressed JSON lines (docs/FORMAT.md, "File index").

The first line is a header ``{"format": "jdr-index", "version": 1, "root": ..., "created": ...}``; every
further line is one :meth:`dr.model.IndexEntry.to_dict`, in archive order. ``root`` is the path the volume
was read from (informational); the entry with path ``.`` describes the root directory itself.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any, BinaryIO, cast

import zstandard

from dr.archive import Writable
from dr.archive.zstdio import ZstdSource
from dr.errors import IntegrityError
from dr.model import IndexEntry
from dr.util.timefmt import iso

INDEX_FORMAT = "jdr-index"
INDEX_VERSION = 1

# One encoder for every line: ``json.dumps`` with non-default options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_BATCH = 1 << 16  # lines are handed to the compressor in batches of about this many bytes


class IndexWriter:
    """Streams index lines through a zstd compressor into a sink. Call :meth:`close` to end the frame."""

    def __init__(self, sink: Writable, *, root: str, created: datetime, level: int = 3) -> None:
        cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
        # zstandard only ever calls write() on its sink; its stub asks for a whole IO[bytes].
        self._out = cctx.stream_writer(cast(IO[bytes], sink), closefd=False)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._line({"format": INDEX_FORMAT, "version": INDEX_VERSION, "root": root, "created": iso(created)})

    def add(self, entry: IndexEntry, frame: int = -1, frame_offset: int = -1) -> None:
        """Add ``entry``'s line; ``frame`` and ``frame_offset``, when given, replace the entry's own."""
        line = _plain_line(entry, frame, frame_offset) if frame >= 0 else None
        if line is not None:
            self._append(line)
            return
        doc = entry.to_dict()
        if frame >= 0:
            doc["frame"], doc["frame_offset"] = frame, frame_offset  # last, as IndexEntry.to_dict puts them
        self._line(doc)

    def close(self) -> None:
        """Finish the compressed stream; the sink itself is left open."""
        self._flush()
        self._out.flush(zstandard.FLUSH_FRAME)

    def _line(self, doc: dict[str, Any]) -> None:
        self._append(_ENCODER.encode(doc).encode("utf-8") + b"\n")

    def _append(self, line: bytes) -> None:
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        # One compressor call per batch instead of per line: the same bytes, far fewer calls.
        if self._pending:
            self._out.write(b"".join(self._pending))
            self._pending.clear()
            self._pending_bytes = 0


#: Paths JSON writes as they are: printable ASCII but ``"`` and ``\\``.
_PLAIN = re.compile(rb'[ !#-\[\]-~]*')
_TYPES = frozenset(("file", "dir", "symlink", "hardlink"))
_LINE = b'{"path":"%s","type":"%s","size":%d,"mode":%d,"uid":%d,"gid":%d,"mtime":%s'


def _plain_line(entry: IndexEntry, frame: int, frame_offset: int) -> bytes | None:
    """The index line of ``entry`` at ``frame``/``frame_offset`` formatted directly, the same bytes as
    ``_ENCODER`` makes of its :meth:`~dr.model.IndexEntry.to_dict` (tests/unit/test_index_lines.py);
    None when the entry needs the encoder (a path or link that JSON escapes, or that is not UTF-8)."""
    sha = entry.sha256
    if (entry.link or not _PLAIN.fullmatch(entry.path) or entry.type not in _TYPES
            or type(entry.mtime) is not float or entry.mtime - entry.mtime != 0.0  # NaN and infinities
            or (sha and not (sha.isascii() and sha.isalnum()))):
        return None
    line = _LINE % (entry.path, entry.type.encode(), entry.size, entry.mode, entry.uid, entry.gid,
                    float.__repr__(entry.mtime).encode())
    if sha:
        line += b',"sha256":"%s"' % sha.encode()
    return line + b',"frame":%d,"frame_offset":%d}\n' % (frame, frame_offset)


def read_index(src: BinaryIO) -> Iterator[IndexEntry]:
    """Yield the entries of the index whose zstd-compressed bytes ``src`` yields, reading it to EOF.

    Raises IntegrityError when the bytes are not a jdr index: not zstd, a missing or foreign header, a
    version newer than this jdr, or a line that is not a valid entry (the message names the line number).
    """
    text = io.BufferedReader(ZstdSource(src, what="index"), buffer_size=1 << 16)
    try:
        first = text.readline()
        if not first:
            raise IntegrityError("index is empty (no header line)")
        header = _json(first, 1)
        if header.get("format") != INDEX_FORMAT:
            raise IntegrityError(f"not a jdr index (format={header.get('format')!r})")
        version = header.get("version")
        if not isinstance(version, int) or version > INDEX_VERSION:
            raise IntegrityError(f"index version {version!r} is not supported by this jdr "
                                 f"(up to {INDEX_VERSION}); upgrade jdr")
        for number, line in enumerate(text, start=2):
            doc = _json(line, number)
            try:
                entry = IndexEntry.from_dict(doc)
            except (KeyError, ValueError, TypeError) as e:
                raise IntegrityError(f"index line {number}: not a valid entry ({e!r})") from e
            if entry.type not in ("file", "dir", "symlink", "hardlink"):
                raise IntegrityError(f"index line {number}: unknown entry type {entry.type!r}")
            yield entry
    except zstandard.ZstdError as e:
        raise IntegrityError(f"index is not valid zstd data: {e}") from e


def load_index(src: BinaryIO) -> dict[bytes, IndexEntry]:
    """The whole index as a mapping from path to entry (see :func:`read_index` for errors).

    Raises IntegrityError if a path occurs twice.
    """
    entries: dict[bytes, IndexEntry] = {}
    for entry in read_index(src):
        if entry.path in entries:
            raise IntegrityError(f"index lists {entry.name!r} twice")
        entries[entry.path] = entry
    return entries


def _json(line: bytes, number: int) -> dict[str, Any]:
    try:
        doc = json.loads(line)
    except ValueError as e:
        raise IntegrityError(f"index line {number} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise IntegrityError(f"index line {number} is not a JSON object")
    return doc
