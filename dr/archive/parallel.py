"""Decompressing a multi-frame archive with its frames in parallel, for a full restore.

A seekable archive (docs/FORMAT.md, "Seekable archive") is a sequence of independent zstd frames of a few
MiB each, every one with its content size and checksum. :class:`ParallelZstdSource` reads the compressed
stream in a producer thread, cuts it at frame boundaries (walking the frame and block headers; nothing is
guessed), has a small pool decompress the frames (zstandard releases the GIL while it works), and hands
the decompressed bytes out in order, so the caller's thread only parses tar and writes files. At most
``in_flight`` frames are queued, each at most :data:`MAX_FRAME` bytes decompressed, so memory stays
bounded whatever the volume's size. Volumes restored at once share one budget of queued frames
(:class:`FrameBudget`, one more than the CPUs): four volumes on two CPUs hold about what one holds, not four
times as much. A source with no frame queued may always queue one, so sources never wait on each other.

A frame without a content size, or a larger one (archives written before frames, one frame for the
whole volume), is decompressed in the producer thread one zstd block at a time (a block decompresses to
at most 128 KiB), so memory stays bounded for those too. Every frame's checksum is checked by zstd;
corrupt data raises IntegrityError at the point of the stream where that frame begins, after every byte
before it was handed out, exactly as the sequential :class:`dr.archive.zstdio.ZstdSource` does.
"""

from __future__ import annotations

import io
import os
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

import zstandard

from dr.errors import IntegrityError

MAX_FRAME = 16 << 20  # decompressed bytes of a frame decompressed whole; jdr writes at most ~9 MiB
IN_FLIGHT = 4
_READ = 1 << 20
_PIECE = 1 << 20  # decompressed bytes handed out at a time from a frame streamed block by block
_MAGIC = b"\x28\xb5\x2f\xfd"
_SKIPPABLE_MIN, _SKIPPABLE_MAX = 0x184D2A50, 0x184D2A5F
_DICT_ID_SIZE = (0, 1, 2, 4)
_FCS_SIZE = (0, 2, 4, 8)
_EOF = object()


