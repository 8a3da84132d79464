"""The hub database swap when the directory holding it is writable by someone else (the hub's own user):
names planted beside the database — the old fixed staging name as a link to a file root must not write,
kept-copy names of this very second — are neither followed nor overwritten."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dr.deployments.hubdb_swap import swap_in_database
from tests.fixtures.hub import build_hub_db
from tests.restoreutil import make_sentinel, sentinel_state


def test_planted_names_beside_the_hub_database(tmp_path: Path) -> None:
    hubdir = tmp_path / "hub"
    hubdir.mkdir()
    target = hubdir / "jupyterhub.sqlite"
    build_hub_db(target, ["alice"])
    target.with_name(target.name + "-wal").write_bytes(b"old wal")
    new = tmp_path / "new.sqlite"
    build_hub_db(new, ["alice", "bob"])
    sentinel = make_sentinel(tmp_path / "sentinel")
    before = sentinel_state(sentinel)
    os.symlink(sentinel / "keep", hubdir / ".jupyterhub.sqlite.jdr-restore")  # the old staging name
    planted = []
    now = time.time()
    for dt in range(-1, 3):
        name = "jupyterhub.sqlite.jdr-previous-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now + dt))
        (hubdir / name).write_text("the hub user's file\n")
        planted.append(name)
    old_bytes = target.read_bytes()

    previous = swap_in_database(target, new)

    assert sentinel_state(sentinel) == before
    assert all((hubdir / p).read_text() == "the hub user's file\n" for p in planted)
    assert Path(previous).name not in planted and Path(previous).read_bytes() == old_bytes
    assert Path(previous + "-wal").read_bytes() == b"old wal"
    assert target.read_bytes() == new.read_bytes()
    assert os.readlink(hubdir / ".jupyterhub.sqlite.jdr-restore") == str(sentinel / "keep")
    assert not [p for p in os.listdir(hubdir) if p.startswith(".jupyterhub.sqlite.jdr-restore-")]
