"""How a batch of static homes is mounted (pure, with a fake mover runner): the shared RWX PVC once, whole,
read-only, each home named by ``--home``, on any node even while a server mounts the claim; a batch pod that
fails hands every home to a mover of its own, which mounts only that home's subPath."""

from __future__ import annotations

from types import SimpleNamespace

from dr.deployments.base import BackupContext, Volume
from dr.deployments.kubernetes import backup as volume_backups
from dr.deployments.kubernetes.batch import Batch, Entry, _node_for, _Runner
from dr.deployments.kubernetes.objects import as_owner
from dr.errors import JdrError


class Movers:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.specs: list = []
        self.cache = SimpleNamespace(node_of=lambda claim: "node-a")  # alice's server runs there

    def run(self, spec, repo, timeout=None):
        self.specs.append(spec)
        if self.fail:
            raise JdrError("the batch pod was evicted")
        return {"status": "batch", "volumes": {}}

    def run_as_owner(self, spec, repo, privileged, label):
        self.specs.append(spec)
        return {"status": "ok", "fingerprint": "f", "files": 1, "bytes": 1}, spec.security


def setup(fail: bool):
    movers = Movers(fail)
    dep = SimpleNamespace(movers=movers, k=SimpleNamespace(mover_timeout=60, node_concurrency=1, volume_uid=1000,
                                                         volume_gid=100), count=lambda what: None)
    pvc = {"name": "home-nfs", "uid": "u", "accessModes": ["ReadWriteMany"]}
    entries = tuple(Entry(vol=Volume(key=f"user-{u}", user=u, source={"pvc": pvc, "subPath": u}), prev=None,
                          claim="home-nfs", sub_path=u, node="", place="", security=as_owner(1000, 100, writes=False))
                    for u in ("alice", "bob", "carol"))
    ctx = BackupContext(repo=None, run="20261202T000000Z")  # type: ignore[arg-type]
    return dep, movers, entries, ctx


def test_a_batch_mounts_the_shared_volume_once_and_names_each_home():
    dep, movers, entries, ctx = setup(fail=False)
    assert _node_for(dep, entries[0].vol.source["pvc"]) == ""  # RWX: not pinned to alice's server's node
    _Runner(dep, ctx).run(Batch("", "", entries[0].security, entries))
    [spec] = movers.specs
    assert [(m.claim, m.read_only, m.sub_path) for m in spec.mounts] == [("home-nfs", True, "")]
    assert spec.node_name == "" and spec.security.fs_group is None
    homes = [spec.args[i + 1:i + 5] for i, a in enumerate(spec.args) if a == "--home"]
    assert [(h[0], h[2]) for h in homes] == [("user-alice", "alice"), ("user-bob", "bob"), ("user-carol", "carol")]
    assert {h[1] for h in homes} == {spec.mounts[0].path}


def test_a_failed_batch_falls_back_to_a_mover_per_home_mounting_only_its_subpath(monkeypatch):
    dep, movers, entries, ctx = setup(fail=True)
    monkeypatch.setattr(volume_backups, "archived_item", lambda vol, ctx, prev, base, result, used, node: base)
    items, again = _Runner(dep, ctx).run(Batch("", "", entries[0].security, entries))
    assert again == [] and set(items) == {"user-alice", "user-bob", "user-carol"}
    batch, *alone = movers.specs
    assert [m.sub_path for m in batch.mounts] == [""]  # the batch pod: the whole volume
    assert len(alone) == 3
    for spec, user in zip(alone, ("alice", "bob", "carol"), strict=True):
        assert [(m.claim, m.sub_path) for m in spec.mounts] == [("home-nfs", user)], spec.mounts
        assert spec.node_name == ""
