"""A folder as a zip archive, written as it is read: :mod:`zipfile` on a write-only stream (data
descriptors after each member, no seeking), so memory stays bounded by one chunk whatever the size."""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable, Iterator
from typing import IO, Any, cast


class _Sink:
    """A write-only file object handing each write to ``emit``; zipfile asks only write/tell/flush."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self._emit = emit
        self._pos = 0

    def write(self, data: Any) -> int:
        b = bytes(data)
        if b:
            self._emit(b)
            self._pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def seekable(self) -> bool:
        return False


def write_zip(files: Iterator[tuple[str, float, Iterator[bytes]]], emit: Callable[[bytes], None]) -> int:
    """Write a zip of ``files`` — (name inside the zip, mtime, content chunks) — to ``emit`` chunk by
    chunk; returns the number of members. Members are deflated (level 6) and may exceed 4 GiB (zip64)."""
    count = 0
    # zipfile only writes to (and asks tell() of) a stream it cannot seek; its stub wants a whole IO.
    with zipfile.ZipFile(cast(IO[bytes], _Sink(emit)), mode="w", compression=zipfile.ZIP_DEFLATED,
                         compresslevel=6, allowZip64=True) as zf:
        for name, mtime, chunks in files:
            info = zipfile.ZipInfo(name, date_time=_zip_time(mtime))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, mode="w", force_zip64=True) as out:
                for chunk in chunks:
                    out.write(chunk)
            count += 1
    return count


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    t = time.gmtime(max(mtime, 315532800))  # zip cannot hold times before 1980
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
