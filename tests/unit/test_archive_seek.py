"""Seekable archives (docs/FORMAT.md, "Seekable archive"): independent zstd frames, frame offsets in the
index, and ranged extraction of chosen entries that reads only their frames."""

from __future__ import annotations

import dataclasses
import io
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dr.archive.globs import path_matcher
from dr.archive.index import read_index
from dr.archive.reader import extract_archive
from dr.archive.seek import open_ranged, plan, seekable
from dr.archive.writer import write_archive
from dr.errors import IntegrityError
from dr.model import IndexEntry

FRAME = 64 * 1024


def _tree(home: Path) -> None:
    rng = random.Random(12)
    (home / "notebooks" / "sub").mkdir(parents=True)
    (home / "data").mkdir()
    for i in range(60):
        (home / "notebooks" / f"n{i:02}.ipynb").write_bytes(rng.randbytes(rng.randrange(1, 9000)))
    (home / "notebooks" / "sub" / "deep.ipynb").write_text("deep")
    (home / "data" / "big.bin").write_bytes(rng.randbytes(300_000))  # spans frames
    (home / "data" / "zeros.bin").write_bytes(bytes(200_000))
    (home / "data" / "empty").write_bytes(b"")
    (home / "z-last.txt").write_text("the last file")
    os.link(home / "notebooks" / "n03.ipynb", home / "data" / "link-to-n03")
    os.symlink("../notebooks/n04.ipynb", home / "data" / "sym")


class _Counted:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    def __call__(self, start: int, length: int) -> bytes:
        self.reads.append((start, length))
        return self.data[start:start + length]


def _archive(home: Path, frame: int = FRAME, threads: int = 2) -> tuple[bytes, list[IndexEntry]]:
    out, idx = io.BytesIO(), io.BytesIO()
    write_archive(home, out, idx, frame_size=frame, threads=threads)
    idx.seek(0)
    return out.getvalue(), list(read_index(idx))


def _ranged(tmp: Path, data: bytes, entries: list[IndexEntry], globs: list[str]) -> tuple[Path, _Counted]:
    dest = tmp / ("dest-" + str(len(list(tmp.iterdir()))))
    dest.mkdir()
    fetch = _Counted(data)
    select = path_matcher(globs)
    with open_ranged(entries, select, fetch, len(data)) as src:
        extract_archive(src, dest, select=select, index={e.path: e for e in entries}, compressed=False)
    return dest, fetch


