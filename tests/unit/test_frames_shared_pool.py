"""One compression pool shared by the archives written at once (issue 12, a local backup's
``parallel_volumes``): the bytes stay those of the single-threaded writer, an archive left alone gets every
worker (the last, largest home is not compressed on one core), the frames in flight are bounded across the
archives, and archives waiting for the pool cannot wait for each other, even when one of them fails.

Deterministic: compression is gated by events and barriers (a barrier that needs two workers on one
archive's frames breaks after its timeout if only one worker takes them), never by sleeps.
"""

from __future__ import annotations

import io
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zstandard

from dr.archive.frames import CompressionPool, FramedOut
from dr.archive.index import read_index
from dr.archive.writer import write_archive
from dr.model import IndexEntry

FRAME = 32 * 1024


def _home(home: Path, seed: int, files: int, big: int) -> Path:
    rng = random.Random(seed)
    (home / "nb").mkdir(parents=True)
    for i in range(files):
        (home / "nb" / f"n{i:03}.ipynb").write_bytes(rng.randbytes(rng.randrange(1, 6000)))
    (home / "big.bin").write_bytes(rng.randbytes(big // 2) + bytes(big // 2))  # spans many frames
    os.link(home / "nb" / "n001.ipynb", home / "link")
    os.symlink("nb/n002.ipynb", home / "sym")
    return home


def _archive(home: Path, **kw: object) -> tuple[bytes, list[tuple[IndexEntry, int, int]]]:
    out, idx = io.BytesIO(), io.BytesIO()
    write_archive(home, out, idx, frame_size=FRAME, **kw)  # type: ignore[arg-type]
    idx.seek(0)
    return out.getvalue(), [(e, e.frame, e.frame_offset) for e in read_index(idx)]


def test_archives_sharing_a_pool_are_byte_for_byte_those_of_the_single_threaded_writer(tmp_path: Path) -> None:
    homes = [_home(tmp_path / f"h{i}", seed=i, files=40 + 30 * i, big=200_000 * (i + 1)) for i in range(3)]
    alone = [_archive(h, threads=0) for h in homes]
    with CompressionPool(2) as pool, ThreadPoolExecutor(3) as volumes:
        shared = list(volumes.map(lambda h: _archive(h, pool=pool), homes))
    assert shared == alone
    assert all(len({f for _, f, _ in entries}) > 3 for _, entries in alone)  # many frames each


class _Watched(CompressionPool):
    """Counts the frames holding a slot (taken, not yet given back) and remembers the most at once."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.changed = threading.Condition()
        self.held = self.most = 0

    def _acquire(self, blocking: bool) -> bool:
        got = super()._acquire(blocking)
        if got:
            with self.changed:
                self.held += 1
                self.most = max(self.most, self.held)
                self.changed.notify_all()
        return got

    def _release(self) -> None:
        with self.changed:
            self.held -= 1
        super()._release()


def _entries(framed: FramedOut, count: int, fill: int, tag: int) -> bytes:
    """Write ``count`` entries of ``fill`` bytes each (every one fills a frame); return the tar bytes."""
    written = bytearray()
    for i in range(count):
        framed.mark()
        data = bytes([tag, i % 256]) * (fill // 2)
        framed.write(data)
        written += data
    framed.finish()
    return bytes(written)


def _plain(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()


def test_an_archive_left_alone_gets_every_worker(tmp_path: Path) -> None:
    """The first archive finishes; then two workers compress frames of the second at the same time (with
    one worker per archive, as before the shared pool, the barrier breaks and the test fails)."""
    both_workers = threading.Barrier(2, timeout=30)
    first_done = threading.Event()
    met: list[bool] = []

    class Second(FramedOut):
        def _compress(self, data: bytearray) -> bytes:
            if first_done.is_set() and not met:
                both_workers.wait()  # two of this archive's frames compressing at once
                met.append(True)
            return super()._compress(data)

    with _Watched(2) as pool:
        out1, out2 = io.BytesIO(), io.BytesIO()
        first = FramedOut(out1, lambda *_: None, frame_size=512, pool=pool)
        try:
            one = _entries(first, 5, 600, 1)
        finally:
            first.close()
        first_done.set()
        second = Second(out2, lambda *_: None, frame_size=512, pool=pool)
        try:
            two = _entries(second, 12, 600, 2)
        finally:
            second.close()
    assert met == [True, True]  # both workers passed the barrier together
    assert _plain(out1.getvalue()) == one and _plain(out2.getvalue()) == two
    assert pool.held == 0


@pytest.mark.parametrize("in_flight", [1, 2, 4])
def test_frames_in_flight_are_bounded_across_the_archives_sharing_the_pool(in_flight: int) -> None:
    """Three archives, written at once by three threads into a pool of two workers: never more frames
    hold memory than the pool allows, whatever each archive's own bound; all three come out whole."""
    gate = threading.Event()

    class Gated(FramedOut):
        def _compress(self, data: bytearray) -> bytes:
            gate.wait(timeout=30)
            return super()._compress(data)

    pool = _Watched(2, in_flight=in_flight)
    outs = [io.BytesIO() for _ in range(3)]
    started = threading.Barrier(4, timeout=30)

    def one(i: int) -> bytes:
        framed = Gated(outs[i], lambda *_: None, frame_size=512, pool=pool, in_flight=4)
        try:
            started.wait()
            return _entries(framed, 10, 600, i)
        finally:
            framed.close()

    with pool, ThreadPoolExecutor(3) as volumes:
        results = [volumes.submit(one, i) for i in range(3)]
        started.wait()
        # Let the pool fill up to its bound before any frame finishes: the bound must hold the writers.
        with pool.changed:
            assert pool.changed.wait_for(lambda: pool.held >= in_flight, timeout=30)
        gate.set()
        written = [r.result(timeout=60) for r in results]
    assert pool.most == in_flight
    assert pool.held == 0
    assert [_plain(o.getvalue()) for o in outs] == written


class _Broken:
    def __init__(self, after: int) -> None:
        self.left = after

    def write(self, data: bytes) -> int:
        if not self.left:
            raise OSError(28, "No space left on device")
        self.left -= 1
        return len(data)


def test_an_archive_that_fails_gives_back_its_slots() -> None:
    """A sink failing mid-archive: the writer's close gives the pool back every slot its frames held, so
    the next archive sharing a pool of one slot is written whole."""
    with _Watched(2, in_flight=2) as pool:
        failed = FramedOut(_Broken(after=1), lambda *_: None, frame_size=512, pool=pool)
        with pytest.raises(OSError):
            try:
                _entries(failed, 10, 600, 1)
            finally:
                failed.close()
        assert pool.held == 0
        out = io.BytesIO()
        after = FramedOut(out, lambda *_: None, frame_size=512, pool=pool)
        try:
            data = _entries(after, 6, 600, 2)
        finally:
            after.close()
    assert _plain(out.getvalue()) == data


def test_index_offsets_are_those_of_the_single_threaded_writer_with_a_pool_of_one_slot(tmp_path: Path) -> None:
    """The smallest bound (one frame in flight in all): each archive waits for its own frames only, two
    archives at once still finish, and every index entry records the same frame as without a pool."""
    homes = [_home(tmp_path / f"h{i}", seed=10 + i, files=30, big=150_000) for i in range(2)]
    alone = [_archive(h, threads=0) for h in homes]
    with CompressionPool(1, in_flight=1) as pool, ThreadPoolExecutor(2) as volumes:
        assert list(volumes.map(lambda h: _archive(h, pool=pool), homes)) == alone
