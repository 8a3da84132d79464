"""Issue #9 item 2: the swap never follows a link the user planted, whenever they plant it.

The user owns the home and may swap a directory for a symlink (to a sentinel tree outside the home)
between any two system calls of the restore. The attacks are driven at exact points of the engine (its
pause hooks, ``dr.util.testhooks.set_listener``) and, last, by a concurrent process running as a real
unprivileged user that keeps swapping directories for links during a whole restore. The invariant every
time: the sentinel tree (and /etc/passwd) is byte- and metadata-identical afterwards, and the home ends
up as the archive says (or the restore is refused with a clear error and nothing outside changed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dr.errors import JdrError, UsageError
from dr.util import testhooks
from tests.fixtures.homes import as_restored
from tests.restoreutil import (
    User,
    archive_tree,
    home_tree,
    kept_copies,
    make_sentinel,
    open_base,  # noqa: F401  (fixture)
    restore,
    sentinel_state,
    state_dirs,
    unprivileged_user,  # noqa: F401  (fixture)
)
from tests.treeutil import snapshot_tree, tree_diff


@pytest.fixture
def listener() -> Iterator[Callable[[Callable[[str, int], None]], None]]:
    """Install a pause-point listener for the test; removed afterwards."""
    yield testhooks.set_listener
    testhooks.set_listener(None)


def small_home(home: Path, uid: int = 1000, gid: int = 100) -> Path:
    (home / "notebooks" / "sub").mkdir(parents=True)
    (home / "data").mkdir()
    for rel, text in {"notebooks/a.ipynb": "{}", "notebooks/b.ipynb": "{\"b\": 1}",
                      "notebooks/sub/c.py": "print(1)\n", "data/table.csv": "1,2\n", "README.md": "hi\n"}.items():
        (home / rel).write_text(text)
    os.symlink("/srv/shared", home / "shared")
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)
    os.chown(home, uid, gid)
    return home


def damage(home: Path) -> None:
    (home / "notebooks" / "a.ipynb").write_text("changed")
    (home / "notebooks" / "new.ipynb").write_text("new")
    (home / "README.md").unlink()


def swap_for_link(home: Path, rel: str, target: Path) -> None:
    """What the user does: move the real directory away and put a symlink in its place."""
    os.rename(home / rel, home / (rel + ".moved"))
    os.symlink(target, home / rel)


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path, bytes, dict[bytes, object]]:
    home = small_home(tmp_path / "home")
    sentinel = make_sentinel(tmp_path / "sentinel")
    archive, index = archive_tree(home)
    damage(home)
    return home, sentinel, archive, index  # type: ignore[return-value]


@pytest.mark.parametrize("paths", [(), ("notebooks/*",)], ids=["full", "paths"])
@pytest.mark.parametrize("point", ["restore-merge-dir", "restore-move-in"])
def test_directory_swapped_for_a_link_at_an_exact_point(scene, listener, point: str,  # type: ignore[no-untyped-def]
                                                        paths: tuple[str, ...]) -> None:
    home, sentinel, archive, index = scene
    before = sentinel_state(sentinel)
    done: list[str] = []

    def attack(at: str, _progress: int) -> None:
        # The first time the engine reaches the point: notebooks/ in the home becomes a link to the
        # sentinel (swapped for one, or, after a full restore's move-out emptied the home, planted).
        if at != point or done:
            return
        nb = home / "notebooks"
        if nb.is_dir() and not nb.is_symlink():
            swap_for_link(home, "notebooks", sentinel)
        elif not os.path.lexists(nb):
            os.symlink(sentinel, nb)
        else:
            return
        done.append(at)

    listener(attack)
    result = restore(home, archive, index, paths=paths)  # type: ignore[arg-type]
    assert done, f"the engine never reached {point} with notebooks/ in place"
    assert sentinel_state(sentinel) == before, "\n".join(tree_diff(before[0], snapshot_tree(sentinel)))
    if os.path.islink(home / "notebooks"):
        # Swapped after jdr pinned the directory: the restored entries went into that directory (now
        # notebooks.moved, where the user put it), and the user's link is left alone.
        assert os.readlink(home / "notebooks") == str(sentinel)
        assert (home / "notebooks.moved" / "a.ipynb").read_text() == "{}"
    else:
        assert (home / "notebooks" / "a.ipynb").read_text() == "{}"
    assert state_dirs(home) == [] and result.previous is not None
    # The planted link is a link still (kept aside, or in place), never followed; nothing is lost.
    kept = Path(result.previous)
    links = [p for p in [*kept.rglob("*"), home / "notebooks"] if p.is_symlink() and os.readlink(p) == str(sentinel)]
    assert links


def test_merged_directory_swapped_after_its_entries_moved_keeps_modes_off_the_sentinel(scene, listener) -> None:  # type: ignore[no-untyped-def]
    """The old swap chmod/utime'd a merged directory by path after merging it: a link there redirected
    root's mode change. Now attributes go through the descriptor of the directory merged into."""
    home, sentinel, archive, index = scene
    os.chmod(sentinel, 0o700)
    before = sentinel_state(sentinel)
    calls = []

    def attack(at: str, _p: int) -> None:
        calls.append(at)
        if at == "restore-move-in" and not (home / "notebooks").is_symlink() and (home / "notebooks").is_dir():
            swap_for_link(home, "notebooks", sentinel)

    listener(attack)
    restore(home, archive, index, paths=("notebooks/*",))
    assert "restore-move-in" in calls
    assert sentinel_state(sentinel) == before
    assert os.stat(sentinel).st_mode & 0o777 == 0o700


