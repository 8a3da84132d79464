"""The check a mover makes before it acts (dr.deployments.kubernetes.ownership), on real files with real
owners: fine as itself, run again as the volume's single owner, or privileged for a volume of several owners."""

from __future__ import annotations

import os

import pytest

from dr.deployments.kubernetes.ownership import check_readable, check_writable, tree_owners
from dr.model import IndexEntry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other uids needs root")


def home(tmp_path, uid=1000, gid=100):
    root = tmp_path / "vol"
    (root / "work").mkdir(parents=True)
    (root / "work" / "a.ipynb").write_text("{}")
    (root / "secret.txt").write_text("x")
    (root / "secret.txt").chmod(0o600)
    for p in (root, root / "work", root / "work" / "a.ipynb", root / "secret.txt"):
        os.chown(p, uid, gid)
    root.chmod(0o2775)
    return root


def test_a_single_owner_volume_is_read_as_its_owner_or_names_the_owner(tmp_path):
    root = home(tmp_path)
    assert check_readable(root, 1000, {100}).ok
    other = check_readable(root, 1001, {100})  # secret.txt is 0600: only its owner reads it
    assert not other.ok and other.owner == (1000, 100) and "1000:100" in other.reason
    assert check_readable(root, 0, {0}).ok  # the privileged mover checks nothing


def test_several_owners_need_the_privileged_mover_for_a_backup(tmp_path):
    root = home(tmp_path)
    root_file = root / "work" / "installed-by-sudo"
    root_file.write_text("x")
    root_file.chmod(0o600)  # owner 0
    v = check_readable(root, 1000, {100})
    assert not v.ok and v.owner is None and "work/installed-by-sudo" in v.reason and "owner 0:0" in v.reason
    root_file.chmod(0o644)  # another owner, but readable: the owner mover reads it (and records owner 0)
    assert check_readable(root, 1000, {100}).ok


def test_restore_writes_as_the_owner_unless_the_backup_or_the_volume_hold_other_owners(tmp_path):
    root = home(tmp_path)
    entries = [IndexEntry(path=b".", type="dir", uid=1000, gid=100),
               IndexEntry(path=b"work", type="dir", uid=1000, gid=100),
               IndexEntry(path=b"work/a.ipynb", type="file", uid=1000, gid=100)]
    owners = [(e.name, e.uid, e.gid) for e in entries]
    assert check_writable(root, owners, 1000, {100}).ok
    # a backup of files that another single user owns: run as that user
    v = check_writable(root, [(p, 1001, 100) for p, _, _ in owners], 1000, {100})
    assert not v.ok and v.owner is None  # the current contents are 1000's: several owners in all
    empty = tmp_path / "new"
    empty.mkdir()
    os.chown(empty, 0, 100)
    empty.chmod(0o2775)  # a new PVC after the kubelet applied fsGroup 100: root's, group-writable
    v = check_writable(empty, [(p, 1001, 100) for p, _, _ in owners], 1000, {100})
    assert not v.ok and v.owner == (1001, 100)
    assert check_writable(empty, [(p, 1001, 100) for p, _, _ in owners], 1001, {100}).ok
    # a root-owned file in the backup: only a privileged mover can chown it back
    v = check_writable(empty, [*owners, ("etc.conf", 0, 0)], 1000, {100})
    assert not v.ok and v.owner is None and "etc.conf" in v.reason
    # a root-owned directory in the volume: cannot be moved aside as 1000
    (root / "root-dir").mkdir()
    v = check_writable(root, owners, 1000, {100})
    assert not v.ok and v.owner is None and "root-dir" in v.reason
    # the root of a volume that is not writable (no fsGroup, root's 0755)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o755)
    v = check_writable(locked, owners, 1000, {100})
    assert not v.ok and "not writable" in v.reason


def test_restore_area_is_not_counted_and_tree_owners_lists_everything(tmp_path):
    root = home(tmp_path)
    (root / ".jdr-restore").mkdir()
    os.chown(root / ".jdr-restore", 0, 0)  # jdr's own area, e.g. left by a privileged restore
    assert check_readable(root, 1000, {100}).ok
    assert {p for p, _, _ in tree_owners(root)} == {".", "work", "work/a.ipynb", "secret.txt"}
