"""A batch mover of static homes mounts the whole shared volume: the attacks a home's owner can try there.

alice replaces her home directory with a symlink to bob's (or to ``/``), or a parent directory of the homes
is a link: her item fails alone (nothing of bob's or of the mover's file system is archived), bob's home is
archived. A swap *after* the home was opened changes nothing: the home is read through its descriptor.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dr.archive.index import load_index
from dr.deployments.kubernetes import agent
from dr.deployments.kubernetes.safe_home import HomeRefused, fd_path, open_home
from dr.model import Artifact, new_run_id
from dr.repository.artifacts import drain
from dr.repository.file import FileStore
from dr.repository.repository import Repository
from dr.util.timefmt import utcnow


def names(repo: Repository, result: dict) -> list[bytes]:
    with repo.open_artifact(Artifact.from_dict(result["index"])) as raw:
        found = sorted(load_index(raw))
        drain(raw)
    return found


def shared_volume(tmp_path: Path) -> Path:
    root = tmp_path / "shared"
    for user in ("alice", "bob"):
        (root / "homes" / user).mkdir(parents=True)
        (root / "homes" / user / f"{user}.txt").write_text(f"{user}'s\n")
    (root / "homes" / "bob" / "secret.txt").write_text("only bob\n")
    return root


def test_a_home_replaced_by_a_link_to_a_sibling_or_to_root_fails_alone(tmp_path):
    repo = Repository.open(FileStore(tmp_path / "repo"), create=True)
    root = shared_volume(tmp_path)
    (root / "homes" / "alice").rename(root / "homes" / "alice.old")
    (root / "homes" / "alice").symlink_to("bob")
    (root / "homes" / "carol").symlink_to("/")
    (root / "links").symlink_to("homes")  # a parent of the homes that is a link
    (root / "homes" / "dave").write_text("a file, not a home\n")
    homes = [("alice", root, "homes/alice", None), ("bob", root, "homes/bob", None),
             ("carol", root, "homes/carol", None), ("bob-via-link", root, "links/bob", None),
             ("dave", root, "homes/dave", None), ("up", root, "homes/../homes/bob", None),
             ("gone", root, "homes/erin", None)]
    out = agent.backup_volumes(repo, run=new_run_id(utcnow()), volumes=[], homes=homes, excludes=(), level=1,
                               threads=1)
    results = out["volumes"]
    for key in ("alice", "carol", "bob-via-link", "dave", "up", "gone"):
        assert results[key]["status"] == "failed" and not results[key].get("archive"), (key, results[key])
    assert "symlink" in results["alice"]["error"] and "homes/alice" in results["alice"]["error"]
    assert "symlink" in results["bob-via-link"]["error"]
    assert results["bob"]["status"] == "ok", results["bob"]
    assert names(repo, results["bob"]) == [b".", b"bob.txt", b"secret.txt"]


def test_a_link_inside_a_home_is_archived_as_a_link(tmp_path):
    repo = Repository.open(FileStore(tmp_path / "repo"), create=True)
    root = shared_volume(tmp_path)
    (root / "homes" / "alice" / "everything").symlink_to("/")
    (root / "homes" / "alice" / "bobs").symlink_to("../bob")
    out = agent.backup_volumes(repo, run=new_run_id(utcnow()), volumes=[], excludes=(), level=1, threads=1,
                               homes=[("alice", root, "homes/alice", None)])
    res = out["volumes"]["alice"]
    assert res["status"] == "ok", res
    assert names(repo, res) == [b".", b"alice.txt", b"bobs", b"everything"]  # nothing of / nor of bob's


def test_a_swap_after_the_open_still_reads_the_home_that_was_opened(tmp_path):
    repo = Repository.open(FileStore(tmp_path / "repo"), create=True)
    root = shared_volume(tmp_path)
    fd = open_home(root, "homes/alice")
    try:  # alice swaps her home for a link to bob's between the check and the read
        (root / "homes" / "alice").rename(root / "homes" / "alice.old")
        (root / "homes" / "alice").symlink_to("bob")
        res = agent.backup_volume(repo, run=new_run_id(utcnow()), key="alice", root=fd_path(fd), excludes=(),
                                  level=1, threads=1, previous_fingerprint=None)
    finally:
        os.close(fd)
    assert res["status"] == "ok", res
    assert names(repo, res) == [b".", b"alice.txt"]
    with pytest.raises(HomeRefused):
        os.close(open_home(root, "homes/alice"))


def test_a_restore_from_a_snapshot_never_copies_a_home_that_was_a_link(tmp_path):
    """In the snapshot, alice's home was a link to bob's: restoring alice from it is refused (never bob's
    files in alice's home), and a real home copies."""
    snap = shared_volume(tmp_path)
    (snap / "homes" / "alice").rename(snap / "homes" / "alice.old")
    (snap / "homes" / "alice").symlink_to("bob")
    target = tmp_path / "alice-now"
    target.mkdir()
    with pytest.raises(HomeRefused):
        agent.copy_home(source=snap, sub="homes/alice", root=target, run=new_run_id(utcnow()), paths=(),
                        into=None, keep_previous=False)
    assert list(target.iterdir()) == []
    res = agent.copy_home(source=snap, sub="homes/bob", root=target, run=new_run_id(utcnow()), paths=(),
                          into=None, keep_previous=False)
    assert res["status"] == "ok", res
    assert sorted(p.name for p in target.iterdir()) == ["bob.txt", "secret.txt"]
