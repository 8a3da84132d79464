"""The ``snapshot`` and ``snapshot+archive`` methods: CSI VolumeSnapshots taken and awaited by watch,
restores from them (into the existing PVC through a temporary PVC made from the snapshot, the replaced files
kept under .jdr-restore/ — jdr needs no right on PVs; a vanished PVC recreated from the snapshot), and
snapshots pruned with the runs that referenced them."""

from __future__ import annotations

import os

import pytest

from tests.k8s.conftest import jdr_objects
from tests.treeutil import snapshot_tree

pytestmark = [pytest.mark.k8s, pytest.mark.s3]

SNAP = ("snapshot.storage.k8s.io", "v1")


def tree(path):
    # jdr's restore state (.jdr-restore-<hex>) and the kept copies handed to the user (jdr-replaced-<time>)
    return {k: v for k, v in snapshot_tree(path).items() if not k.startswith((b".jdr-restore", b"jdr-replaced-"))}


def snapshots(k8s_cluster, ns):
    return k8s_cluster.custom.list_namespaced_custom_object(*SNAP, ns, "volumesnapshots")["items"]


def test_snapshot_backup_and_restores(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=("alice",))
    alice = ns.users["alice"].pvc_name
    ns.write_file(alice, "thesis/chapter1.md", "# One\n")
    jdr = jdr_k8s(ns.namespace, hub=ns, backup={"method": "snapshot"})
    before = tree(ns.user_dir("alice"))
    out = jdr.run("--json", "backup").json()
    assert out["status"] == "complete", out
    m = out["manifest"]
    assert m["options"]["method"] == "snapshot"
    by_user = {(v["user"], v["server"]): v for v in m["volumes"]}
    item = by_user[("alice", "")]
    assert item["archive"] is None and item["method"] == "snapshot"
    snap = item["snapshot"]
    assert snap["namespace"] == ns.namespace and snap["content_name"] and snap["handle"]
    assert snap["restore_size"] and snap["snapshot_class"] == k8s_cluster.snapshot_class
    vs = {s["metadata"]["name"]: s for s in snapshots(k8s_cluster, ns.namespace)}
    assert set(vs) == {v["snapshot"]["name"] for v in m["volumes"]}
    assert all(s["metadata"]["labels"]["jdr.hub.jupyter.org/run"] == m["run"] for s in vs.values())
    assert all(s["status"]["readyToUse"] for s in vs.values())

    # alice breaks her thesis; her whole volume comes back from the snapshot into the same PVC (her server,
    # stopped through the Hub API first), the broken file kept beside it
    (ns.user_dir("alice") / "thesis" / "chapter1.md").write_text("lost\n")
    old_pvc = k8s_cluster.core.read_namespaced_persistent_volume_claim(alice, ns.namespace)
    res = jdr.run("--json", "restore", "--user", "alice", "--yes").json()
    assert res["status"] == "done", res
    new_pvc = k8s_cluster.core.read_namespaced_persistent_volume_claim(alice, ns.namespace)
    assert new_pvc.metadata.uid == old_pvc.metadata.uid and new_pvc.spec.volume_name == old_pvc.spec.volume_name
    assert new_pvc.metadata.labels == old_pvc.metadata.labels
    assert tree(ns.user_dir("alice")) == before
    kept = list(ns.user_dir("alice").glob("jdr-replaced-*/thesis/chapter1.md"))
    assert [p.read_text() for p in kept] == ["lost\n"]
    assert res["items"][0]["previous"] == f"PVC {alice}: {kept[0].parent.parent.name}"

    # a vanished PVC (user deleted): recreated from the snapshot under its remembered name and metadata
    bob = ns.users["bob"].pvc_name
    bob_before = tree(ns.user_dir("bob"))
    bob_pvc = k8s_cluster.core.read_namespaced_persistent_volume_claim(bob, ns.namespace)
    k8s_cluster.core.delete_namespaced_persistent_volume_claim(bob, ns.namespace)
    k8s_cluster.wait_gone(k8s_cluster.core.read_namespaced_persistent_volume_claim, bob, ns.namespace)
    res = jdr.run("--json", "restore", "--user", "bob", "--yes").json()
    assert res["status"] == "done", res
    recreated = k8s_cluster.core.read_namespaced_persistent_volume_claim(bob, ns.namespace)
    assert recreated.spec.data_source.kind == "VolumeSnapshot"
    assert recreated.metadata.labels == bob_pvc.metadata.labels
    assert recreated.metadata.annotations["hub.jupyter.org/username"] == "bob"
    k8s_cluster.wait_pvc_bound(ns.namespace, bob)
    assert {k: v for k, v in tree(ns.user_dir("bob")).items() if k != b"."} == \
        {k: v for k, v in bob_before.items() if k != b"."}

    # --path from a snapshot: through a temporary PVC, merged into the current files
    (ns.user_dir("alice") / "thesis" / "chapter1.md").write_text("lost again\n")
    (ns.user_dir("alice") / "keep-me.txt").write_text("written after the backup\n")
    os.chown(ns.user_dir("alice") / "keep-me.txt", 1000, 100)  # as alice's server would: her uid and z2jh's fsGid
    res = jdr.run("--json", "restore", "--user", "alice", "--path", "thesis/*", "--yes").json()
    assert res["status"] == "done", res
    assert (ns.user_dir("alice") / "thesis" / "chapter1.md").read_text() == "# One\n"
    assert (ns.user_dir("alice") / "keep-me.txt").exists()
    # --as from a snapshot: alice's files into bob's volume
    res = jdr.run("--json", "restore", "--user", "alice", "--as", "bob", "--yes").json()
    assert res["status"] == "done", res
    assert tree(ns.user_dir("bob")) == before
    objs = jdr_objects(k8s_cluster, ns.namespace)
    assert objs["pods"] == [] and objs["pvcs"] == []


