"""Read-ahead for a streaming read: a thread fetches the next chunks while the caller works on this one.

A whole restore from S3 reads one object from start to end and decompresses, parses and writes what it
reads; without read-ahead the network waits while the caller works and the caller waits while the network
delivers. :class:`ReadAhead` moves the reading (and S3Reader's resumes after a broken body) to one thread
that stays at most ``depth`` chunks ahead, so memory is bounded by ``(depth + 1) x chunk`` bytes. It holds
at most one chunk more than the caller has taken so far (1 before the first read, 2 after it …), so a
caller that reads a header and closes (a key check) does not download megabytes for nothing.

Errors keep their place in the stream: an error the thread meets is raised to the caller after the bytes
read before it, and again by every later read. Nothing here checks content: that stays with the reader
above (:class:`dr.repository.artifacts.VerifiedReader`).
"""

from __future__ import annotations

import io
import threading
from collections import deque
from typing import Any

MiB = 1024 * 1024
#: Bytes the thread asks of the source per read, and chunks it may hold ahead of the caller: 2 MiB ahead.
#: Every MiB ahead costs ~1-2 MiB of peak RSS per volume restored at once (4 on a local restore): 1 MiB
#: x 4 added 20-35 MiB, 256 KiB x 16 ~23 MiB, while halving the time the restore waits for S3
#: (benchmarks/RESULTS.md, "Session 6 — helper s3overlap").
CHUNK = 256 * 1024
DEPTH = 8


class ReadAhead(io.RawIOBase):
    """A raw, read-only stream over ``source`` (a raw stream with ``readinto``), read ahead by a thread.

    The thread owns ``source`` from the first read on and closes it when it stops: at the end of the
    stream, at an error, or after :meth:`close` (which does not wait for a read in progress).
    """

    def __init__(self, source: Any, *, chunk: int = CHUNK, depth: int = DEPTH, name: str = "jdr-readahead") -> None:
        super().__init__()
        if chunk <= 0 or depth <= 0:
            raise ValueError("chunk and depth must be positive")
        self._source = source
        self._chunk = chunk
        self._depth = depth
        self._name = name
        self._cond = threading.Condition()
        self._ready: deque[memoryview] = deque()  # chunks read ahead, in order
        self._end = False  # the thread reached the end of the source (or an error): nothing more comes
        self._error: BaseException | None = None  # raised once _ready is consumed
        self._stop = False  # the caller closed the stream
        self._taken = 0  # chunks the caller has taken: how far ahead the thread may go (ramp-up)
        self._thread: threading.Thread | None = None
        self._current = memoryview(b"")  # what is left of the chunk being consumed

    def readable(self) -> bool:
        return True

    def readall(self) -> bytes:
        # RawIOBase.readall reads 8 KiB at a time: take the chunks whole instead.
        out = bytearray(self._current)
        self._current = memoryview(b"")
        while chunk := self._next_chunk():
            out += chunk
        return bytes(out)

    def readinto(self, b: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed stream")
        view = memoryview(b).cast("B")
        if not len(view):
            return 0
        if not self._current:
            self._current = self._next_chunk()
            if not self._current:
                return 0
        n = min(len(view), len(self._current))
        view[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def _next_chunk(self) -> memoryview:
        """The next chunk (empty at the end); raises the thread's error once the chunks before it are read."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        with self._cond:
            while not self._ready and not self._end:
                self._cond.wait()
            if self._ready:
                chunk = self._ready.popleft()
                self._taken += 1
                self._cond.notify_all()  # room for one more
                return chunk
            if self._error is not None:
                raise self._error
            return memoryview(b"")

    def _run(self) -> None:
        source = self._source
        try:
            while True:
                with self._cond:
                    while len(self._ready) >= min(self._depth, self._taken + 1) and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        return
                buf = bytearray(self._chunk)
                n = source.readinto(buf)
                with self._cond:
                    if not n:
                        return
                    self._ready.append(memoryview(buf)[:n])
                    self._cond.notify_all()
        except BaseException as e:  # handed to the caller, in the stream's order
            with self._cond:
                self._error = e
        finally:
            with self._cond:
                self._end = True
                self._cond.notify_all()
            try:
                source.close()
            except Exception:  # noqa: S110 - the error that matters (if any) is already recorded
                pass

    def close(self) -> None:
        if self.closed:
            return
        with self._cond:
            self._stop = True
            self._ready.clear()
            self._cond.notify_all()
        self._current = memoryview(b"")
        if self._thread is None:
            self._source.close()  # never read: the thread never owned it
        super().close()
