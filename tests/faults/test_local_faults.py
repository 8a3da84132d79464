"""Faults on a local sandbox hub, through the real CLI: storage errors mid-upload (a fault proxy in front
of SeaweedFS), jdr killed (SIGKILL) at named points of a backup and of a restore (the test hook of
dr/util/testhooks.py), and full disks under a restore and under a ``file://`` repository.

Each test ends by checking that nothing committed is wrong (every artifact a manifest names is there
with its size and SHA-256: ``jdr verify``) and that nothing a restore was replacing is lost."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faultproxy import FaultProxy, Rule
from tests.fixtures.homes import as_restored
from tests.fixtures.s3 import S3Server
from tests.fixtures.sandbox import Sandbox, describe
from tests.restoreutil import aside as aside_dirs
from tests.restoreutil import home_tree, journals, kept_copies, stagings, state_dirs
from tests.treeutil import snapshot_tree, tree_diff

pytestmark = pytest.mark.faults

MiB = 1 << 20


def tree(path: Path, *, root_mtime: bool = True) -> dict[bytes, dict[str, Any]]:
    return home_tree(path, root_mtime=root_mtime)


def assert_same(a: dict[bytes, Any], b: dict[bytes, Any]) -> None:
    assert a == b, "\n".join(tree_diff(a, b)[:40])


def big_home(sb: Sandbox, user: str = "bob", size: int = 12 * MiB) -> None:
    """Random (incompressible) data, so that the archive is larger than one S3 part."""
    path = sb.home(user) / "data" / "big.bin"
    path.write_bytes(os.urandom(size))
    os.chown(path, 1000, 100)


def verify_all(sb: Sandbox) -> dict[str, Any]:
    doc = sb.jdr_json("verify")
    assert doc["ok"] is True, doc
    return doc


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# --- storage errors mid-upload ------------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.parametrize("repo_url", ["s3"], indirect=True)
def test_persistent_upload_part_failure_fails_that_item_and_commits_nothing_partial(
        sandbox: Sandbox, s3_server: S3Server) -> None:
    big_home(sandbox)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        sandbox.write_config(repository={"url": sandbox.repo_url, "endpoint_url": proxy.url})
        # Every part of bob's volume archive fails, on every retry.
        rule = proxy.add(Rule(method="PUT", query="partNumber=", path="/volumes/bob-", status=500,
                              code="InternalError", times=None))
        doc = sandbox.jdr_json("backup", code=1)
        assert rule.fired >= 2
    sandbox.write_config()  # straight to SeaweedFS again
    assert doc["status"] == "partial"
    by_user = {v["user"]: v for v in doc["manifest"]["volumes"]}
    assert by_user["bob"]["status"] == "failed" and by_user["bob"]["archive"] is None
    assert all(v["status"] == "ok" for u, v in by_user.items() if u != "bob")
    run = doc["run"]
    # The committed manifest names only what is there, whole: bob's archive is not in the repository.
    assert [r["id"] for r in sandbox.jdr_json("list")] == [run]
    assert verify_all(sandbox)["checked"] == 1 + 2 * 3
    assert not [k for k in sandbox.keys(f"data/{run}/") if "/volumes/bob-" in k]
    assert sandbox.incomplete_uploads() == []
    # The next run backs bob up.
    again = sandbox.jdr_json("backup")
    assert next(v for v in again["manifest"]["volumes"] if v["user"] == "bob")["status"] == "ok"


# --- a backup killed ------------------------------------------------------------------------------------


@pytest.mark.parametrize("point,after", [("artifact-upload", 9 * MiB), ("backup-commit", 0)])
def test_a_killed_backup_leaves_no_run_and_prune_cleans_up(sandbox: Sandbox, point: str,
                                                                   after: int) -> None:
    big_home(sandbox)
    sandbox.kill_at(point, "backup", after=after)
    assert sandbox.jdr_json("list") == []
    locks = sandbox.keys("locks/")
    assert len(locks) == 1  # the dead process's lock
    dead = {k.split("/")[1] for k in sandbox.keys("data/")}
    assert len(dead) == 1  # the hub DB (and alice's archive) were written before the kill
    (dead_run,) = dead
    if point == "artifact-upload":
        assert sandbox.incomplete_uploads() != []  # bob's archive, half uploaded

    proc = sandbox.run_jdr("--json", "backup")
    assert proc.returncode == 0, describe(proc)
    assert "breaking stale lock" in proc.stderr and "pid" in proc.stderr


    doc = json.loads(proc.stdout)
    assert doc["status"] == "complete"
    # A backup deletes nothing but its own lock (docs/CREDENTIALS.md): the leftovers are prune's.
    assert sandbox.keys(f"data/{dead_run}/") != []
    pruned = sandbox.run_jdr("prune")
    assert pruned.returncode == 0, describe(pruned)
    assert f"removed what runs that never completed left: {dead_run}" in pruned.stdout
    assert sandbox.keys(f"data/{dead_run}/") == []
    assert sandbox.incomplete_uploads() == []
    assert sandbox.keys("locks/") == []
    assert [r["id"] for r in sandbox.jdr_json("list")] == [doc["run"]]
    verify_all(sandbox)


# --- a restore killed -----------------------------------------------------------------------------------


def _damage(home: Path) -> None:
    (home / "notebooks" / "analysis.ipynb").unlink()
    (home / "secret.key").write_bytes(b"changed after the backup\n")
    (home / "after-backup.txt").write_text("new\n")


def _kept(home: Path) -> list[Path]:
    return aside_dirs(home)


def _union(home: Path) -> dict[bytes, dict[str, Any]]:
    """Entries in place and entries kept aside, as one tree (each must be in exactly one place)."""
    here = tree(home, root_mtime=False)
    for kept in _kept(home):
        aside = {k: v for k, v in snapshot_tree(kept).items() if k != b"."}
        for path, rec in aside.items():
            if rec["type"] == "dir" and path in here and here[path]["type"] == "dir":
                continue  # a directory merged into: its own entries are accounted for one by one
            assert path not in here, f"{path!r} both in place and kept aside"
            here[path] = rec
    return here


def test_restore_killed_during_extraction_leaves_the_home_intact(sandbox: Sandbox) -> None:
    home = sandbox.home("alice")
    at_backup = tree(home)
    first = sandbox.jdr_json("backup")["run"]
    _damage(home)
    before = tree(home, root_mtime=False)

    sandbox.kill_at("restore-extract", "restore", "--user", "alice", "--yes", after=5)
    assert_same(tree(home, root_mtime=False), before)
    assert _kept(home) == []  # nothing was swapped
    assert journals(home) == [] and len(stagings(home)) == 1

    # A backup now is whole: the killed restore's staging is jdr's state, left out; the home is intact.
    doc = sandbox.jdr_json("backup", "--user", "alice")
    (vol,) = doc["manifest"]["volumes"]
    assert vol["status"] == "ok" and vol["files"] > 0

    doc = sandbox.jdr_json("restore", "--user", "alice", "--run", first, "--yes")
    assert doc["status"] == "done"
    assert_same(tree(home), as_restored(at_backup))
    assert state_dirs(home) == []  # the killed one's state was removed
    (kept,) = _kept(home)
    assert (kept / "after-backup.txt").exists() and (kept / "secret.key").read_bytes() == b"changed after the backup\n"


@pytest.mark.parametrize("point,after", [("restore-move-out", 4), ("restore-move-in", 0)])
def test_restore_killed_during_the_swap_loses_nothing_and_a_rerun_finishes(sandbox: Sandbox, point: str,
                                                                           after: int) -> None:
    home = sandbox.home("alice")
    at_backup = tree(home)
    first = sandbox.jdr_json("backup")["run"]
    _damage(home)
    before = tree(home, root_mtime=False)

    sandbox.kill_at(point, "restore", "--user", "alice", "--yes", after=after)
    assert len(journals(home)) == 1

    # A backup meeting the half-swapped home records it as failed, saying why (issue #9 item 6: it used
    # to commit it as "ok" with the entries that sat in .jdr-restore/ left out).
    proc = sandbox.run_jdr("--json", "backup")
    assert proc.returncode == 1, describe(proc)
    vols = {v["user"]: v for v in json.loads(proc.stdout)["manifest"]["volumes"]}
    assert vols["alice"]["status"] == "failed"
    assert "interrupted restore" in vols["alice"]["error"] and "jdr restore" in proc.stderr
    assert all(v["status"] == "ok" for u, v in vols.items() if u != "alice")
    # Every original entry is either still in place or kept aside, unchanged.
    union = _union(home)
    for path, rec in before.items():
        if path == b".":
            continue
        assert path in union, f"{path!r} lost"
        if not (rec["type"] == "dir" and union[path]["type"] == "dir"):
            assert union[path] == rec, path

    # The next restore first finishes the interrupted one (roll forward), then does its own.
    proc = sandbox.run_jdr("restore", "--user", "alice", "--run", first, "--yes")
    assert proc.returncode == 0, describe(proc)
    assert "finishing an interrupted restore" in proc.stderr
    assert_same(tree(home), as_restored(at_backup))
    assert state_dirs(home) == []
    first_kept = kept_copies(home)[0]
    assert (first_kept / "after-backup.txt").read_text() == "new\n"
    assert (first_kept / "secret.key").read_bytes() == b"changed after the backup\n"


# --- full disks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_disk_full_on_restore_keeps_the_old_home_and_no_staging(sandbox: Sandbox) -> None:
    big_home(sandbox, "alice", 6 * MiB)
    sandbox.jdr_json("backup")
    bob = sandbox.home("bob")
    with tmpfs(sandbox.root / "bob-saved", "8m") as saved:
        subprocess.run(["cp", "-a", f"{bob}/.", str(saved)], check=True)
        with tmpfs(bob, "4m"):
            subprocess.run(["cp", "-a", f"{saved}/.", str(bob)], check=True)
            before = tree(bob)
            proc = sandbox.run_jdr("--json", "restore", "--user", "alice", "--as", "bob", "--yes")
            assert proc.returncode == 3, describe(proc)
            assert "no space left" in proc.stdout + proc.stderr
            assert_same(tree(bob), before)
            assert state_dirs(bob) == [] and sorted(os.listdir(bob)) == sorted(os.listdir(saved))
            assert os.statvfs(bob).f_bfree * os.statvfs(bob).f_frsize > 3 * MiB  # staging was removed


def test_disk_full_on_a_file_repository(make_sandbox: Any, tmp_path: Path) -> None:
    repo_dir = tmp_path / "small-repo"
    with tmpfs(repo_dir, "2m"):
        sb = make_sandbox(f"file://{repo_dir}")
        big_home(sb, "bob", 3 * MiB)
        proc = sb.run_jdr("--json", "backup")
        assert proc.returncode in (1, 3), describe(proc)
        assert "no space left" in proc.stdout + proc.stderr
        runs = sb.jdr_json("list")
        if proc.returncode == 3:
            assert runs == []
        else:  # what fitted was committed, bob failed: every artifact the manifest names is whole
            assert [r["status"] for r in runs] == ["partial"]
            verify_all(sb)
        assert sb.incomplete_uploads() == []
        # Room again: the next run succeeds, and prune removes what the failed one left.
        (sb.home("bob") / "data" / "big.bin").unlink()
        doc = sb.jdr_json("backup")
        assert doc["status"] == "complete"
        sb.jdr_json("prune")
        verify_all(sb)
        committed = {r["id"] for r in sb.jdr_json("list")}
        assert {k.split("/")[1] for k in sb.keys("data/")} <= committed


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_a_full_repository_commits_no_manifest(sandbox: Sandbox, tmp_path: Path) -> None:
    repo_dir = tmp_path / "full-repo"
    with tmpfs(repo_dir, "1m"):
        sandbox.repo_url = f"file://{repo_dir}"
        sandbox.write_config()
        fd = os.open(repo_dir / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        proc = sandbox.run_jdr("--json", "backup")
        assert proc.returncode == 3, describe(proc)
        assert "no space left" in proc.stdout + proc.stderr
        assert not (repo_dir / "runs").exists() or not list((repo_dir / "runs").iterdir())
        assert sandbox.incomplete_uploads() == []
