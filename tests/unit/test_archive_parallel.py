"""The parallel frame decompression of a full restore (dr/archive/parallel.py) reads exactly what the
sequential reader reads: the same members and bytes, and the same failure at the same place for corrupt,
truncated or odd streams."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dr.archive import parallel
from dr.archive.index import read_index
from dr.archive.parallel import ParallelZstdSource
from dr.archive.reader import extract_archive
from dr.archive.tarstream import TarStream
from dr.archive.writer import write_archive
from dr.errors import IntegrityError
from dr.model import IndexEntry

FRAME = 8192


def _read(data: bytes, *, par: bool, workers: int = 2, in_flight: int = 2) -> tuple[list[tuple[str, bytes]],
                                                                                    str | None]:
    """The members read before the end or the error, and the error's class (None when read through)."""
    got: list[tuple[str, bytes]] = []
    src = io.BytesIO(data)
    source = ParallelZstdSource(src, what="archive", workers=workers, in_flight=in_flight) if par else None
    try:
        stream = TarStream(source, compressed=False) if source is not None else TarStream(src)  # type: ignore[arg-type]
        for m in stream:
            got.append((m.name, b"".join(stream.chunks(m)) if m.isreg() else m.linkname.encode()))
    except IntegrityError as e:
        return got, type(e).__name__
    finally:
        if source is not None:
            source.close()
    assert src.tell() == len(data)  # read through to the EOF, so a checksumming wrapper saw every byte
    return got, None


def _home(tmp: Path, files: list[tuple[str, str, int]], seed: int) -> Path:
    home = tmp / "home"
    home.mkdir()
    rng = random.Random(seed)
    for d, name, size in files:
        (home / d).mkdir(parents=True, exist_ok=True)
        p = home / d / name
        if not p.exists() or p.is_file():
            p.write_bytes(rng.randbytes(size // 2) + bytes(size - size // 2))
    for p in [home, *home.rglob("*")]:  # the same archive bytes on every run of an example
        os.utime(p, ns=(10**18, 10**18))
    return home


def _archive(home: Path) -> bytes:
    return _archive_and_index(home)[0]


def _archive_and_index(home: Path) -> tuple[bytes, list[IndexEntry]]:
    out, idx = io.BytesIO(), io.BytesIO()
    write_archive(home, out, idx, frame_size=FRAME, threads=0)
    idx.seek(0)
    return out.getvalue(), list(read_index(idx))


_FILES = st.lists(st.tuples(st.sampled_from(["a", "b", "a/c", "a/c/d"]), st.text("xyz0", min_size=1, max_size=4),
                            st.integers(0, 30_000)), min_size=1, max_size=20, unique_by=lambda t: (t[0], t[1]))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=_FILES, flip=st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.integers(0, 10**6))),
       in_flight=st.integers(1, 4))
def test_property_parallel_reader_reads_what_the_sequential_one_does(
        tmp_path_factory: pytest.TempPathFactory, files: list[tuple[str, str, int]],
        flip: tuple[int, int] | None, in_flight: int) -> None:
    """Random trees: the same members and bytes as the sequential reader. With one byte flipped inside one
    frame (past its header): both fail with IntegrityError; the parallel reader first hands out every member
    that lies wholly in the frames before it, and never bytes of the damaged frame."""
    home = _home(tmp_path_factory.mktemp("par"), files, len(files))
    data, entries = _archive_and_index(home)
    sequential = _read(data, par=False)
    assert sequential[1] is None and len(sequential[0]) >= len(files)
    if flip is None:
        assert _read(data, par=True, in_flight=in_flight) == sequential
        return
    starts = sorted({e.frame for e in entries} | {len(data)})
    k = flip[0] % (len(starts) - 1)
    bad, end = starts[k], starts[k + 1]
    damaged = bytearray(data)
    damaged[bad + 18 + flip[1] % (end - bad - 18)] ^= 0x10  # 18: the largest frame header
    before = sum(1 for i, e in enumerate(entries)  # members that end before the damaged frame
                 if e.frame < bad and (i + 1 == len(entries) or entries[i + 1].frame < bad
                                       or (entries[i + 1].frame == bad and entries[i + 1].frame_offset == 0)))
    got, err = _read(bytes(damaged), par=True, in_flight=in_flight)
    seq_err = _read(bytes(damaged), par=False)[1]
    assert err == seq_err == "IntegrityError"
    assert len(got) >= before  # (the sequential reader reads ahead: it may fail before reaching them)
    assert got == sequential[0][:len(got)]  # nothing of the damaged frame, nothing wrong