def test_archive_is_many_standard_frames_readable_by_zstd_and_tar(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _tree(home)
    data, entries = _archive(home)
    assert seekable(entries)
    frames = sorted({e.frame for e in entries})
    assert len(frames) > 5
    for f in frames:  # every recorded offset is the start of a zstd frame
        assert data[f:f + 4] == b"\x28\xb5\x2f\xfd"
    if shutil.which("zstd") is None or shutil.which("tar") is None:
        pytest.skip("zstd or tar CLI missing")
    (tmp_path / "a.tar.zst").write_bytes(data)
    out = tmp_path / "cli"
    out.mkdir()
    subprocess.run(f"zstd -dc {tmp_path / 'a.tar.zst'} | tar -x -C {out}", shell=True, check=True)
    for p in home.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert (out / p.relative_to(home)).read_bytes() == p.read_bytes()


def test_ranged_restore_of_one_file_reads_only_its_frames(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _tree(home)
    data, entries = _archive(home)
    dest, fetch = _ranged(tmp_path, data, entries, ["notebooks/n30.ipynb"])
    assert (dest / "notebooks" / "n30.ipynb").read_bytes() == (home / "notebooks" / "n30.ipynb").read_bytes()
    assert sorted(p.name for p in (dest / "notebooks").iterdir()) == ["n30.ipynb"]
    assert len(fetch.reads) == 1  # one ranged read, a small part of the archive
    assert sum(n for _, n in fetch.reads) < len(data) / 4
    # the parent directory got its attributes from the index
    assert (dest / "notebooks").stat().st_mode & 0o777 == (home / "notebooks").stat().st_mode & 0o777


def test_ranged_restore_of_a_file_spanning_frames_a_hard_link_and_a_symlink(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _tree(home)
    data, entries = _archive(home)
    dest, _ = _ranged(tmp_path, data, entries, ["data/big.bin", "data/link-to-n03", "data/sym", "z-last.txt"])
    assert (dest / "data" / "big.bin").read_bytes() == (home / "data" / "big.bin").read_bytes()
    assert (dest / "data" / "link-to-n03").read_bytes() == (home / "notebooks" / "n03.ipynb").read_bytes()
    assert os.readlink(dest / "data" / "sym") == "../notebooks/n04.ipynb"
    assert (dest / "z-last.txt").read_text() == "the last file"
    assert not (dest / "notebooks" / "n03.ipynb").exists()  # the link's first name is not restored


def test_by_hand_extraction_of_one_file_from_its_frame(tmp_path: Path) -> None:
    """The recipe of docs/FORMAT.md, "Seekable archive": tail from the frame, decompress, tail to the header."""
    home = tmp_path / "home"
    _tree(home)
    data, entries = _archive(home)
    (tmp_path / "archive.tar.zst").write_bytes(data)
    e = next(e for e in entries if e.name == "notebooks/n44.ipynb")
    assert e.frame > 0 and e.frame_offset > 0
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(f"tail -c +$(({e.frame} + 1)) archive.tar.zst | zstd -d | tail -c +$(({e.frame_offset} + 1))"
                   f" | tar -x -C out notebooks/n44.ipynb", shell=True, check=True, cwd=tmp_path)
    assert (out / "notebooks" / "n44.ipynb").read_bytes() == (home / "notebooks" / "n44.ipynb").read_bytes()


def test_index_without_frames_is_not_seekable(tmp_path: Path) -> None:
    # Indexes of archives written before frames were recorded have no frame fields: readers fall back.
    home = tmp_path / "home"
    _tree(home)
    _, entries = _archive(home)
    old = [IndexEntry.from_dict({k: v for k, v in e.to_dict().items() if not k.startswith("frame")})
           for e in entries]
    assert not seekable(old)
    assert old == entries  # where an entry lies is not part of what it is


def test_single_threaded_and_parallel_writers_write_the_same_bytes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _tree(home)
    one, entries1 = _archive(home, threads=0)
    two, entries2 = _archive(home, threads=2)
    assert one == two
    assert [(e.frame, e.frame_offset) for e in entries1] == [(e.frame, e.frame_offset) for e in entries2]


def test_corrupt_frame_fails_only_the_entries_in_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _tree(home)
    data, entries = _archive(home)
    by = {e.name: e for e in entries}
    bad_frame = by["notebooks/n10.ipynb"].frame
    assert by["z-last.txt"].frame != bad_frame
    damaged = bytearray(data)
    damaged[bad_frame + 200] ^= 0x40
    broken = bytes(damaged)
    dest, _ = _ranged(tmp_path, broken, entries, ["z-last.txt"])
    assert (dest / "z-last.txt").read_text() == "the last file"
    with pytest.raises(IntegrityError, match=r"corrupt|damaged|does not match"):
        _ranged(tmp_path, broken, entries, ["notebooks/n10.ipynb"])


def test_truncated_archive_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _tree(home)
    data, entries = _archive(home)
    with pytest.raises(IntegrityError, match=r"truncated|beyond"):
        _ranged(tmp_path, data[:len(data) // 2], entries, ["z-last.txt"])


def test_compression_cost_of_frames_is_small(tmp_path: Path) -> None:
    """Frames of the default size cost little ratio against one frame at the same level (issue 12: <= 2 %)."""
    rng = random.Random(5)
    home = tmp_path / "home"
    home.mkdir()
    words = [rng.randbytes(rng.randrange(3, 9)).hex().encode() for _ in range(3000)]
    for i in range(12):  # text-like files that compress, and some incompressible ones
        text = b" ".join(rng.choice(words) for _ in range(220_000))
        (home / f"t{i}.txt").write_bytes(text)
    for i in range(3):
        (home / f"r{i}.bin").write_bytes(rng.randbytes(1_000_000))
    framed, entries = _archive(home, frame=4 << 20)
    assert len({e.frame for e in entries}) > 2
    one = io.BytesIO()
    write_archive(home, one, io.BytesIO(), frame_size=1 << 40, threads=0)
    single = one.getvalue()
    assert len(zstandard.ZstdDecompressor().decompressobj().decompress(single)) > 30_000_000  # one frame
    cost = len(framed) / len(single) - 1
    print(f"frames of 4 MiB: {len(framed)} bytes, one frame: {len(single)}, cost {cost:.2%}")
    assert cost <= 0.02


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "a/c", "a/c/d", "e"]),
                          st.text("xyz0", min_size=1, max_size=4),
                          st.integers(0, 40_000)), min_size=1, max_size=25, unique_by=lambda t: (t[0], t[1])))
