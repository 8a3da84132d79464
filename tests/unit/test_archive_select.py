"""Partial restores: ``--path`` globs, and extraction of the selected entries only."""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path

import pytest

from dr.archive.globs import path_matcher
from dr.archive.index import load_index
from dr.archive.reader import extract_archive
from dr.archive.writer import write_archive
from dr.errors import UsageError
from dr.model import IndexEntry

PATHS = [".", "a.ipynb", "notebooks", "notebooks/x.ipynb", "notebooks/sub/y.ipynb", "thesis",
         "thesis/ch1/a.tex", "data.csv", "x/data.csv", "thesis-old/a", "caf\udce9.txt"]


def _selected(globs: list[str]) -> list[str]:
    match = path_matcher(globs)
    return [p for p in PATHS if match(IndexEntry(path=os.fsencode(p), type="file"))]


@pytest.mark.parametrize(("globs", "expected"), [
    (["notebooks/*.ipynb"], ["notebooks/x.ipynb"]),
    (["thesis/**"], ["thesis", "thesis/ch1/a.tex"]),
    (["thesis"], ["thesis", "thesis/ch1/a.tex"]),
    (["/thesis/"], ["thesis", "thesis/ch1/a.tex"]),
    (["data.csv"], ["data.csv"]),
    (["**/data.csv"], ["data.csv", "x/data.csv"]),
    (["**/*.ipynb"], ["a.ipynb", "notebooks/x.ipynb", "notebooks/sub/y.ipynb"]),
    (["notebooks/**/y.ipynb"], ["notebooks/sub/y.ipynb"]),
    (["[!n]*.ipynb", "thesis-*"], ["a.ipynb", "thesis-old/a"]),
    (["caf?.txt"], ["caf\udce9.txt"]),
    (["**"], PATHS[1:]),
])
def test_path_globs(globs: list[str], expected: list[str]) -> None:
    assert _selected(globs) == expected


def test_path_globs_refuse_nothing_to_match() -> None:
    with pytest.raises(ValueError, match="no path globs"):
        path_matcher([])
    with pytest.raises(ValueError, match="empty path glob"):
        path_matcher(["/"])


@pytest.fixture
def archived(tmp_path: Path) -> tuple[Path, bytes, dict[bytes, IndexEntry]]:
    home = tmp_path / "home"
    (home / "notebooks" / "sub").mkdir(parents=True)
    (home / "other").mkdir()
    (home / "notebooks" / "x.ipynb").write_text("x")
    (home / "notebooks" / "sub" / "y.ipynb").write_text("y")
    (home / "notebooks" / "notes.txt").write_text("n")
    (home / "other" / "first").write_text("shared content")
    os.link(home / "other" / "first", home / "second")
    os.chmod(home / "notebooks", 0o750)
    os.chown(home / "notebooks", 1000, 100)
    os.chown(home, 1000, 100)
    os.utime(home / "notebooks", ns=(1, 1_600_000_000_000_000_001))
    out, index = io.BytesIO(), io.BytesIO()
    write_archive(home, out, index)
    return home, out.getvalue(), load_index(io.BytesIO(index.getvalue()))


def _listing(root: Path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)


def test_selected_files_come_back_with_their_parents_attributes(
        archived: tuple[Path, bytes, dict[bytes, IndexEntry]], tmp_path: Path) -> None:
    _, archive, index = archived
    dest = tmp_path / "dest"
    dest.mkdir()
    select = path_matcher(["notebooks/*.ipynb"])
    stats = extract_archive(io.BytesIO(archive), dest, select=select, index=index)
    assert _listing(dest) == ["notebooks", "notebooks/x.ipynb"]
    st = os.stat(dest / "notebooks")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime_ns) == (0o750, 1000, 100,
                                                                          1_600_000_000_000_000_001)
    assert os.stat(dest).st_uid == 1000  # the root's attributes always come back
    assert (stats.files, stats.entries, stats.skipped) == (1, 2, 7)


def test_selecting_a_directory_selects_everything_under_it(
        archived: tuple[Path, bytes, dict[bytes, IndexEntry]], tmp_path: Path) -> None:
    _, archive, index = archived
    dest = tmp_path / "dest"
    dest.mkdir()
    extract_archive(io.BytesIO(archive), dest, select=path_matcher(["notebooks"]), index=index)
    assert _listing(dest) == ["notebooks", "notebooks/notes.txt", "notebooks/sub", "notebooks/sub/y.ipynb",
                              "notebooks/x.ipynb"]


def test_hard_link_selected_without_its_first_name_keeps_its_content(
        archived: tuple[Path, bytes, dict[bytes, IndexEntry]], tmp_path: Path) -> None:
    _, archive, index = archived
    assert index[b"second"].type == "hardlink" and index[b"second"].link == b"other/first"
    dest = tmp_path / "dest"
    dest.mkdir()
    extract_archive(io.BytesIO(archive), dest, select=path_matcher(["second"]), index=index)
    assert _listing(dest) == ["second"]
    assert (dest / "second").read_text() == "shared content"
    assert os.stat(dest / "second").st_nlink == 1


def test_hard_link_selected_without_its_first_name_needs_the_index(
        archived: tuple[Path, bytes, dict[bytes, IndexEntry]], tmp_path: Path) -> None:
    _, archive, _ = archived
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UsageError, match="hard link to 'other/first', which the selection leaves out"):
        extract_archive(io.BytesIO(archive), dest, select=path_matcher(["second"]))


def test_select_sees_entries_built_from_tar_headers_without_an_index(
        archived: tuple[Path, bytes, dict[bytes, IndexEntry]], tmp_path: Path) -> None:
    _, archive, index = archived
    seen: list[IndexEntry] = []

    def select(entry: IndexEntry) -> bool:
        seen.append(entry)
        return entry.type == "dir"

    dest = tmp_path / "dest"
    dest.mkdir()
    extract_archive(io.BytesIO(archive), dest, select=select)
    assert _listing(dest) == ["notebooks", "notebooks/sub", "other"]
    by_path = {e.path: e for e in seen}
    assert set(by_path) == set(index) - {b"."}  # the root is never offered to select
    for path, entry in by_path.items():
        # The header says everything the index says but the content hash (and a hard link's size).
        want = index[path]
        assert entry == replace(want, sha256="", size=0 if want.type == "hardlink" else want.size), path