def test_state_directory_replaced_by_a_link_mid_swap(scene, listener) -> None:  # type: ignore[no-untyped-def]
    home, sentinel, archive, index = scene
    before = sentinel_state(sentinel)
    done: list[str] = []

    def attack(at: str, _p: int) -> None:
        if at == "restore-move-in" and not done:
            (state,) = state_dirs(home)
            os.rename(state, home / "elsewhere")
            os.symlink(sentinel, state)
            done.append(state.name)

    listener(attack)
    result = restore(home, archive, index)
    assert done
    assert sentinel_state(sentinel) == before
    assert (home / "notebooks" / "a.ipynb").read_text() == "{}" and result.previous is not None
    assert os.path.islink(home / done[0])  # the user's link, left alone


def test_planted_kept_copy_names_are_never_reused_or_followed(scene, listener) -> None:  # type: ignore[no-untyped-def]
    home, sentinel, archive, index = scene
    before = sentinel_state(sentinel)
    planted = []

    def attack(at: str, _p: int) -> None:
        if at == "restore-handover" and not planted:
            now = time.time()
            for dt in range(-2, 4):
                name = "jdr-replaced-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now + dt))
                os.symlink(sentinel, home / name)
                planted.append(name)

    listener(attack)
    result = restore(home, archive, index)
    assert planted and result.previous is not None
    assert Path(result.previous).name not in planted
    assert all(os.readlink(home / p) == str(sentinel) for p in planted)
    assert sentinel_state(sentinel) == before
    kept = Path(result.previous)
    assert (kept / "notebooks" / "a.ipynb").read_text() == "changed"
    assert kept.stat().st_uid == 1000 and kept.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("into", ["restored", "restored/deeper/x"])
def test_into_through_a_planted_link_is_refused(scene, into: str) -> None:  # type: ignore[no-untyped-def]
    home, sentinel, archive, index = scene
    os.symlink(sentinel, home / "restored")
    before, home_before = sentinel_state(sentinel), snapshot_tree(home)
    with pytest.raises(UsageError, match="restored"):
        restore(home, archive, index, into=into)
    assert sentinel_state(sentinel) == before
    assert snapshot_tree(home) == home_before


