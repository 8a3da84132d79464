"""The engine when jdr runs as the volume's owner (a non-root mover pod, ``runAsUser`` of the home's
uid): the same restore works without root — no chown, the state directory owned by that user — and
a planted link still leads nowhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dr.archive.writer import write_archive
from tests.restoreutil import (
    User,
    home_tree,
    kept_copies,
    make_sentinel,
    open_base,  # noqa: F401  (fixture)
    sentinel_state,
    state_dirs,
    unprivileged_user,  # noqa: F401  (fixture)
)
from tests.security.test_swap_races import _system_python, damage, small_home

_RESTORE = r'''
import io, os, sys
from dr.archive.index import load_index
from dr.deployments.volume_swap import restore_into
home, archive, index, paths = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with open(index, "rb") as f:
    idx = load_index(f)
with open(archive, "rb") as f:
    r = restore_into(__import__("pathlib").Path(home), f, run="r", index=idx, paths=tuple(paths))
print(r.previous)
'''


def test_restore_as_the_volume_owner(open_base: Path, unprivileged_user: User) -> None:  # noqa: F811
    user = unprivileged_user
    home = small_home(open_base / "home", user.uid, user.gid)
    sentinel = make_sentinel(open_base / "sentinel")
    with open(open_base / "a.tar.zst", "wb") as a, open(open_base / "a.index", "wb") as i:
        write_archive(home, a, i)
    expected = home_tree(home)
    damage(home)
    os.symlink(sentinel, home / "notebooks" / "planted")  # a link the user left in a merged directory
    before = sentinel_state(sentinel)
    script = open_base / "restore.py"
    script.write_text(_RESTORE)
    site = next(p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p))
    env = {"PYTHONPATH": f"{Path(__file__).resolve().parents[2]}:{site}", "PATH": "/usr/bin:/bin"}
    for paths in (["notebooks/*"], []):
        proc = subprocess.run([_system_python(), str(script), str(home), str(open_base / "a.tar.zst"),
                               str(open_base / "a.index"), *paths], user=user.uid, group=user.gid,
                              extra_groups=[], env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
    got = home_tree(home)
    assert {k: v for k, v in got.items() if k != b"."} == {k: v for k, v in expected.items() if k != b"."}
    assert state_dirs(home) == [] and len(kept_copies(home)) == 2
    assert all(k.stat().st_uid == user.uid for k in kept_copies(home))
    assert sentinel_state(sentinel) == before
