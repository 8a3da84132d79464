"""What the archive writer keeps, skips and reports: fingerprints, excludes, special files, live files."""

from __future__ import annotations

import io
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import dr.archive.writer as writer
from dr.archive.index import load_index
from dr.archive.reader import extract_archive, verify_archive
from dr.archive.writer import fingerprint, write_archive
from tests.treeutil import file_sha256, snapshot_tree, tree_diff


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    (root / "notebooks" / "node_modules" / "pkg").mkdir(parents=True)
    (root / ".cache" / "pip").mkdir(parents=True)
    (root / "data" / "raw").mkdir(parents=True)
    (root / "notebooks" / "a.ipynb").write_text("{}")
    (root / "notebooks" / "a.pyc").write_bytes(b"\0")
    (root / "notebooks" / "node_modules" / "pkg" / "index.js").write_text("x")
    (root / ".cache" / "pip" / "wheel").write_bytes(b"w" * 100)
    (root / "data" / "raw" / "big.csv").write_text("1,2\n")
    (root / "data" / "clean.csv").write_text("1\n")
    return root


def _archive(root: Path, **kw: object) -> tuple[bytes, bytes, writer.ArchiveStats]:
    out, index = io.BytesIO(), io.BytesIO()
    stats = write_archive(root, out, index, **kw)  # type: ignore[arg-type]
    return out.getvalue(), index.getvalue(), stats


def test_fingerprint_is_stable_and_sensitive_to_every_listed_attribute(home: Path) -> None:
    first = fingerprint(home)
    assert fingerprint(home) == first
    assert first[1:] == (6, 2 + 1 + 1 + 100 + 4 + 2)
    target = home / "data" / "clean.csv"
    st = os.stat(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert fingerprint(home)[0] != first[0]
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint(home) == first
    for change in (lambda: os.chmod(target, 0o600), lambda: os.chown(target, 1000, 100),
                   lambda: os.symlink("clean.csv", home / "data" / "link")):
        change()
        assert fingerprint(home)[0] != first[0]


def test_the_archive_walk_computes_the_listing_fingerprint(home: Path) -> None:
    """A first backup takes its fingerprint from the walk that archives (no second listing): it must be
    exactly :func:`fingerprint`'s, with every kind of entry, excludes, and entries the archive skips."""
    os.symlink("clean.csv", home / "data" / "link")
    os.link(home / "data" / "clean.csv", home / "data" / "hard")
    os.mkfifo(home / "pipe")
    with open(home / "sparse", "wb") as f:  # holes: the SEEK_DATA path
        f.truncate(3 << 20)
        f.seek(1 << 20)
        f.write(b"data")
    for excludes in ((), (".cache", "*.pyc")):
        _, _, stats = _archive(home, excludes=excludes)
        assert stats.fingerprint == fingerprint(home, excludes)[0]
    before = stats.fingerprint
    (home / "data" / "clean.csv").write_text("12\n")
    _, _, stats = _archive(home, excludes=excludes)
    assert stats.fingerprint == fingerprint(home, excludes)[0] != before


def test_fingerprint_ignores_content_but_not_size(home: Path) -> None:
    target = home / "data" / "clean.csv"
    before = fingerprint(home)
    st = os.stat(target)
    target.write_text("2\n")  # same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint(home) == before
    target.write_text("22\n")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint(home) != before


def test_excludes_match_basenames_and_relative_paths_and_prune_directories(home: Path) -> None:
    excludes = [".cache", "*.pyc", "node_modules", "data/raw/"]
    _, index_bytes, stats = _archive(home, excludes=excludes)
    paths = set(load_index(io.BytesIO(index_bytes)))
    assert paths == {b".", b"notebooks", b"notebooks/a.ipynb", b"data", b"data/clean.csv"}
    assert stats.warnings == []
    assert fingerprint(home, excludes)[1:] == (2, 4)


def test_sockets_fifos_are_skipped_with_a_warning_never_opened(home: Path) -> None:
    os.mkfifo(home / "pipe")  # opening it for reading would block forever
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(home / "notebooks" / "kernel.sock"))
        archive, index_bytes, stats = _archive(home)
    assert sorted(stats.warnings) == [
        "notebooks/kernel.sock: socket skipped (only files, directories and links are archived)",
        "pipe: FIFO skipped (only files, directories and links are archived)",
    ]
    index = load_index(io.BytesIO(index_bytes))
    assert b"pipe" not in index and b"notebooks/kernel.sock" not in index
    assert verify_archive(io.BytesIO(archive), index).ok


@pytest.fixture
def hook() -> Iterator[list[object]]:
    """Install the writer's test hook (a function of the relative path) for one test."""
    holder: list[object] = []
    writer._after_header_hook = lambda rel: [f(rel) for f in holder]  # type: ignore[func-returns-value,misc]
    yield holder
    writer._after_header_hook = None


def _restore(archive: bytes, index_bytes: bytes, dest: Path) -> None:
    dest.mkdir()
    extract_archive(io.BytesIO(archive), dest, index=load_index(io.BytesIO(index_bytes)))