def test_into_whose_parent_becomes_a_link_during_extraction_is_refused(scene, listener) -> None:  # type: ignore[no-untyped-def]
    home, sentinel, archive, index = scene
    (home / "restored").mkdir()
    before = sentinel_state(sentinel)

    def attack(at: str, _p: int) -> None:
        if at == "restore-extract" and not (home / "restored").is_symlink():
            os.rmdir(home / "restored")
            os.symlink(sentinel, home / "restored")

    listener(attack)
    with pytest.raises(UsageError, match="symlink"):
        restore(home, archive, index, into="restored/from-backup")
    assert sentinel_state(sentinel) == before
    assert state_dirs(home) == []


_ATTACKER = r'''
import os, sys, time
home, sentinel, stop = sys.argv[1], sys.argv[2], sys.argv[3]
n = 0
while not os.path.exists(stop):
    n += 1
    for rel in ("notebooks", "notebooks/sub", "data"):
        p = os.path.join(home, rel)
        try:
            os.rename(p, p + ".moved")
            os.symlink(sentinel, p)
        except OSError:
            pass
        try:
            os.unlink(p)
            os.rename(p + ".moved", p)
        except OSError:
            pass
    # Whatever jdr keeps at the home's root: swap it for a link, then put it back.
    for name in os.listdir(home):
        if name.startswith(".jdr-restore-") or name.startswith("jdr-replaced-"):
            p = os.path.join(home, name)
            try:
                os.rename(p, p + ".x")
                os.symlink(sentinel, p)
                os.unlink(p)
                os.rename(p + ".x", p)
            except OSError:
                pass
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    try:
        os.symlink(sentinel, os.path.join(home, "jdr-replaced-" + stamp))
    except OSError:
        pass
print(n)
'''


def _system_python() -> str:
    """An interpreter the unprivileged user can run (this venv's may live under root's home)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", sys.executable):
        if os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def test_a_concurrent_unprivileged_user_swapping_directories_for_links(open_base: Path,  # noqa: F811
                                                                        unprivileged_user: User) -> None:  # noqa: F811
    """A process running as the home's owner (a real user, dropped with ``user=``/``group=``) swaps the
    home's directories, jdr's state and kept copies for links to a root-owned sentinel tree, in a loop,
    for the whole of several restores (full and --path). Nothing outside the home changes."""
    user = unprivileged_user
    home = small_home(open_base / "home", user.uid, user.gid)
    sentinel = make_sentinel(open_base / "sentinel")
    archive, index = archive_tree(home)
    expected = as_restored(home_tree(home))
    before = sentinel_state(sentinel)
    stop = open_base / "stop"
    script = open_base / "attacker.py"
    script.write_text(_ATTACKER)
    attacker = subprocess.Popen([_system_python(), str(script), str(home), str(sentinel), str(stop)],
                                user=user.uid, group=user.gid, extra_groups=[], stdout=subprocess.PIPE,
                                text=True)
    outcomes = []
    try:
        time.sleep(0.2)  # the attacker is looping (this wait only makes the attack likelier)
        for paths in [(), ("notebooks/*",), (), ("data/*", "notebooks/sub/*")]:
            try:
                restore(home, archive, index, paths=paths)
                outcomes.append("ok")
            except JdrError as e:  # a home that keeps changing may be refused, never escaped from
                outcomes.append(f"refused: {e}")
    finally:
        stop.touch()
        out, _ = attacker.communicate(timeout=30)
    assert attacker.returncode == 0
    assert int(out.strip()) > 0  # the attacker did run
    assert sentinel_state(sentinel) == before, "\n".join(tree_diff(before[0], snapshot_tree(sentinel)))
    # Once the attacker stops, a restore finishes anything left and gives exactly the archive's home.
    for p in list(home.iterdir()):
        if p.is_symlink() and os.readlink(p) == str(sentinel):
            p.unlink()
    restore(home, archive, index)
    got = home_tree(home)
    got.pop(b".", None)
    exp = dict(expected)
    exp.pop(b".", None)
    assert got == exp, "\n".join(tree_diff(exp, got)[:20])
    assert sentinel_state(sentinel) == before
    assert kept_copies(home)  # what the restores replaced was handed over, not lost