def test_property_ranged_extraction_equals_whole_stream(tmp_path_factory: pytest.TempPathFactory,
                                                       files: list[tuple[str, str, int]]) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    home = tmp / "home"
    home.mkdir()
    rng = random.Random(len(files))
    for d, name, size in files:
        (home / d).mkdir(parents=True, exist_ok=True)
        p = home / d / name
        if not p.exists() or p.is_file():
            p.write_bytes(rng.randbytes(size // 2) + bytes(size - size // 2))
    data, entries = _archive(home, frame=8192)
    whole = tmp / "whole"
    whole.mkdir()
    extract_archive(io.BytesIO(data), whole)
    for e in entries:
        if e.type != "file":
            continue
        dest, _ = _ranged(tmp, data, entries, [e.name])
        assert (dest / e.name).read_bytes() == (whole / e.name).read_bytes()


def test_plan_merges_adjacent_frames_into_one_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _tree(home)
    data, entries = _archive(home)
    p = plan(entries, path_matcher(["notebooks"]), len(data))
    assert len(p.runs) == 1
    assert p.compressed_bytes < len(data)


def _alter_header(data: bytes, entries: list[IndexEntry], name: str, field: slice,
                  value: bytes) -> tuple[bytes, list[IndexEntry]]:
    """The archive with one field of ``name``'s ustar header replaced, its tar checksum and its frame's
    zstd checksum recomputed (so neither catches it), and the index's later frame offsets moved to fit."""
    e = next(x for x in entries if x.name == name)
    later = sorted({x.frame for x in entries if x.frame > e.frame})
    end = later[0] if later else len(data)
    plain = bytearray(zstandard.ZstdDecompressor().decompress(data[e.frame:end]))
    at = e.frame_offset
    while plain[at + 156:at + 157] == b"x":  # skip the pax extended header before the ustar one
        size = int(plain[at + 124:at + 136].rstrip(b"\0 ").decode(), 8)
        at += 512 + -(-size // 512) * 512
    block = bytearray(plain[at:at + 512])
    block[field] = value.ljust(field.stop - field.start, b"\0")
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    plain[at:at + 512] = block
    frame = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True).compress(bytes(plain))
    delta = len(frame) - (end - e.frame)
    moved = [x if x.frame <= e.frame else dataclasses.replace(x, frame=x.frame + delta) for x in entries]
    return data[:e.frame] + frame + data[end:], moved


@pytest.mark.parametrize(("name", "field", "value", "what"), [
    ("data/sym", slice(157, 257), b"/etc/shadow", "link"),
    ("notebooks/n20.ipynb", slice(100, 108), b"0000777", "mode"),
    ("notebooks/n20.ipynb", slice(108, 116), b"0000000", "uid"),
    ("z-last.txt", slice(136, 148), b"00000000001", "mtime"),
])
def test_ranged_restore_refuses_a_header_that_differs_from_the_index(tmp_path: Path, name: str, field: slice,
                                                                     value: bytes, what: str) -> None:
    """The whole-artifact SHA-256 does not cover a ranged read: the MAC-covered index must catch an altered
    header (one whose tar and zstd checksums were recomputed)."""
    home = tmp_path / "home"
    _tree(home)
    if what == "uid" and os.stat(home).st_uid == 0:
        os.chown(home / name, 1, 1)
    if what == "mtime":  # whole seconds: no pax mtime record, which would take priority over the field
        os.utime(home / name, ns=(10**18, 10**18))
    data, entries = _archive(home)
    altered, moved = _alter_header(data, entries, name, field, value)
    dest, _ = _ranged(tmp_path, altered, moved, ["data/big.bin"])  # other frames still restore
    assert (dest / "data" / "big.bin").read_bytes() == (home / "data" / "big.bin").read_bytes()
    with pytest.raises(IntegrityError, match=rf"{name}.*does not match the index \({what}"):
        _ranged(tmp_path, altered, moved, [name])
    # the unaltered archive restores the same entry
    dest, _ = _ranged(tmp_path, data, entries, [name])
    assert os.path.lexists(dest / name)
