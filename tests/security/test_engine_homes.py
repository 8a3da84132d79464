"""The realistic-homes corpus (tests/fixtures/homes.py) through ``jdr restore`` and ``jdr drill`` on a local
sandbox hub: conda and shared-data links out of the home, dangling links, notebooks with checkpoints, a
sparse file, names in many scripts, a setuid file, a user's own ``.jdr-restore`` directories. Before
issue #9 such a home backed up "ok" and then failed every restore and drill as a "hostile archive"."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.fixtures.homes import SPARSE_AT, _notebook, as_restored, build_realistic_home
from tests.fixtures.sandbox import Sandbox
from tests.restoreutil import home_tree, kept_copies, state_dirs
from tests.treeutil import tree_diff


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_realistic_home_restores_exactly_and_drills(sandbox: Sandbox, tmp_path: Path) -> None:
    home = sandbox.home("bob")
    shutil.rmtree(home)
    build_realistic_home(home, user="bob")
    for other in Path(sandbox.homes).parent.iterdir():  # the drill checks every notebook of the run
        for nb in other.rglob("*.ipynb"):
            if other != home and nb.is_file() and not nb.is_symlink():
                nb.write_text(_notebook(nb.stem))
    at_backup = home_tree(home)
    outside = build_realistic_home(tmp_path / "outside-home", user="carol")  # a neighbour, never touched
    outside_before = home_tree(outside)
    doc = sandbox.jdr_json("backup")
    (bob,) = [v for v in doc["manifest"]["volumes"] if v["user"] == "bob"]
    assert bob["status"] == "ok" and not bob.get("warnings")
    for own in ("project/.jdr-restore/notes.txt", ".jdr-restore-fedcba9876543210/mine.txt"):
        listed = sandbox.run_jdr("ls", doc["run"], "--user", "bob", own)  # the user's own: backed up
        assert listed.returncode == 0 and own in listed.stdout, listed.stderr

    # The disaster: notebooks and links gone, a file changed.
    shutil.rmtree(home / "notebooks")
    os.unlink(home / "env")
    (home / "names" / "Русский текст.txt").write_text("changed\n")

    doc = sandbox.jdr_json("restore", "--user", "bob", "--yes")
    assert doc["status"] == "done", doc
    expected = as_restored(at_backup)
    got = home_tree(home)
    assert got == expected, "\n".join(tree_diff(expected, got)[:30])
    assert os.readlink(home / "env") == "/opt/conda/envs/py"
    assert os.readlink(home / "shared") == "/srv/shared" and os.readlink(home / "data") == "../../srv/data/bob"
    assert os.stat(home / "bin" / "tool").st_mode & 0o7777 == 0o755  # setuid cleared
    assert os.stat(home / "scratch.img").st_size == SPARSE_AT + 4096
    assert os.stat(home / "scratch.img").st_blocks * 512 < 1 << 20  # still sparse
    assert home_tree(outside) == outside_before
    assert state_dirs(home) == []
    (kept,) = kept_copies(home)
    assert doc["items"][0]["previous"] == str(kept) and kept.stat().st_uid == 1000
    assert (kept / "names" / "Русский текст.txt").read_text() == "changed\n"

    # A drill of the run holding this home passes (links out of the home are data, not a hostile archive).
    sandbox.write_config(drill={"scratch": str(tmp_path / "scratch")})
    proc = sandbox.run_jdr("--json", "drill", timeout=600)
    report = json.loads(proc.stdout)
    vols = {v["label"]: v for v in report["volumes"]}
    assert vols["bob"]["status"] == "ok", json.dumps(vols["bob"], indent=1)
    assert vols["bob"]["files_on_disk"] == vols["bob"]["index_files"]
    assert proc.returncode == 0 and report["ok"], json.dumps(report.get("failures"), indent=1)
