"""Issue #9 items 1 and 6: restore state cannot be forged by the user, and a killed restore loses nothing.

Item 1: the journal, staging and kept entries used to live in ``<home>/.jdr-restore``, which the user
could fill with a forged ``journal.json`` (naming paths such as ``/etc``) or a ``journal.json.tmp`` symlink.
Now the state is a fresh root-owned 0700 directory with a random name, verified through a descriptor
before use, and its journal holds no names at all. Everything the user plants named like it is their data.

Item 6: a re-run after a kill never renames over a kept entry (a name the user re-created meanwhile
is kept beside it), and a backup that meets a half-swapped home fails that volume, saying why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dr.deployments import restore_state
from dr.deployments.volume_backup import backup_tree
from dr.deployments.volume_swap import recover, unfinished_restore
from dr.errors import DeploymentError
from dr.util import testhooks
from tests.fixtures.homes import as_restored
from tests.restoreutil import (
    archive_tree,
    aside,
    home_tree,
    journals,
    kept_copies,
    make_sentinel,
    restore,
    sentinel_state,
    state_dirs,
)
from tests.security.test_swap_races import damage, small_home
from tests.treeutil import snapshot_tree


class Killed(BaseException):
    """Stands for SIGKILL at a pause point: nothing after it runs, no cleanup."""


def _forged_journal(staging: str) -> str:
    # The old format named paths; the roll-forward renamed entries to wherever they pointed.
    return json.dumps({"run": "x", "mode": "full", "staging": staging, "previous": "/etc/jdr-pwned",
                       "phase": "move-in", "root_attrs": {"mode": 0o777, "uid": 0, "gid": 0, "atime_ns": 0,
                                                          "mtime_ns": 0}})


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path, bytes, dict[bytes, object]]:
    home = small_home(tmp_path / "home")
    sentinel = make_sentinel(tmp_path / "sentinel")
    archive, index = archive_tree(home)
    damage(home)
    return home, sentinel, archive, index  # type: ignore[return-value]


def test_planted_state_of_every_kind_is_the_users_data_not_jdrs(scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home, sentinel, archive, index = scene
    # 1. The old fixed name, user-owned, with a forged journal naming the sentinel and a tmp-file link.
    legacy = home / ".jdr-restore"
    (legacy / f"staging-{'x'}").mkdir(parents=True)
    (legacy / "staging-x" / "pwned").write_text("moved in by root?\n")
    (legacy / "journal.json").write_text(_forged_journal(str(sentinel)))
    os.symlink(sentinel / "keep", legacy / "journal.json.tmp")
    # 2. The new name, user-owned 0700, with a journal of the right format and a staging to move in.
    fake = home / ".jdr-restore-0123456789abcdef"
    (fake / "staging").mkdir(parents=True)
    (fake / "staging" / "pwned").write_text("x")
    (fake / "journal.json").write_text(restore_state.Journal("x", "full", "move-in", {
        "mode": 0o777, "uid": 0, "gid": 0, "atime_ns": 0, "mtime_ns": 0}).to_json().decode())
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), 1000, 100)
    os.chmod(fake, 0o700)
    # 3. The new name as a link to a root-owned 0700 directory outside, holding a genuine-looking state.
    outside_state = tmp_path / "outside-state"
    (outside_state / "staging").mkdir(parents=True, mode=0o700)
    os.chmod(outside_state, 0o700)
    (outside_state / "staging" / "pwned").write_text("x")
    (outside_state / "journal.json").write_text(restore_state.Journal("x", "full", "move-in", {
        "mode": 0o755, "uid": 0, "gid": 0, "atime_ns": 0, "mtime_ns": 0}).to_json().decode())
    os.symlink(outside_state, home / ".jdr-restore-aaaaaaaaaaaaaaaa")
    outside_before = snapshot_tree(outside_state)
    before = sentinel_state(sentinel)

    assert unfinished_restore(home) is None  # none of them counts as jdr's
    assert recover(home) is False
    result = restore(home, archive, index)
    assert sentinel_state(sentinel) == before
    assert snapshot_tree(outside_state) == outside_before
    assert not (home / "pwned").exists()
    st = os.stat(home)
    assert (st.st_uid, st.st_mode & 0o777) == (1000, 0o755)
    # A full restore: the planted entries were the user's, so they are kept for the user, untouched.
    kept = Path(result.previous or "")
    assert (kept / ".jdr-restore" / "journal.json").read_text() == _forged_journal(str(sentinel))
    assert os.readlink(kept / ".jdr-restore" / "journal.json.tmp") == str(sentinel / "keep")
    assert (kept / ".jdr-restore-0123456789abcdef" / "staging" / "pwned").read_text() == "x"
    assert os.readlink(kept / ".jdr-restore-aaaaaaaaaaaaaaaa") == str(outside_state)


def test_malformed_journal_is_a_clear_error(scene) -> None:  # type: ignore[no-untyped-def]
    home, _, archive, index = scene
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with restore_state.create(fd) as state:
            restore_state.fsops.write_new_file(restore_state.JOURNAL, state.fd, b"{not json")
            name = state.name
    finally:
        os.close(fd)
    with pytest.raises(DeploymentError, match=r"restore journal .*journal.json is malformed \(not JSON\)"):
        restore(home, archive, index)
    assert unfinished_restore(home) == name
    with pytest.raises(DeploymentError, match="interrupted restore"):
        backup_tree(home, None, "run", "k")  # type: ignore[arg-type]  # refused before the repository is used


@pytest.mark.parametrize("raw", [
    b'{"format": "jdr-restore-journal", "version": 1, "run": "r", "mode": "full", "phase": "move-in"}',
    b'{"format": "jdr-restore-journal", "version": 1, "run": "r", "mode": "../../etc", "phase": "move-in",'
    b' "root_attrs": {"mode": 0, "uid": 0, "gid": 0, "atime_ns": 0, "mtime_ns": 0}}',
    b'{"format": "jdr-restore-journal", "version": 1, "run": "r", "mode": "full", "phase": "move-in",'
    b' "root_attrs": {"mode": "0", "uid": 0, "gid": 0, "atime_ns": 0, "mtime_ns": 0}}',
    b'{"format": "jdr-restore-journal", "version": 2}', b"[]", b"\xff\xfe",
])
def test_journal_validation(raw: bytes) -> None:
    with pytest.raises(DeploymentError, match="malformed"):
        restore_state.parse_journal(raw, "j")


@pytest.mark.parametrize("point,after", [("restore-move-out", 2), ("restore-move-in", 1), ("restore-handover", 0)])
def test_rerun_after_a_kill_never_overwrites_what_was_kept(tmp_path: Path, point: str, after: int) -> None:
    home = small_home(tmp_path / "home")
    archive, index = archive_tree(home)
    expected = as_restored(home_tree(home))
    damage(home)
    (home / "data" / "table.csv").write_text("newer work, first version\n")
    damaged = home_tree(home, root_mtime=False)

    calls: list[str] = []

    def kill(at: str, _progress: int) -> None:  # at the (after+1)-th time the engine reaches the point
        calls.append(at)
        if at == point and calls.count(point) > after:
            raise Killed(at)

    testhooks.set_listener(kill)
    try:
        with pytest.raises(Killed):
            restore(home, archive, index)
    finally:
        testhooks.set_listener(None)
    assert len(journals(home)) == 1 or point == "restore-handover"
    # The user (or their server) writes again, under names the killed restore had already moved aside.
    if not (home / "data").exists():
        (home / "data").mkdir()
    if (home / "data").is_dir():
        (home / "data" / "table.csv").unlink(missing_ok=True)
        (home / "data" / "table.csv").write_text("newer work, second version\n")
    (home / "README.md").write_text("recreated by the user\n")

    result = restore(home, archive, index)  # finishes the killed one, then restores again
    got = home_tree(home)
    assert {k: v for k, v in got.items() if k != b"."} == {k: v for k, v in expected.items() if k != b"."}
    assert state_dirs(home) == [] and result.previous is not None
    # Every version the user had is somewhere in the kept copies, none overwritten.
    texts = sorted(p.read_text() for k in kept_copies(home) for p in k.rglob("*")
                   if p.is_file() and not p.is_symlink() and p.name.startswith(("table.csv", "README.md")))
    assert "newer work, first version\n" in texts
    assert "newer work, second version\n" in texts
    assert "recreated by the user\n" in texts
    assert damaged[b"notebooks/new.ipynb"]  # and the file made after the backup:
    assert any((k / "notebooks" / "new.ipynb").exists() for k in kept_copies(home))
    assert aside(home) == kept_copies(home)


def test_kept_copies_are_the_users_and_never_reused(scene) -> None:  # type: ignore[no-untyped-def]
    home, _, archive, index = scene
    names = []
    for _ in range(3):
        (home / "README.md").write_text("changed again\n")
        result = restore(home, archive, index)
        assert result.previous is not None
        names.append(Path(result.previous).name)
    assert len(set(names)) == 3
    for k in kept_copies(home):
        st = k.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 100, 0o700)
        assert (k / "README.md").read_text() == "changed again\n"
