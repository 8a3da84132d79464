"""The tar stream of a volume archive, cut into independent zstd frames compressed in parallel.

docs/FORMAT.md, "Seekable archive": the archive is a sequence of zstd frames, each a complete frame with
its content size and checksum, so that ``zstd -d`` reads their concatenation as one stream and a reader
can start decompressing at any frame. A frame is cut before an entry's header once it holds
``frame_size`` bytes of tar, so frames start at entry boundaries; inside an entry larger than that, at
twice ``frame_size`` (the entry then spans frames, and a reader continues into the following ones).

Frames are compressed by a small thread pool (zstandard releases the GIL while it compresses) while the
caller's thread goes on reading and hashing files; at most ``in_flight`` frames wait at a time, and they
are written to the sink in order by the caller's thread, so memory stays bounded whatever the volume size.
Index entries are held back until the compressed offset of their frame is known, then passed on in
archive order with :attr:`~dr.model.IndexEntry.frame` and ``frame_offset`` set.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import zstandard

from dr.archive import Writable
from dr.model import IndexEntry

FRAME_SIZE = 4 << 20
IN_FLIGHT = 4  # at most; by default one more than the workers (each busy, one done awaiting its write)


def worker_count(threads: int) -> int:
    """Compression workers for the ``threads`` argument of :func:`dr.archive.writer.write_archive`:
    0 compresses in the caller's thread, -1 uses one worker per CPU, n > 0 uses n workers."""
    if threads < 0:
        return os.cpu_count() or 1
    return threads


class FramedOut:
    """Takes the tar byte stream with :meth:`write`; :meth:`mark` before each entry's header.

    ``emit(entry)`` receives the index entries given to :meth:`entry`, in the same order, each once its
    frame's compressed offset is known. Call :meth:`finish` once at the end; :meth:`close` always (it
    stops the workers; after a failure nothing more is written). Raises whatever the sink raises.
    """

    def __init__(self, sink: Writable, emit: Callable[[IndexEntry], None], *, level: int = 3,
                 threads: int = 0, frame_size: int = FRAME_SIZE, in_flight: int | None = None) -> None:
        self._sink = sink
        self._emit = emit
        self._level = level
        self._frame_size = frame_size
        workers = worker_count(threads)
        # Frames waiting count against memory (their input, then their output): one per worker keeps
        # every worker busy while this thread fills the next; more only holds memory.
        self._in_flight = max(1, in_flight if in_flight is not None else min(IN_FLIGHT, workers + 1))
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="jdr-zstd") if workers > 0 else None
        self._local = threading.local()
        self._buf = bytearray()
        self._frame = 0  # number of the frame being filled
        self._offset = 0  # tar bytes written in all
        self._queue: deque[Future[bytes]] = deque()  # compressing frames, in order
        self._written = 0  # frames written to the sink
        self._compressed = 0  # compressed bytes written to the sink
        self._starts: dict[int, int] = {}  # frame number -> compressed offset, for entries still held
        self._held: deque[tuple[int, int, IndexEntry]] = deque()  # (frame, offset in frame, entry)
        self._marked = 0  # frame of the last mark, whose entry may still come

    @property
    def offset(self) -> int:
        """Tar bytes written so far."""
        return self._offset

    def mark(self) -> tuple[int, int]:
        """An entry's header comes next: cut a frame if the current one is full. Returns where the header
        will be: (frame number, offset in the frame's decompressed bytes); pass it to :meth:`entry`."""
        if len(self._buf) >= self._frame_size:
            self._cut()
        self._marked = self._frame
        return self._frame, len(self._buf)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data
        self._offset += len(data)
        if len(self._buf) >= 2 * self._frame_size:
            self._cut()  # inside a large entry: bound the memory, the entry spans frames

    def entry(self, where: tuple[int, int], entry: IndexEntry) -> None:
        """Pass ``entry``, whose header was written at ``where`` (from :meth:`mark`), on to ``emit``."""
        self._held.append((where[0], where[1], entry))
        self._release()

    def finish(self) -> None:
        """Compress and write the last frame and everything still in flight; emit the held entries."""
        if self._buf:
            self._cut()
        while self._queue:
            self._write_oldest()
        self._release()

    def close(self) -> None:
        if self._pool is not None:
            for f in self._queue:
                f.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
        self._queue.clear()

    def _cut(self) -> None:
        data, self._buf = self._buf, bytearray()  # handed over, not copied
        self._frame += 1
        if self._pool is None:
            done: Future[bytes] = Future()
            done.set_result(self._compress(data))
            self._queue.append(done)
        else:
            self._queue.append(self._pool.submit(self._compress, data))
        while len(self._queue) >= self._in_flight or (self._queue and self._queue[0].done()):
            self._write_oldest()

    def _compress(self, data: bytearray) -> bytes:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:  # a compressor is not thread-safe: one per worker
            cctx = self._local.cctx = zstandard.ZstdCompressor(level=self._level, write_checksum=True,
                                                                write_content_size=True)
        out: bytes = cctx.compress(data)
        return out

    def _write_oldest(self) -> None:
        frame = self._queue.popleft().result()
        self._starts[self._written] = self._compressed
        self._sink.write(frame)
        self._written += 1
        self._compressed += len(frame)
        self._release()

    def _release(self) -> None:
        while self._held and self._held[0][0] < self._written:
            number, offset, entry = self._held.popleft()
            self._emit(dataclasses.replace(entry, frame=self._starts[number], frame_offset=offset))
        first = min(self._held[0][0] if self._held else self._written, self._marked)
        for number in [n for n in self._starts if n < first]:
            del self._starts[number]
