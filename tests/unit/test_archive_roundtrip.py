"""Volume archives round-trip every kind of entry, through jdr and through GNU tar + zstd by hand."""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

import pytest

from dr.archive.index import load_index, read_index
from dr.archive.reader import extract_archive, verify_archive
from dr.archive.writer import ArchiveStats, write_archive
from dr.model import IndexEntry
from tests.fixtures.homes import as_restored
from tests.treeutil import SPARSE_OFFSET, build_sample_home, snapshot_tree, tree_diff


class Archived:
    def __init__(self, home: Path, archive: bytes, index: bytes, stats: ArchiveStats) -> None:
        self.home, self.archive, self.index_bytes, self.stats = home, archive, index, stats

    @property
    def index(self) -> dict[bytes, IndexEntry]:
        return load_index(io.BytesIO(self.index_bytes))


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory) -> Archived:
    home = build_sample_home(tmp_path_factory.mktemp("src") / "home")
    archive, index = io.BytesIO(), io.BytesIO()
    stats = write_archive(home, archive, index, threads=2)
    return Archived(home, archive.getvalue(), index.getvalue(), stats)


def test_write_reports_what_it_archived(archived: Archived) -> None:
    s = archived.stats
    assert s.warnings == []
    # 13 regular files (hard2 is the second name of hard1), 7 dirs + the root, 3 symlinks, 1 hard link.
    assert (s.files, s.entries) == (13, 25)
    assert s.bytes == sum(e["size"] for p, e in snapshot_tree(archived.home).items()
                          if e["type"] == "file" and p != b"notebooks/hard2")


def test_roundtrip_restores_every_entry_exactly(archived: Archived, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    stats = extract_archive(io.BytesIO(archived.archive), dest, index=archived.index)
    # Everything as it was, but setuid/setgid on files are cleared (issue #9 item 4: an archive grants no
    # privileges); the index still records the original mode, and the index check accepted the file.
    assert tree_diff(as_restored(snapshot_tree(archived.home)), snapshot_tree(dest)) == []
    assert archived.index[b"shared/tool"].mode & 0o7777 == 0o4755
    assert os.stat(dest / "shared" / "tool").st_mode & 0o7777 == 0o755
    assert (stats.files, stats.entries, stats.skipped) == (13, 25, 0)
    assert os.stat(dest / "hard1").st_ino == os.stat(dest / "notebooks" / "hard2").st_ino
    assert os.readlink(dest / "dangling") == "nowhere/at/all"
    assert os.stat(dest).st_uid == 1000 and oct(os.stat(dest / "shared").st_mode & 0o7777) == "0o2775"


def test_sparse_file_comes_back_sparse(archived: Archived, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    extract_archive(io.BytesIO(archived.archive), dest)
    st = os.stat(dest / "sparse.img")
    assert st.st_size == SPARSE_OFFSET + 4096
    assert st.st_blocks * 512 < 4 << 20, "the 1 GiB hole was written out"
    with open(dest / "sparse.img", "rb") as f:
        f.seek(SPARSE_OFFSET - 1)
        assert f.read() == b"\0" + b"\x5a" * 4096


def test_gnu_tar_and_zstd_extract_the_same_tree(archived: Archived, tmp_path: Path) -> None:
    dest = tmp_path / "by-hand"
    dest.mkdir()
    (tmp_path / "a.tar.zst").write_bytes(archived.archive)
    done = subprocess.run(f"zstd -dq < {tmp_path}/a.tar.zst | tar -x --numeric-owner -C {dest}",
                          shell=True, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    # GNU tar 1.34 warns that it ignores pax "hdrcharset" (it keeps the raw bytes, as we want).
    assert all("hdrcharset" in line for line in done.stderr.splitlines()), done.stderr
    assert tree_diff(snapshot_tree(archived.home), snapshot_tree(dest)) == []


def test_gnu_tar_lists_numeric_owners_and_nanosecond_mtimes(archived: Archived, tmp_path: Path) -> None:
    (tmp_path / "a.tar.zst").write_bytes(archived.archive)
    listing = subprocess.run(f"zstd -dq < {tmp_path}/a.tar.zst | tar -tv --full-time 2>/dev/null",
                             shell=True, capture_output=True, check=True).stdout.decode("utf-8", "replace")
    line = next(x for x in listing.splitlines() if x.endswith(" secret.key"))
    mtime_ns = os.lstat(archived.home / "secret.key").st_mtime_ns
    assert line.startswith("-rw------- 1000/100 ")
    assert f".{mtime_ns % 10**9:09d} " in line


def test_index_describes_the_tree(archived: Archived) -> None:
    index = archived.index
    tree = snapshot_tree(archived.home)
    assert set(index) == set(tree)
    for path, rec in tree.items():
        e = index[path]
        assert (e.mode, e.uid, e.gid) == (rec["mode"], rec["uid"], rec["gid"]), path
        assert e.mtime == rec["mtime_ns"] / 10**9, path  # int/int division: correctly rounded
        if rec["type"] == "symlink":
            assert (e.type, e.link) == ("symlink", rec["target"])
        elif rec["type"] == "dir":
            assert e.type == "dir"
        else:
            assert (e.size, e.sha256) == (rec["size"], rec["sha256"]), path
            assert e.type == ("hardlink" if path == b"notebooks/hard2" else "file"), path
    assert index[b"notebooks/hard2"].link == b"hard1"
    assert index[b"caf\xe9.txt"].to_dict()["path_b64"] == "Y2Fm6S50eHQ="


def test_index_header_and_order(archived: Archived) -> None:
    import zstandard

    lines = zstandard.ZstdDecompressor().decompressobj().decompress(archived.index_bytes).splitlines()
    assert lines[0].startswith(b'{"format":"jdr-index","version":1,"root":')
    paths = [e.path for e in read_index(io.BytesIO(archived.index_bytes))]
    assert paths[0] == b"." and paths[1:3] == [b"caf\xe9.txt", b"dangling"]


def test_same_tree_gives_the_same_archive_bytes(archived: Archived) -> None:
    again = io.BytesIO()
    write_archive(archived.home, again, io.BytesIO(), threads=2)
    assert again.getvalue() == archived.archive


def test_archive_ends_on_a_tar_record(archived: Archived) -> None:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archived.archive), read_across_frames=True)
    total, tail = 0, b""
    while chunk := reader.read(1 << 20):
        total += len(chunk)
        tail = (tail + chunk)[-1024:]
    assert total % 10240 == 0 and tail == bytes(1024)


def test_verify_accepts_the_archive_it_was_written_with(archived: Archived) -> None:
    report = verify_archive(io.BytesIO(archived.archive), archived.index)
    assert report.ok, report.problems
    assert (report.files, report.entries) == (13, 25)
    assert report.bytes == archived.stats.bytes


def test_verify_reports_every_mismatch_by_path(archived: Archived) -> None:
    from dataclasses import replace

    index = archived.index
    index[b"secret.key"] = replace(index[b"secret.key"], sha256="0" * 64)
    index[b"private"] = replace(index[b"private"], mode=0o755)
    index[b"link-dir"] = replace(index[b"link-dir"], link=b"elsewhere")
    index[b"empty.txt"] = replace(index[b"empty.txt"], uid=0)
    del index[b"hard1"]
    index[b"ghost"] = IndexEntry(path=b"ghost", type="file")
    problems = verify_archive(io.BytesIO(archived.archive), index).problems
    assert len(problems) == 6, problems
    expected = ["'secret.key': content differs", "'private': mode '0o700' in the archive, '0o755'",
                "'link-dir': link b'notebooks' in the archive, b'elsewhere'", "'empty.txt': uid 1000",
                "'hard1': in the archive but not in the index", "'ghost': in the index but not in"]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)


