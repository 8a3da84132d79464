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
archive order with the offsets that go in their :attr:`~dr.model.IndexEntry.frame` and ``frame_offset``.

Archives written at once (a local backup's ``parallel_volumes``) can share one :class:`CompressionPool`:
its workers take frames from every archive in the order they were cut, so a volume that finishes frees its
workers for the others and the last, largest home is not left with one core's worth of compression; the
pool also bounds the frames in flight across all of them. Which thread compresses a frame never changes
its bytes (one compressor per worker, all with the same parameters).
"""

from __future__ import annotations

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


class CompressionPool:
    """Compression workers shared by the archives written at once, and the bound on their frames in flight.

    ``workers`` threads (at least one) compress frames in the order they are submitted, whichever archive
    cut them. At most ``in_flight`` frames (default: one per worker) are compressing or compressed and
    awaiting their write at a time, across all the archives: a :class:`FramedOut` takes a slot with
    :meth:`_acquire` before it submits a frame and gives it back once that frame is written to its sink
    (or dropped), and writes a finished frame as soon as it notices one (:meth:`FramedOut.mark`), so a
    slot is not held by a frame that is done. Memory is then what it was with one worker per archive and
    two archives at once (each frame up to 8 MiB of tar plus its output), while one archive left alone
    still gets every worker. Use as a context manager, or call :meth:`close`, which waits for the workers
    to stop.
    """

    def __init__(self, workers: int, *, in_flight: int | None = None) -> None:
        self.workers = max(1, workers)
        self.in_flight = max(1, in_flight if in_flight is not None else self.workers)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="jdr-zstd")
        self._slots = threading.BoundedSemaphore(self.in_flight)
        self._local = threading.local()

    def submit(self, fn: Callable[[bytearray], bytes], data: bytearray) -> Future[bytes]:
        return self._executor.submit(fn, data)

    def compressor(self, level: int) -> zstandard.ZstdCompressor:
        """This worker thread's compressor for ``level`` (a compressor is not thread-safe: one per
        worker, kept for the pool's life, since making one costs more than a small frame)."""
        cctxs: dict[int, zstandard.ZstdCompressor] | None = getattr(self._local, "cctxs", None)
        if cctxs is None:
            cctxs = self._local.cctxs = {}
        cctx = cctxs.get(level)
        if cctx is None:
            cctx = cctxs[level] = zstandard.ZstdCompressor(level=level, write_checksum=True,
                                                           write_content_size=True)
        return cctx

    def _acquire(self, blocking: bool) -> bool:
        return self._slots.acquire(blocking=blocking)

    def _release(self) -> None:
        self._slots.release()

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> CompressionPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class FramedOut:
    """Takes the tar byte stream with :meth:`write`; :meth:`mark` before each entry's header.

    ``emit(entry, frame, frame_offset)`` receives the index entries given to :meth:`entry`, in the same
    order, each once its frame's compressed offset is known, with where it lies (the entry's own ``frame``
    and ``frame_offset`` are left as they are: no copy is made per entry). Call :meth:`finish` once at
    the end; :meth:`close` always (it stops its own workers, or gives back its slots of a shared
    ``pool``; after a failure nothing more is written). Raises whatever the sink raises.

    With ``pool``, frames are compressed by that shared :class:`CompressionPool` (``threads`` is then
    ignored) and count against its bound as well as this archive's own ``in_flight``; else by
    ``threads`` workers of its own (0: in the caller's thread). The bytes written are the same either way.
    """

    def __init__(self, sink: Writable, emit: Callable[[IndexEntry, int, int], None], *, level: int = 3,
                 threads: int = 0, frame_size: int = FRAME_SIZE, in_flight: int | None = None,
                 pool: CompressionPool | None = None) -> None:
        self._sink = sink
        self._emit = emit
        self._level = level
        self._frame_size = frame_size
        self._shared = pool is not None
        workers = pool.workers if pool is not None else worker_count(threads)
        # Frames waiting count against memory (their input, then their output): one per worker keeps
        # every worker busy while this thread fills the next; more only holds memory.
        self._in_flight = max(1, in_flight if in_flight is not None else min(IN_FLIGHT, workers + 1))
        if pool is None and workers > 0:  # workers of its own, bounded by this archive's in_flight alone
            pool = CompressionPool(workers, in_flight=self._in_flight)
        self._pool = pool
        self._slots = 0  # slots of the pool this archive holds: one per frame queued
        self._closed = False
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
        elif self._shared and self._queue and self._queue[0].done():
            self._write_oldest()  # frees its slot of the shared pool now, not at this archive's next cut
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
        if self._held[0][0] < self._written:  # else nothing can be released before the next frame's write
            self._release()

    def finish(self) -> None:
        """Compress and write the last frame and everything still in flight; emit the held entries."""
        if self._buf:
            self._cut()
        while self._queue:
            self._write_oldest()
        self._release()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for f in self._queue:
            f.cancel()
        if self._pool is not None and not self._shared:
            self._pool.close()
        elif self._pool is not None:
            for f in self._queue:  # a frame a worker already took is finished before its slot is freed
                if not f.cancelled():
                    f.exception()
            for _ in range(self._slots):
                self._pool._release()
            self._slots = 0
        self._queue.clear()

    def _cut(self) -> None:
        data, self._buf = self._buf, bytearray()  # handed over, not copied
        self._frame += 1
        if self._pool is None:
            done: Future[bytes] = Future()
            done.set_result(self._compress(data))
            self._queue.append(done)
        else:
            self._take_slot(self._pool)
            self._queue.append(self._pool.submit(self._compress, data))
        while len(self._queue) >= self._in_flight or (self._queue and self._queue[0].done()):
            self._write_oldest()

    def _take_slot(self, pool: CompressionPool) -> None:
        # Never wait for a slot while holding frames of our own: writing our oldest frame frees one, and
        # an archive that waits holds none, so archives sharing a pool cannot wait for each other.
        while not pool._acquire(blocking=not self._queue):
            self._write_oldest()
        self._slots += 1

    def _compress(self, data: bytearray) -> bytes:
        cctx: zstandard.ZstdCompressor | None
        if self._pool is not None:
            cctx = self._pool.compressor(self._level)
        else:  # compressing in the caller's thread
            cctx = getattr(self._local, "cctx", None)
            if cctx is None:
                cctx = self._local.cctx = zstandard.ZstdCompressor(level=self._level, write_checksum=True,
                                                                    write_content_size=True)
        out: bytes = cctx.compress(data)
        return out

    def _write_oldest(self) -> None:
        frame = self._queue.popleft().result()
        self._starts[self._written] = self._compressed
        self._sink.write(frame)
        if self._pool is not None:
            self._slots -= 1
            self._pool._release()  # the frame's memory goes with this write
        self._written += 1
        self._compressed += len(frame)
        self._release()

    def _release(self) -> None:
        while self._held and self._held[0][0] < self._written:
            number, offset, entry = self._held.popleft()
            self._emit(entry, self._starts[number], offset)
        first = min(self._held[0][0] if self._held else self._written, self._marked)
        for number in [n for n in self._starts if n < first]:
            del self._starts[number]
