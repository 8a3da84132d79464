"""Decompression of archive and index streams that notices truncation.

``zstandard``'s stream reader returns a clean EOF when its input stops in the middle of a frame, so a cut
off archive would look like a short one. :class:`ZstdSource` follows the frame structure of the compressed
bytes as they pass (headers and block sizes only, nothing is buffered) and raises IntegrityError at EOF
unless the input ended exactly at a frame boundary. Content corruption is caught by zstd itself: every
frame we write carries a checksum.
"""

from __future__ import annotations

import io
from typing import IO, BinaryIO, cast

import zstandard

from dr.errors import IntegrityError

_MAGIC = 0xFD2FB528
_SKIPPABLE_MIN, _SKIPPABLE_MAX = 0x184D2A50, 0x184D2A5F
_DICT_ID_SIZE = (0, 1, 2, 4)


class _FrameTracker:
    """Passes ``src.read`` through, tracking where each zstd frame (and skippable frame) ends."""

    def __init__(self, src: BinaryIO, what: str) -> None:
        self._src = src
        self._what = what
        self._state = "magic"  # which header we are collecting: magic, fhd, fhrest, block, skipsize
        self._need = 4  # bytes of that header
        self._head = b""
        self._skip = 0  # payload bytes to pass before the next header
        self._after_skip = "magic"
        self._checksum = False
        self.frames = 0
        self.eof = False

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(size if size and size > 0 else 1 << 17)
        if data:
            self._feed(memoryview(data))
        else:
            self._at_eof()
        return data

    def _at_eof(self) -> None:
        self.eof = True
        if self.frames == 0 and self._state == "magic" and not self._head:
            raise IntegrityError(f"{self._what} is empty (no zstd frame)")
        if self._state != "magic" or self._head or self._skip:
            raise IntegrityError(f"{self._what} is truncated: the zstd stream ends inside a frame")

    def _feed(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                n = min(self._skip, end - pos)
                self._skip -= n
                pos += n
                if not self._skip:
                    self._enter(self._after_skip)
                continue
            take = min(self._need - len(self._head), end - pos)
            self._head += bytes(data[pos:pos + take])
            pos += take
            if len(self._head) == self._need:
                head, self._head = self._head, b""
                self._parse(head)

    def _enter(self, state: str, need: int = 0) -> None:
        self._state = state
        self._need = need or {"magic": 4, "fhd": 1, "block": 3, "skipsize": 4}[state]

    def _skip_then(self, count: int, state: str) -> None:
        self._skip = count
        self._after_skip = state
        if not count:
            self._enter(state)

    def _parse(self, head: bytes) -> None:
        value = int.from_bytes(head, "little")
        if self._state == "magic":
            self.frames += 1
            if value == _MAGIC:
                self._enter("fhd")
            elif _SKIPPABLE_MIN <= value <= _SKIPPABLE_MAX:
                self._enter("skipsize")
            else:
                raise IntegrityError(f"{self._what} is not zstd data (bad magic in frame {self.frames})")
        elif self._state == "skipsize":
            self._skip_then(value, "magic")
        elif self._state == "fhd":
            fcs_flag, single, dict_flag = value >> 6, (value >> 5) & 1, value & 3
            self._checksum = bool((value >> 2) & 1)
            rest = (0 if single else 1) + _DICT_ID_SIZE[dict_flag] + ((1 if single else 0), 2, 4, 8)[fcs_flag]
            self._skip_then(rest, "block")
        elif self._state == "block":
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise IntegrityError(f"{self._what} is corrupt (reserved zstd block type)")
            payload = 1 if kind == 1 else size
            if not last:
                self._skip_then(payload, "block")
            else:
                self._skip_then(payload + (4 if self._checksum else 0), "magic")


class ZstdSource(io.RawIOBase):
    """The decompressed bytes of ``src`` (one or more zstd frames), as a readable raw stream.

    Raises IntegrityError, naming ``what``, when the data is not zstd, is corrupt (a frame checksum or a
    decoding error), is empty, or is truncated.
    """

    def __init__(self, src: BinaryIO, *, what: str) -> None:
        super().__init__()
        self._what = what
        self._tracker = _FrameTracker(src, what)
        # zstandard only ever calls read() on its source; its stub asks for a whole IO[bytes].
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], self._tracker), read_size=1 << 17, read_across_frames=True, closefd=False)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            n: int = self._reader.readinto(buffer)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{self._what} is corrupt: {e}") from e
        return n

    def drain(self) -> None:
        """Read the rest of the decompressed stream and then ``src`` through to its EOF.

        Raises IntegrityError if decompressed bytes remain that are not zero (data after the end of a
        tar archive), or for any error of :meth:`readinto`.
        """
        buf = bytearray(1 << 20)
        while n := self.readinto(buf):
            if buf[:n].count(0) != n:
                raise IntegrityError(f"{self._what} has data after its end-of-archive marker")
        while not self._tracker.eof:
            self._tracker.read(1 << 20)
