"""dr/util/fsops.py: the primitives the engine's safety rests on, with renameat2 and without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dr.util import fsops


@pytest.fixture(params=["renameat2", "fallback"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "fallback":
        monkeypatch.setattr(fsops, "_renameat2", None)
    return str(request.param)


def test_rename_noreplace_never_replaces_anything(tmp_path: Path, mode: str) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (tmp_path / "src").write_text("new")
        for kind in ("file", "empty-dir", "link", "dangling-link"):
            dst = tmp_path / kind
            if kind == "file":
                dst.write_text("kept")
            elif kind == "empty-dir":
                dst.mkdir()
            elif kind == "link":
                os.symlink(tmp_path / "src", dst)
            else:
                os.symlink(tmp_path / "nowhere", dst)
            with pytest.raises(FileExistsError):
                fsops.rename_noreplace(fd, "src", fd, kind)
        assert (tmp_path / "file").read_text() == "kept" and (tmp_path / "empty-dir").is_dir()
        assert not (tmp_path / "nowhere").exists()  # the dangling link was not followed to create it
        fsops.rename_noreplace(fd, "src", fd, "free")
        assert (tmp_path / "free").read_text() == "new" and not (tmp_path / "src").exists()
    finally:
        os.close(fd)


def test_open_dir_and_write_new_file_never_follow(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "d").mkdir()
    os.symlink(outside, tmp_path / "d" / "link")
    os.symlink(outside / "f", tmp_path / "d" / "flink")
    fd = os.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError):
            fsops.open_dir("link", fd)
        with pytest.raises(FileExistsError):
            fsops.write_new_file("flink", fd, b"x")
        fsops.remove_tree_at("link", fd)  # removes the link, not what it points to
    finally:
        os.close(fd)
    assert outside.is_dir() and not (outside / "f").exists()
    assert [fsops.is_bare_name(n) for n in ("a", "", ".", "..", "a/b", "a\0", b"caf\xe9")] == \
        [True, False, False, False, False, False, True]