class FrameBudget:
    """Frames queued (decompressing or decompressed, not yet taken by their reader) across every
    :class:`ParallelZstdSource` of the process, at most ``limit`` — except that a source with none queued
    may always queue one (so one source never waits for another's reader)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, source: ParallelZstdSource) -> bool:
        """Take a slot for ``source`` (False if it was closed while waiting)."""
        with self._cond:
            while not source._stop.is_set():
                if self.used < self.limit or source._queued == 0:
                    self.used += 1
                    source._queued += 1
                    return True
                self._cond.wait(0.05)
            return False

    def release(self, source: ParallelZstdSource, n: int = 1) -> None:
        with self._cond:
            n = min(n, source._queued)
            self.used -= n
            source._queued -= n
            self._cond.notify_all()


BUDGET = FrameBudget((os.cpu_count() or 1) + 1)


class ParallelZstdSource(io.RawIOBase):
    """The decompressed bytes of ``src`` (zstd frames), as a readable raw stream.

    Reading it to its EOF reads ``src`` to its EOF. Raises IntegrityError, naming ``what``, for data that
    is not zstd, is corrupt, empty or truncated. :meth:`close` stops the producer and the pool (always call
    it, or use it as a context manager); ``src`` is not closed.
    """

    piece_size = MAX_FRAME  # a read of this size returns the rest of a frame, without a copy

    def __init__(self, src: BinaryIO, *, what: str, workers: int = 2, in_flight: int = IN_FLIGHT,
                 budget: FrameBudget | None = None) -> None:
        super().__init__()
        self._budget = budget or BUDGET
        self._queued = 0  # frames of this source holding a slot of the budget
        self._src = src
        self._what = what
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="jdr-unzstd")
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, in_flight))
        self._stop = threading.Event()
        self._buf = bytearray()  # compressed bytes read from src, not yet cut into a frame
        self._src_eof = False
        self._out = b""
        self._pos = 0
        self._done = False
        self._local = threading.local()
        self._thread = threading.Thread(target=self._produce, name="jdr-unzstd-read", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes, never more than what is left of the current frame (b"" at the end):
        a slice of the frame, without the two copies of :meth:`io.RawIOBase.read`."""
        if size is None or size < 0:
            return super().read(-1) or b""
        if not self._ready():
            return b""
        out, pos = self._out, self._pos
        n = min(size, len(out) - pos)
        self._pos = pos + n
        return out if n == len(out) else out[pos:pos + n]

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._ready():
            return 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = memoryview(self._out)[self._pos:self._pos + n]
        self._pos += n
        return n

    def _ready(self) -> bool:
        """Have unread decompressed bytes in ``_out``; False at the end of the stream."""
        while self._pos == len(self._out):
            if self._done:
                return False
            item = self._queue.get()
            if item is _EOF:
                self._done = True
                return False
            if isinstance(item, BaseException):
                self._done = True
                raise item
            assert isinstance(item, Future)
            self._budget.release(self)
            self._out, self._pos = item.result(), 0
        return True

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            while self._thread.is_alive():  # unblock a producer waiting for room in the queue
                try:
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._budget.release(self, self._queued)
        super().close()

    # --- the producer thread ------------------------------------------------------------------------

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            frames = 0
            while not self._stop.is_set():
                if not self._fill(4):
                    if self._buf:
                        raise IntegrityError(f"{self._what} is truncated: the zstd stream ends inside a frame")
                    if frames == 0:
                        raise IntegrityError(f"{self._what} is empty (no zstd frame)")
                    break
                frames += 1
                magic = int.from_bytes(self._buf[:4], "little")
                if _SKIPPABLE_MIN <= magic <= _SKIPPABLE_MAX:
                    self._skip_frame()
                elif bytes(self._buf[:4]) != _MAGIC:
                    raise IntegrityError(f"{self._what} is not zstd data (bad magic in frame {frames})")
                else:
                    self._frame(frames)
            self._put(_EOF)
        except BaseException as e:  # handed to the reader, which raises it where the stream got to
            self._put(e)

    def _fill(self, n: int) -> bool:
        """Have at least ``n`` compressed bytes buffered; False if ``src`` ends before."""
        while len(self._buf) < n and not self._src_eof:
            data = self._src.read(max(_READ, n - len(self._buf)))
            if not data:
                self._src_eof = True
            self._buf += data
        return len(self._buf) >= n

    def _need(self, n: int) -> None:
        if not self._fill(n):
            raise IntegrityError(f"{self._what} is truncated: the zstd stream ends inside a frame")

    def _skip_frame(self) -> None:
        self._need(8)
        size = 8 + int.from_bytes(self._buf[4:8], "little")
        while size:
            self._need(1)
            n = min(size, len(self._buf))
            del self._buf[:n]
            size -= n

    def _frame(self, number: int) -> None:
        self._need(5)
        fhd = self._buf[4]
        fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
        checksum = 4 if (fhd >> 2) & 1 else 0
        fcs_size = 1 if (single and fcs_flag == 0) else _FCS_SIZE[fcs_flag]
        head = 5 + (0 if single else 1) + _DICT_ID_SIZE[dict_flag] + fcs_size
        self._need(head)
        content = None
        if fcs_flag or single:
            raw = int.from_bytes(self._buf[head - fcs_size:head], "little")
            content = raw + 256 if fcs_size == 2 else raw
        if content is None or content > MAX_FRAME:
            self._stream_frame(head, checksum)
            return
        end = head
        while True:  # walk the blocks to the frame's end
            self._need(end + 3)
            value = int.from_bytes(self._buf[end:end + 3], "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise IntegrityError(f"{self._what} is corrupt (reserved zstd block type in frame {number})")
            end += 3 + (1 if kind == 1 else size)
            if end > MAX_FRAME + (1 << 20):
                raise IntegrityError(f"{self._what} is corrupt: frame {number} is larger than its content")
            if last:
                break
        end += checksum
        self._need(end)
        with memoryview(self._buf) as view:  # one copy, not two (slicing a bytearray copies too)
            frame = bytes(view[:end])
        del self._buf[:end]
        if not self._budget.acquire(self):
            return
        if not self._put(self._pool.submit(self._decompress, frame, content)):
            self._budget.release(self)

    def _decompress(self, frame: bytes, content: int) -> bytes:
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:  # a decompressor is not thread-safe: one per worker
            dctx = self._local.dctx = zstandard.ZstdDecompressor()
        try:
            out: bytes = dctx.decompress(frame, max_output_size=content)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{self._what} is corrupt: {e}") from e
        if len(out) != content:
            raise IntegrityError(f"{self._what} is corrupt: a frame decompresses to {len(out)} bytes, "
                                 f"its header says {content}")
        return out

    def _stream_frame(self, head: int, checksum: int) -> None:
        """Decompress a large frame here, block by block, handing out about a MiB at a time."""
        dobj = zstandard.ZstdDecompressor().decompressobj()
        pending = bytearray()

        def feed(n: int) -> None:
            self._need(n)
            piece = bytes(self._buf[:n])
            del self._buf[:n]
            try:
                pending.extend(dobj.decompress(piece))
            except zstandard.ZstdError as e:
                raise IntegrityError(f"{self._what} is corrupt: {e}") from e

        feed(head)
        while True:
            self._need(3)
            value = int.from_bytes(self._buf[:3], "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise IntegrityError(f"{self._what} is corrupt (reserved zstd block type)")
            feed(3 + (1 if kind == 1 else size) + (checksum if last else 0))
            if len(pending) >= _PIECE or last:
                done: Future[bytes] = Future()
                done.set_result(bytes(pending))
                pending.clear()
                if not self._put(done):
                    return
            if last:
                break
        if not dobj.eof:
            raise IntegrityError(f"{self._what} is corrupt: a zstd frame does not end where its blocks do")