def test_snapshot_plus_archive_and_prune_of_snapshots(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=("alice",))
    jdr = jdr_k8s(ns.namespace, hub=ns, retention={"keep_last": 1})
    before = {k: tree(ns.user_dir(k)) for k in ns.users}
    out = jdr.run("--json", "backup", "--method", "snapshot+archive").json()
    assert out["status"] == "complete", out
    for v in out["manifest"]["volumes"]:
        assert v["method"] == "snapshot+archive" and v["archive"] and v["snapshot"] is None
        assert v["source"]["snapshot"].startswith("jdr-snap-")
    # the snapshots and temporary PVCs are gone; the archive restores
    assert jdr_objects(k8s_cluster, ns.namespace) == {"pods": [], "pvcs": [], "snapshots": []}
    (ns.user_dir("bob") / "README.md").unlink()
    jdr.run("restore", "--user", "bob", "--yes")
    assert tree(ns.user_dir("bob")) == before["bob"]

    # snapshot runs: alice is active (running), the others are not; prune drops the first run and deletes
    # only the snapshot no kept run references (alice's first one)
    first = jdr.run("--json", "backup", "--method", "snapshot").json()["manifest"]
    second = jdr.run("--json", "backup", "--method", "snapshot").json()["manifest"]
    f = {v["user"] + ":" + v["server"]: v for v in first["volumes"]}
    s = {v["user"] + ":" + v["server"]: v for v in second["volumes"]}
    assert s["alice:"]["snapshot"]["name"] != f["alice:"]["snapshot"]["name"] and not s["alice:"]["reused_from"]
    assert s["bob:"]["snapshot"] == f["bob:"]["snapshot"] and s["bob:"]["reused_from"] == first["run"]
    names = {x["metadata"]["name"] for x in snapshots(k8s_cluster, ns.namespace)}
    assert f["alice:"]["snapshot"]["name"] in names
    pruned = jdr.run("--json", "prune").json()
    assert pruned["snapshots_deleted"] == 1, pruned
    k8s_cluster.wait_for(lambda: f["alice:"]["snapshot"]["name"] not in
                         {x["metadata"]["name"] for x in snapshots(k8s_cluster, ns.namespace)}, 30, "snapshot gone")
    left = {x["metadata"]["name"] for x in snapshots(k8s_cluster, ns.namespace)}
    assert left == {v["snapshot"]["name"] for v in second["volumes"]}