def test_extract_with_index_refuses_content_that_differs(archived: Archived, tmp_path: Path) -> None:
    from dataclasses import replace

    from dr.errors import IntegrityError

    index = archived.index
    index[b"data/random.bin"] = replace(index[b"data/random.bin"], sha256="0" * 64)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityError, match=re.escape("'data/random.bin': content does not match")):
        extract_archive(io.BytesIO(archived.archive), dest, index=index)


def test_extract_with_index_notices_missing_entries(archived: Archived, tmp_path: Path) -> None:
    from dr.errors import IntegrityError

    index = archived.index
    index[b"vanished.txt"] = IndexEntry(path=b"vanished.txt", type="file", size=1, sha256="0" * 64)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityError, match=re.escape("lacks 1 entries of its index: 'vanished.txt'")):
        extract_archive(io.BytesIO(archived.archive), dest, index=index)


def test_extract_reads_the_source_through_to_eof(archived: Archived, tmp_path: Path) -> None:
    src = io.BytesIO(archived.archive)
    dest = tmp_path / "dest"
    dest.mkdir()
    extract_archive(src, dest)
    assert src.tell() == len(archived.archive) and src.read() == b""
    src = io.BytesIO(archived.archive)
    verify_archive(src, archived.index)
    assert src.tell() == len(archived.archive)


def test_progress_is_reported(archived: Archived, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    dest = tmp_path / "dest"
    dest.mkdir()
    stats = extract_archive(io.BytesIO(archived.archive), dest, progress=lambda f, b: calls.append((f, b)))
    assert calls[-1] == (stats.files, stats.bytes) == (13, archived.stats.bytes)
    calls.clear()
    write_archive(archived.home, io.BytesIO(), io.BytesIO(), progress=lambda f, b: calls.append((f, b)))
    assert calls[-1] == (13, archived.stats.bytes)


def test_extract_refuses_a_staging_directory_that_is_not_empty(archived: Archived, tmp_path: Path) -> None:
    from dr.errors import DeploymentError

    (tmp_path / "leftover").write_text("x")
    with pytest.raises(DeploymentError, match="not empty"):
        extract_archive(io.BytesIO(archived.archive), tmp_path)


@pytest.mark.slow
def test_file_over_8_gib_round_trips(tmp_path: Path) -> None:
    size = 9 << 30
    home = tmp_path / "home"
    home.mkdir()
    with open(home / "big.img", "wb") as f:
        f.truncate(size - 4)
        f.seek(size - 4)
        f.write(b"tail")
    archive = tmp_path / "a.tar.zst"
    index = io.BytesIO()
    with open(archive, "wb") as out:
        stats = write_archive(home, out, index, level=1, threads=-1)
    assert stats.bytes == size and stats.warnings == []
    entry = load_index(io.BytesIO(index.getvalue()))[b"big.img"]
    assert entry.size == size
    dest = tmp_path / "dest"
    dest.mkdir()
    # Without the index: hashing 9 GiB once more would double the test's time (sha256 is the bottleneck).
    with open(archive, "rb") as src:
        extracted = extract_archive(src, dest)
    assert extracted.bytes == size
    st = os.stat(dest / "big.img")
    assert st.st_size == size and st.st_blocks * 512 < 1 << 20
    with open(dest / "big.img", "rb") as f:
        f.seek(size - 8)
        assert f.read() == b"\0\0\0\0tail"
