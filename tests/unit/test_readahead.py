"""dr/repository/readahead.py: the bytes come through unchanged and in order whatever the read sizes, an
error of the source reaches the caller after the bytes read before it, and closing stops the thread."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest

from dr.errors import TransientStorageError
from dr.repository.readahead import ReadAhead


class Source(io.RawIOBase):
    """A raw stream over ``data`` that returns at most ``step`` bytes a read and raises ``error`` once
    ``fail_at`` bytes were read; records whether it was closed and by which thread."""

    def __init__(self, data: bytes, step: int, fail_at: int | None = None,
                 error: BaseException | None = None) -> None:
        super().__init__()
        self.data = data
        self.step = step
        self.fail_at = fail_at
        self.error = error
        self.pos = 0
        self.reads = 0
        self.closed_by: str | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        self.reads += 1
        if self.fail_at is not None and self.pos >= self.fail_at:
            assert self.error is not None
            raise self.error
        end = min(self.pos + self.step, len(self.data), len(memoryview(b)) + self.pos)
        if self.fail_at is not None:
            end = min(end, self.fail_at)
        n = end - self.pos
        memoryview(b)[:n] = self.data[self.pos:end]
        self.pos = end
        return n

    def close(self) -> None:
        if self.closed_by is None:
            self.closed_by = threading.current_thread().name
        super().close()


DATA = bytes(range(256)) * 4099  # ~1 MiB, no period aligned with the chunk sizes below


@pytest.mark.parametrize(("chunk", "depth", "step", "read"), [
    (1, 1, 1, 7),
    (4096, 2, 1000, 4096),
    (65536, 8, 65536, 1 << 20),
    (10_000, 3, 3333, 1),
])
def test_bytes_arrive_unchanged_and_in_order(chunk: int, depth: int, step: int, read: int) -> None:
    data = DATA if chunk > 1 else DATA[:20_000]
    src = Source(data, step)
    out = bytearray()
    with io.BufferedReader(ReadAhead(src, chunk=chunk, depth=depth), buffer_size=8192) as r:
        while block := r.read(read):
            out += block
        assert r.read(read) == b""  # and EOF stays EOF
    assert bytes(out) == data


def test_readall_returns_everything() -> None:
    r = ReadAhead(Source(DATA, 5000), chunk=4096, depth=4)
    assert r.read(10) == DATA[:10]
    assert r.readall() == DATA[10:]
    r.close()


def test_an_error_of_the_source_comes_after_the_bytes_before_it_and_stays() -> None:
    error = TransientStorageError("reading 'k' failed at byte 300000")
    src = Source(DATA, 4096, fail_at=300_000, error=error)
    r = ReadAhead(src, chunk=4096, depth=4, name="jdr-test-ra")
    got = bytearray()
    buf = bytearray(10_000)
    with pytest.raises(TransientStorageError) as e:
        while n := r.readinto(buf):
            got += buf[:n]
    assert e.value is error
    assert bytes(got) == DATA[:300_000]
    with pytest.raises(TransientStorageError):
        r.readinto(buf)  # not turned into an EOF
    r.close()
    assert src.closed_by == "jdr-test-ra"  # the thread closed its source when it stopped


def test_close_stops_the_thread_and_closes_the_source() -> None:
    src = Source(DATA, 4096)
    r = ReadAhead(src, chunk=4096, depth=8, name="jdr-test-ra")
    assert len(r.read(100)) == 100
    thread = r._thread
    assert thread is not None
    r.close()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert src.closed_by == "jdr-test-ra"
    # A caller that took one chunk lets the thread read two more, not depth (8): the ramp-up.
    assert src.reads <= 3
    with pytest.raises(ValueError, match="closed"):
        r.read(1)


def test_close_before_any_read_closes_the_source_without_a_thread() -> None:
    src = Source(DATA, 4096)
    r = ReadAhead(src)
    r.close()
    assert r._thread is None
    assert src.closed_by == threading.current_thread().name
