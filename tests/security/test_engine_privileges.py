"""Issue #9 item 4: an archive grants no privileges. Anyone who can write the repository can craft one,
so setuid/setgid bits are cleared on restore (directories keep setgid: group inheritance); the index
still records the original mode; device files stay refused, with nothing written."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from dr.archive.index import load_index
from dr.errors import HostileArchiveError
from tests.faults.test_local_hostile import archive_of, member
from tests.restoreutil import make_sentinel, restore, sentinel_state, state_dirs
from tests.treeutil import snapshot_tree


def _crafted(*members: tuple[tarfile.TarInfo, bytes | None]) -> tuple[bytes, dict[bytes, object]]:
    archive, index = archive_of(*members)
    return archive, load_index(io.BytesIO(index))  # type: ignore[return-value]


def _with(m: tuple[tarfile.TarInfo, bytes | None], mode: int, uid: int = 1000,
          gid: int = 100) -> tuple[tarfile.TarInfo, bytes | None]:
    m[0].mode, m[0].uid, m[0].gid = mode, uid, gid
    return m


def test_setuid_and_setgid_are_cleared_whoever_owns_the_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    archive, index = _crafted(
        _with(member(".", tarfile.DIRTYPE), 0o755),
        _with(member("su", data=b"#!/bin/sh\n"), 0o6755, uid=0, gid=0),  # a root-owned setuid "shell"
        _with(member("mine", data=b"#!/bin/sh\n"), 0o4755),
        _with(member("group", tarfile.DIRTYPE), 0o2775),
        _with(member("odd", tarfile.DIRTYPE), 0o4755),
    )
    # The index records what the archive says (hence verify compares with the original mode).
    assert index[b"su"].mode & 0o7777 == 0o6755  # type: ignore[attr-defined]
    restore(home, archive, index)  # type: ignore[arg-type]
    modes = {n: stat.S_IMODE(os.lstat(home / n).st_mode) for n in ("su", "mine", "group", "odd")}
    assert modes == {"su": 0o755, "mine": 0o755, "group": 0o2775, "odd": 0o755}
    assert os.stat(home / "su").st_uid == 0  # owners are as recorded; only the privilege bits go


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_device_files_stay_refused_and_nothing_is_written(tmp_path: Path, kind: bytes) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine\n")
    sentinel = make_sentinel(tmp_path / "sentinel")
    before, home_before = sentinel_state(sentinel), snapshot_tree(home)
    dev = member("dev", kind)
    dev[0].devmajor, dev[0].devminor = 8, 0
    archive, index = _crafted(member(".", tarfile.DIRTYPE), member("ok.txt", data=b"x"), dev)
    with pytest.raises(HostileArchiveError, match="device not allowed"):
        restore(home, archive, index)  # type: ignore[arg-type]
    assert snapshot_tree(home) == home_before and state_dirs(home) == []
    assert sentinel_state(sentinel) == before
