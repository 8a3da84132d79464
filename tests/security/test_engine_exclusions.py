"""Issue #9 item 9: backups leave out only what jdr itself made — its restore state, by exact name at the
volume's root, a real directory, mode 0700, owned by root — and nothing a user made that looks like it."""

from __future__ import annotations

import io
import os
from pathlib import Path

from dr.archive.index import load_index
from dr.archive.writer import write_archive
from dr.deployments import restore_state


def _archived_paths(root: Path) -> set[bytes]:
    out, idx = io.BytesIO(), io.BytesIO()
    write_archive(root, out, idx)
    return set(load_index(io.BytesIO(idx.getvalue())))


def test_only_jdrs_own_state_at_the_root_is_left_out(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for rel in ("project/.jdr-restore/notes.txt", "project/.jdr-restore-0123456789abcdef/x.txt",
                ".jdr-restore-fedcba9876543210/mine.txt", "deep/a/b/.jdr-restore/journal.json"):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text("the user's\n")
    # A user-owned 0700 directory with jdr's name pattern at the root: still the user's.
    os.chmod(home / ".jdr-restore-fedcba9876543210", 0o700)
    os.chown(home / ".jdr-restore-fedcba9876543210", 1000, 100)
    # A symlink named like jdr's state: data.
    os.symlink("/tmp", home / ".jdr-restore-1111111111111111")
    # jdr's own state, as a restore makes it (root-owned 0700, random name) with a staged file.
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with restore_state.create(fd) as state:
            staging = state.make_dir(restore_state.STAGING)
            os.close(staging)
            name = state.name
    finally:
        os.close(fd)
    (home / name / "staging" / "half-restored.txt").write_text("x")

    paths = _archived_paths(home)
    for rel in (b"project/.jdr-restore/notes.txt", b"project/.jdr-restore-0123456789abcdef/x.txt",
                b".jdr-restore-fedcba9876543210/mine.txt", b"deep/a/b/.jdr-restore/journal.json",
                b".jdr-restore-1111111111111111"):
        assert rel in paths, rel
    assert not [p for p in paths if p.startswith(name.encode())]