def test_file_that_shrinks_while_read_is_padded_and_reported(home: Path, tmp_path: Path,
                                                            hook: list[object]) -> None:
    victim = home / "data" / "big.bin"
    victim.write_bytes(b"A" * 3_000_000)
    hook.append(lambda rel: os.truncate(victim, 1_000_000) if rel == b"data/big.bin" else None)
    archive, index_bytes, stats = _archive(home)
    assert len(stats.warnings) == 1
    assert stats.warnings[0].startswith("data/big.bin: shrank while read; archived with its size when opened "
                                        "(3000000 bytes), the missing 2000000 as zeros")
    _restore(archive, index_bytes, tmp_path / "dest")
    assert (tmp_path / "dest" / "data" / "big.bin").read_bytes() == b"A" * 1_000_000 + bytes(2_000_000)
    assert (tmp_path / "dest" / "data" / "clean.csv").read_text() == "1\n"  # the members after it are fine


def test_file_that_grows_while_read_keeps_its_opened_size(home: Path, tmp_path: Path,
                                                         hook: list[object]) -> None:
    victim = home / "data" / "log.txt"
    victim.write_text("line\n")

    def grow(rel: bytes) -> None:
        if rel == b"data/log.txt":
            with open(victim, "a") as f:
                f.write("more\n")

    hook.append(grow)
    archive, index_bytes, stats = _archive(home)
    assert stats.warnings == ["data/log.txt: grew while read; archived its first 5 bytes"]
    _restore(archive, index_bytes, tmp_path / "dest")
    assert (tmp_path / "dest" / "data" / "log.txt").read_text() == "line\n"


def test_file_rewritten_while_read_is_reported(home: Path, hook: list[object]) -> None:
    victim = home / "data" / "clean.csv"
    hook.append(lambda rel: os.utime(victim, ns=(0, 1)) if rel == b"data/clean.csv" else None)
    _, index_bytes, stats = _archive(home)
    assert stats.warnings == ["data/clean.csv: changed while read; the archived copy may be inconsistent"]
    assert load_index(io.BytesIO(index_bytes))[b"data/clean.csv"].sha256 == file_sha256(victim)


def test_directory_swapped_for_a_symlink_mid_walk_is_archived_as_the_link(home: Path, tmp_path: Path) -> None:
    # A user racing the backup swaps a directory for a symlink to somewhere only root may read; the walk
    # never follows it (lstat, then O_NOFOLLOW opens), so it archives the link, not what it points to.
    outside = tmp_path / "root-only"
    outside.mkdir()
    (outside / "shadow").write_text("secret")
    started = threading.Event()

    def swap(rel: bytes) -> None:
        if rel == b"data/clean.csv" and not started.is_set():
            started.set()
            os.rename(home / "notebooks", tmp_path / "moved")
            os.symlink(outside, home / "notebooks")

    writer._after_header_hook = swap
    try:
        _, index_bytes, stats = _archive(home)
    finally:
        writer._after_header_hook = None
    index = load_index(io.BytesIO(index_bytes))
    assert started.is_set()
    assert index[b"notebooks"].type == "symlink" and b"notebooks/shadow" not in index
    assert not any(b"shadow" in p for p in index), stats.warnings


def test_a_file_that_is_one_hole_archives_without_warnings(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.mkdir()
    with open(root / "holes", "wb") as f:
        f.truncate(50 << 20)
    archive, index_bytes, stats = _archive(root)
    assert stats.warnings == [] and stats.bytes == 50 << 20
    _restore(archive, index_bytes, tmp_path / "dest")
    assert os.stat(tmp_path / "dest" / "holes").st_size == 50 << 20
    assert os.stat(tmp_path / "dest" / "holes").st_blocks == 0


def test_multithreaded_compression_round_trips(home: Path, tmp_path: Path) -> None:
    (home / "data" / "mixed.bin").write_bytes(os.urandom(5 << 20) + bytes(5 << 20))
    archive, index_bytes, _ = _archive(home, threads=-1, level=1)
    _restore(archive, index_bytes, tmp_path / "dest")
    assert tree_diff(snapshot_tree(home), snapshot_tree(tmp_path / "dest")) == []


def test_restore_without_same_owner_keeps_ids_out_and_drops_setuid(home: Path, tmp_path: Path) -> None:
    tool = home / "data" / "tool"
    tool.write_text("#!/bin/sh\n")
    os.chown(tool, 1000, 100)
    os.chmod(tool, 0o6755)
    archive, _, _ = _archive(home)
    dest = tmp_path / "dest"
    dest.mkdir()
    extract_archive(io.BytesIO(archive), dest, same_owner=False)
    st = os.stat(dest / "data" / "tool")
    assert (st.st_uid, st.st_mode & 0o7777) == (os.geteuid(), 0o755)
    extract_archive(io.BytesIO(archive), tmp_path / "dest2" if (tmp_path / "dest2").mkdir() is None else dest)
    st = os.stat(tmp_path / "dest2" / "data" / "tool")
    # As root: same owner, and setuid/setgid still cleared (issue #9 item 4: an archive grants no
    # privileges, whoever restores it).
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 100, 0o755)