def test_a_large_or_unsized_frame_is_streamed_with_the_same_result(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Archives written before frames: one frame for the whole volume, with or without its content size."""
    home = _home(tmp_path, [("a", "x", 200_000), ("b", "y", 50_000), ("a/c", "z", 3)], 1)
    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(_archive(home)), read_across_frames=True).read()
    monkeypatch.setattr(parallel, "MAX_FRAME", 1 << 16)
    monkeypatch.setattr(parallel, "_PIECE", 1 << 15)
    for sized in (True, False):
        one = zstandard.ZstdCompressor(write_checksum=True, write_content_size=sized).compress(tar)
        if not sized:  # the streaming API is what writes a frame without its size
            buf = io.BytesIO()
            with zstandard.ZstdCompressor(write_checksum=True).stream_writer(buf, closefd=False) as w:
                w.write(tar)
            one = buf.getvalue()
        got, err = _read(one, par=True)
        assert err is None and got == _read(one, par=False)[0]
        bad = bytearray(one)
        bad[len(one) // 2] ^= 0x01
        assert _read(bytes(bad), par=True)[1] == "IntegrityError"


@pytest.mark.parametrize("cut", ["empty", "inside-header", "inside-frame", "not-zstd", "trailing-garbage"])
def test_broken_streams_are_refused(tmp_path: Path, cut: str) -> None:
    home = _home(tmp_path, [("a", "x", 40_000), ("b", "y", 9000)], 2)
    data = _archive(home)
    broken = {"empty": b"", "inside-header": data[:3], "inside-frame": data[:len(data) // 2],
              "not-zstd": b"PK\x03\x04" + data[4:], "trailing-garbage": data + b"\x28\xb5\x2f"}[cut]
    assert _read(broken, par=False)[1] == "IntegrityError"
    assert _read(broken, par=True)[1] == "IntegrityError"


def test_closing_early_stops_the_producer(tmp_path: Path) -> None:
    """A restore refused half way closes the source: nothing keeps reading or blocks."""
    home = _home(tmp_path, [("a", str(i), 20_000) for i in range(30)], 3)
    src = io.BytesIO(_archive(home))
    source = ParallelZstdSource(src, what="archive", workers=2, in_flight=1)
    assert source.read(1000)
    source.close()
    assert not source._thread.is_alive()


def test_full_extraction_restores_every_file(tmp_path: Path) -> None:
    home = _home(tmp_path, [("a", str(i), 5_000 * i) for i in range(12)] + [("a/c", "z", 70_000)], 4)
    dest = tmp_path / "dest"
    dest.mkdir()
    extract_archive(io.BytesIO(_archive(home)), dest)
    for p in home.rglob("*"):
        if p.is_file():
            assert (dest / p.relative_to(home)).read_bytes() == p.read_bytes()


def _plain(n: int, size: int = 64 << 10) -> bytes:
    return b"".join(bytes([i % 256]) * size for i in range(n))


def _frames(n: int, size: int = 64 << 10) -> bytes:
    """``n`` independent zstd frames with their content size, ``size`` bytes each (frame i of byte i)."""
    cctx = zstandard.ZstdCompressor(write_content_size=True, write_checksum=True)
    return b"".join(cctx.compress(bytes([i % 256]) * size) for i in range(n))


def test_sources_share_one_budget_of_queued_frames_and_never_wait_on_each_other():
    """Volumes restored at once share the budget: with a limit of 1, three sources hold at most one queued
    frame each beyond it (a source with none queued may always queue one), and one source read to its end
    while the others are left unread (their frames queued, their readers busy elsewhere) never blocks."""
    budget = parallel.FrameBudget(1)
    seen: list[int] = []
    release = budget.release

    def watch(source, n=1):
        seen.append(budget.used)
        release(source, n)

    budget.release = watch  # type: ignore[method-assign]
    counts = [6, 5, 7]
    data = [_frames(n) for n in counts]
    sources = [ParallelZstdSource(io.BytesIO(d), what=f"v{i}", workers=2, in_flight=4, budget=budget)
               for i, d in enumerate(data)]
    try:
        for n, source in zip(counts, sources, strict=True):  # one after the other: the unread ones hold frames
            assert source.read(-1) == _plain(n)
        assert seen and max(seen) <= budget.limit + len(sources)
    finally:
        for source in sources:
            source.close()
    assert budget.used == 0  # every slot back once the sources are closed
