"""Property tests (Hypothesis) of the extractor and the swap, issue #9.

Random trees with every kind of entry — files (some sparse), directories, symlinks (absolute, relative,
leaving the tree, dangling), hard links, FIFOs — under odd names (any bytes but ``/`` and NUL, not UTF-8
either) are archived as a backup does; a random *other* tree stands for the home's current contents, with
links to a sentinel tree planted where the archive has directories; and, in the second property, random
acts of the user at the engine's pause points (directories swapped for links to the sentinel, names
re-created, jdr's state swapped). On every example:

- nothing outside the target changed (the sentinel beside it, with its root's own attributes);
- without acts during the restore, the home equals the archive's tree exactly (setuid/setgid cleared);
  with them, a restore after the user stops gives exactly the archive's tree, and nothing the home held
  was lost (every file's content is in the home or a kept copy).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dr.errors import JdrError
from dr.util import testhooks
from tests.fixtures.homes import as_restored
from tests.restoreutil import archive_tree, home_tree, kept_copies, make_sentinel, restore, sentinel_state, state_dirs
from tests.treeutil import file_sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="restores as root, like production")

SETTINGS = settings(max_examples=20, deadline=None, derandomize=False, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])  # _fresh() resets it

_name_bytes = st.binary(min_size=1, max_size=12).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
names = st.one_of(st.sampled_from([b"a", b"notebooks", b"data", b".ipynb_checkpoints", b"caf\xe9",
                                   "Émile".encode(), b"env", b"-x", b" sp ace", b".jdr-restore"]), _name_bytes)


@dataclass(frozen=True)
class Node:
    kind: str  # file, sparse, dir, symlink, hardlink, fifo
    data: bytes = b""
    target: bytes = b""
    mode: int = 0o644
    children: tuple[tuple[bytes, Node], ...] = ()


def _link_targets(sentinel_hint: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.sampled_from([b"/opt/conda/envs/py", b"/srv/shared", b"../../../outside", b"a",
                                      b"notebooks/x", b"/proc/999999999/gone", sentinel_hint, b"."]),
                     names)


def trees(sentinel_hint: bytes) -> st.SearchStrategy[Node]:
    leaf = st.one_of(
        st.builds(lambda d, m: Node("file", data=d, mode=m), st.binary(max_size=300),
                  st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o2755, 0o444])),
        st.builds(lambda d: Node("sparse", data=d), st.binary(min_size=1, max_size=64)),
        st.builds(lambda t: Node("symlink", target=t), _link_targets(sentinel_hint)),
        st.just(Node("hardlink")),
        st.just(Node("fifo")),
    )

    def dirs(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        return st.builds(lambda kids, m: Node("dir", mode=m, children=tuple(kids.items())),
                         st.dictionaries(names, children, max_size=5),
                         st.sampled_from([0o755, 0o700, 0o2775, 0o555]))

    return st.builds(lambda kids: Node("dir", mode=0o755, children=tuple(kids.items())),
                     st.dictionaries(names, st.recursive(leaf, dirs, max_leaves=12), max_size=6))


def build(root: bytes, node: Node, uid: int = 1000, gid: int = 100) -> None:
    """Make ``node`` (a directory) at ``root``; hard links point to the first regular file made."""
    first_file: list[bytes] = []
    dirs: list[tuple[bytes, int]] = []

    def make(path: bytes, n: Node) -> None:
        if n.kind == "dir":
            os.mkdir(path, 0o700)
            for name, child in n.children:
                make(os.path.join(path, name), child)
            dirs.append((path, n.mode))
        elif n.kind in ("file", "sparse"):
            with open(path, "wb") as f:
                if n.kind == "sparse":
                    f.seek(1 << 20)
                f.write(n.data)
            os.chown(path, uid, gid)
            os.chmod(path, n.mode)
            first_file.append(path)
        elif n.kind == "symlink":
            os.symlink(n.target, path)
            os.lchown(path, uid, gid)
        elif n.kind == "hardlink":
            if first_file:
                os.link(first_file[0], path)
            else:
                with open(path, "wb") as f:
                    f.write(b"no file to link to")
                os.chown(path, uid, gid)
        elif n.kind == "fifo":
            os.mkfifo(path)
            os.chown(path, uid, gid)

    os.mkdir(root, 0o755)
    for name, child in node.children:
        make(os.path.join(root, name), child)
    for path, mode in [*dirs, (root, 0o755)]:
        os.chown(path, uid, gid)
        os.chmod(path, mode)


def plant(home: Path, archived: dict[bytes, dict[str, object]], sentinel: Path, picks: list[int]) -> None:
    """Where the archive has a directory, make the home hold a link to the sentinel (or to inside it)."""
    dirs = sorted(p for p, rec in archived.items() if rec["type"] == "dir" and p != b".")
    for i in picks:
        if not dirs:
            return
        rel = dirs[i % len(dirs)]
        full = os.path.join(os.fsencode(home), rel)
        parent = os.path.dirname(full)
        if not os.path.isdir(parent) or os.path.islink(parent):
            continue
        if os.path.lexists(full):
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
        os.symlink(sentinel if i % 2 else sentinel / "sub", full)


@pytest.fixture
def place() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="jdr-prop-"))
    try:
        yield base
    finally:
        testhooks.set_listener(None)
        shutil.rmtree(base, ignore_errors=True)


def _fresh(place: Path) -> tuple[Path, Path, Path]:
    for p in place.iterdir():  # what the previous example left (root needs no permission to delete)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return place / "src", place / "home", make_sentinel(place / "sentinel")


def _archived(src: Path) -> dict[bytes, dict[str, object]]:
    """What a restore of ``src`` must give: its tree without FIFOs (never archived), privileges cleared."""
    return {k: v for k, v in as_restored(home_tree(src)).items() if v["type"] != "other"}


def _contents(root: Path) -> set[str]:
    out = set()
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.isfile(p) and not os.path.islink(p):
                out.add(file_sha256(os.fsencode(p)))
    return out


@SETTINGS
@given(data=st.data())
def test_restore_gives_the_archive_exactly_and_touches_nothing_outside(place: Path, data: st.DataObject) -> None:
    src, home, sentinel = _fresh(place)
    hint = os.fsencode(sentinel)
    build(os.fsencode(src), data.draw(trees(hint), label="archived tree"))
    archive, index = archive_tree(src)
    expected = _archived(src)
    build(os.fsencode(home), data.draw(trees(hint), label="current home"))
    plant(home, home_tree(src), sentinel, data.draw(st.lists(st.integers(0, 50), max_size=3), label="plants"))
    paths = data.draw(st.sampled_from([(), ("*",)]), label="paths")
    before = sentinel_state(sentinel)
    had = _contents(home)

    restore(home, archive, index, paths=paths)

    assert sentinel_state(sentinel) == before
    assert state_dirs(home) == []
    got = home_tree(home)
    if not paths:
        assert got == expected
    else:  # a merge: every archived entry is there as archived (directories merged into keep extras)
        for rel, rec in expected.items():
            if rel == b".":
                continue
            assert rel in got, rel
            if rec["type"] != "dir":
                assert got[rel] == rec, rel
    kept = set().union(*(_contents(k) for k in kept_copies(home))) if kept_copies(home) else set()
    assert had <= _contents(home) | kept  # nothing the home held is lost


_ACTS = st.lists(st.tuples(st.sampled_from(["restore-move-out", "restore-merge-dir", "restore-move-in",
                                            "restore-handover"]),
                           st.integers(0, 6), st.sampled_from(["swap-dir", "plant-link", "swap-state",
                                                               "recreate"])), max_size=4)


@SETTINGS
@given(data=st.data())
def test_user_acts_during_the_swap_never_reach_outside(place: Path, data: st.DataObject) -> None:
    src, home, sentinel = _fresh(place)
    hint = os.fsencode(sentinel)
    build(os.fsencode(src), data.draw(trees(hint), label="archived tree"))
    archive, index = archive_tree(src)
    expected = _archived(src)
    build(os.fsencode(home), data.draw(trees(hint), label="current home"))
    acts = data.draw(_ACTS, label="acts")
    names_seen = sorted(p for p in home_tree(src) if b"/" not in p and p != b".")
    before = sentinel_state(sentinel)
    counts: dict[str, int] = {}

    def act(point: str, _progress: int) -> None:
        counts[point] = counts.get(point, 0) + 1
        for at, nth, what in acts:
            if at != point or counts[point] != nth + 1:
                continue
            entries = sorted(os.listdir(os.fsencode(home)))
            try:
                if what == "swap-dir":
                    for e in entries:
                        full = os.path.join(os.fsencode(home), e)
                        if os.path.isdir(full) and not os.path.islink(full) and not e.startswith(b".jdr-restore-"):
                            os.rename(full, full + b".moved")
                            os.symlink(sentinel, full)
                            break
                elif what == "plant-link" and names_seen:
                    full = os.path.join(os.fsencode(home), names_seen[nth % len(names_seen)])
                    if not os.path.lexists(full):
                        os.symlink(sentinel, full)
                elif what == "swap-state":
                    for e in entries:
                        if e.startswith(b".jdr-restore-"):
                            full = os.path.join(os.fsencode(home), e)
                            os.rename(full, full + b".away")
                            os.symlink(sentinel, full)
                elif what == "recreate" and names_seen:
                    full = os.path.join(os.fsencode(home), names_seen[nth % len(names_seen)])
                    if not os.path.lexists(full):
                        with open(full, "wb") as f:
                            f.write(b"re-created by the user")
            except OSError:
                pass

    testhooks.set_listener(act)
    try:
        restore(home, archive, index)
    except JdrError:
        pass  # refused: fine, as long as nothing outside changed
    finally:
        testhooks.set_listener(None)
    assert sentinel_state(sentinel) == before

    # The user stops; their links are theirs to remove; a restore then gives exactly the archive's tree.
    for e in os.listdir(os.fsencode(home)):
        full = os.path.join(os.fsencode(home), e)
        if os.path.islink(full) and os.readlink(full) == hint:
            os.unlink(full)
    restore(home, archive, index)
    assert home_tree(home) == expected
    assert sentinel_state(sentinel) == before
    assert not any(stat.S_ISLNK(os.lstat(p).st_mode) for p in state_dirs(home))
