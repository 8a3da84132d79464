"""Archive backups of a z2jh namespace and restores of one user, driven through the ``jdr`` CLI."""

from __future__ import annotations

import os
import time

import pytest

from tests.k8s.conftest import jdr_objects
from tests.k8s.test_disaster_recovery import home_tree
from tests.treeutil import snapshot_tree

pytestmark = [pytest.mark.k8s, pytest.mark.s3]


def tree(path):
    """A volume's tree without jdr's own restore bookkeeping (compared entry by entry)."""
    # jdr's restore state (.jdr-restore-<hex>) and the kept copies handed to the user (jdr-replaced-<time>)
    return {k: v for k, v in snapshot_tree(path).items() if not k.startswith((b".jdr-restore", b"jdr-replaced-"))}


def volumes_by_label(manifest):
    out = {}
    for v in manifest["volumes"]:
        label = v["user"] if v["user"] is not None else f"pvc:{v['source']['pvc']['name']}"
        out[label + (f":{v['server']}" if v["server"] else "")] = v
    return out


def test_backup_maps_users_and_restores_one_user_whose_server_runs(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=("alice",))
    # a PVC that belongs to no user, labelled like the users' ones
    ns._pvc("orphan-data", {**ns.chart_labels, "component": "singleuser-storage"})
    k8s_cluster.wait_pvc_bound(ns.namespace, "orphan-data")
    ns.write_file("orphan-data", "keep.txt", "not a user's, still backed up\n")
    ns.write_file(ns.users["alice"].pvc_name, "work/data.csv", "a,b\n1,2\n")
    # a hub user who never started a server has no PVC: reported, not a failure
    assert ns.api("POST", "/users/zoe")[0] == 201
    jdr = jdr_k8s(ns.namespace, hub=ns)
    before = {key: tree(ns.user_dir(key)) for key in ns.users}

    t0 = time.monotonic()
    out = jdr.run("--json", "backup").json()
    backup_s = time.monotonic() - t0
    assert out["status"] == "complete", out
    m = out["manifest"]
    vols = volumes_by_label(m)
    assert set(vols) == {"alice", "bob", "bob:analysis", "alice@example.com", "Émile", "pvc:orphan-data"}
    assert vols["alice@example.com"]["source"]["pvc"]["name"] == ns.users["alice@example.com"].pvc_name
    assert vols["alice"]["source"]["running"] is True and vols["bob"]["source"]["running"] is False
    # alice's mover ran on the node of her server's pod (her RWO volume is attached there)
    alice_pod = k8s_cluster.core.read_namespaced_pod(ns.users["alice"].pod_name, ns.namespace)
    assert vols["alice"]["source"]["node"] == alice_pod.spec.node_name
    assert m["deployment"]["users_without_volume"] == ["zoe"]
    assert vols["pvc:orphan-data"]["user"] is None and vols["pvc:orphan-data"]["files"] == 1
    assert all(v["archive"] and v["index"] for v in vols.values())
    assert m["hub"]["db"] and m["hub"]["integrity"] == "ok"
    assert set(m["hub"]["users"]) == {"alice", "bob", "alice@example.com", "Émile", "zoe"}
    assert m["hub"]["secret"] is None  # not encrypted and not secret_in_clear: the Secret is not stored
    assert jdr_objects(k8s_cluster, ns.namespace) == {"pods": [], "pvcs": [], "snapshots": []}
    # the hub kept running while its DB was captured
    assert ns.hub_pod() is not None and ns.api("GET", "/")[0] == 200

    # "I deleted my notebook": alice loses and changes files while her server runs
    alice = ns.user_dir("alice")
    (alice / "work" / "notebook.ipynb").unlink()
    (alice / "README.md").write_text("overwritten\n")
    (alice / "new-since-backup.txt").write_text("created after the backup\n")
    os.chown(alice / "new-since-backup.txt", 1000, 100)  # as alice's server would: her uid and z2jh's fsGid
    assert ns.users["alice"].running

    t0 = time.monotonic()
    res = jdr.run("--json", "restore", "--user", "alice", "--yes").json()
    restore_s = time.monotonic() - t0
    assert res["status"] == "done", res
    item = res["items"][0]
    assert item["target"] == f"PVC {ns.users['alice'].pvc_name}"
    assert item["previous"].startswith(f"PVC {ns.users['alice'].pvc_name}: jdr-replaced-")
    # the real hub stopped her server through the Hub API, and her pod is gone
    st, info = ns.api("GET", "/users/alice")
    assert st == 200 and not info["servers"]
    assert tree(alice) == before["alice"]
    # the replaced contents are kept inside the volume, handed to its owner
    kept = alice / item["previous"].split(": ", 1)[1]
    assert kept.stat().st_uid == 1000
    assert (kept / "README.md").read_text() == "overwritten\n"
    assert (kept / "new-since-backup.txt").exists()
    # nobody else was touched
    for key in ("bob", "bob/analysis", "alice@example.com", "Émile"):
        assert tree(ns.user_dir(key)) == before[key], key
    assert jdr_objects(k8s_cluster, ns.namespace) == {"pods": [], "pvcs": [], "snapshots": []}
    print(f"\narchive backup of {len(vols)} volumes: {backup_s:.1f}s; restore of one user: {restore_s:.1f}s; "
          f"API calls: {sum(jdr.calls().values())}")


def test_restore_without_running_server_path_into_and_as(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=())
    bob = ns.users["bob"].pvc_name
    ns.write_file(bob, "project/a.py", "print('a')\n")
    ns.write_file(bob, "project/b.py", "print('b')\n")
    ns.write_file(bob, "notes.txt", "bob's notes\n")
    jdr = jdr_k8s(ns.namespace, hub=ns)
    jdr.run("backup")
    before = tree(ns.user_dir("bob"))

    d = ns.user_dir("bob")
    (d / "project" / "a.py").write_text("broken\n")
    (d / "notes.txt").write_text("changed later, must survive a --path restore\n")
    # --path: only the matching files come back, the rest stays as it is now
    res = jdr.run("--json", "restore", "--user", "bob", "--path", "project/*.py", "--yes").json()
    assert res["status"] == "done"
    assert (d / "project" / "a.py").read_text() == "print('a')\n"
    assert (d / "notes.txt").read_text() == "changed later, must survive a --path restore\n"

    # --into: beside the current files, nothing replaced
    jdr.run("restore", "--user", "bob", "--into", "restored", "--yes")
    now = tree(d / "restored")
    assert {k: v for k, v in now.items() if k != b"."} == {k: v for k, v in before.items() if k != b"."}
    assert (d / "notes.txt").read_text() == "changed later, must survive a --path restore\n"

    # --as: bob's files into Émile's volume (a PVC under another slug scheme), Émile's own kept aside
    emile = ns.user_dir("Émile")
    emile_before = tree(emile)
    res = jdr.run("--json", "restore", "--user", "bob", "--as", "Émile", "--yes").json()
    assert res["items"][0]["target"] == f"PVC {ns.users['Émile'].pvc_name}"
    assert tree(emile) == before
    kept = emile / res["items"][0]["previous"].split(": ", 1)[1]
    assert {k: v for k, v in tree(kept).items() if k != b"."} == \
        {k: v for k, v in emile_before.items() if k != b"."}
    assert jdr_objects(k8s_cluster, ns.namespace)["pods"] == []


def test_restore_recreates_a_vanished_pvc_and_named_server(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=())
    key = "bob/analysis"
    claim = ns.users[key].pvc_name
    ns.write_file(claim, "results/out.txt", "analysis results\n", mode=0o600)
    jdr = jdr_k8s(ns.namespace, hub=ns)
    jdr.run("backup")
    before = home_tree(ns.user_dir(key))
    pvc = k8s_cluster.core.read_namespaced_persistent_volume_claim(claim, ns.namespace)
    k8s_cluster.core.delete_namespaced_persistent_volume_claim(claim, ns.namespace)
    k8s_cluster.wait_gone(k8s_cluster.core.read_namespaced_persistent_volume_claim, claim, ns.namespace)

    res = jdr.run("--json", "restore", "--user", "bob", "--server", "analysis", "--yes").json()
    assert res["status"] == "done", res
    new = k8s_cluster.core.read_namespaced_persistent_volume_claim(claim, ns.namespace)
    assert new.metadata.uid != pvc.metadata.uid
    assert new.metadata.labels == pvc.metadata.labels
    for k in ("hub.jupyter.org/username", "hub.jupyter.org/servername"):
        assert new.metadata.annotations[k] == pvc.metadata.annotations[k]
    assert new.spec.storage_class_name == pvc.spec.storage_class_name
    assert new.spec.access_modes == pvc.spec.access_modes
    assert new.spec.resources.requests == pvc.spec.resources.requests
    assert home_tree(ns.user_dir(key)) == before  # the new PVC's root is the provisioner's (movers are not root)
    # the hub can start the named server on the recreated volume
    ns.start_server(key)
    assert os.path.exists(ns.user_dir(key) / "results" / "out.txt")


def test_activity_aware_incremental(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=("alice",))
    jdr = jdr_k8s(ns.namespace, hub=ns)
    first = jdr.run("--json", "backup").json()["manifest"]
    assert jdr.calls()[("create", "pods")] == 6  # the hub DB and five volumes

    # alice writes, then stops her server: JupyterHub's last_activity may lag, but she was running at the
    # last capture, so her volume is read again; nobody else started a server, so nobody else is
    ns.write_file(ns.users["alice"].pvc_name, "late.txt", "written just before she stopped\n")
    ns.stop_server("alice")
    jdr.reset_audit()
    second = jdr.run("--json", "backup").json()["manifest"]
    by = volumes_by_label(second)
    assert jdr.calls()[("create", "pods")] == 2  # the hub DB and alice
    assert by["alice"]["reused_from"] is None and by["alice"]["files"] == first_files(first, "alice") + 1
    assert by["alice"]["source"]["running"] is False
    for label in ("bob", "bob:analysis", "alice@example.com", "Émile"):
        assert by[label]["reused_from"] == first["run"], label
        assert by[label]["archive"] == volumes_by_label(first)[label]["archive"]

    # a quiet night: only the hub DB is read
    jdr.reset_audit()
    third = jdr.run("--json", "backup").json()["manifest"]
    assert jdr.calls()[("create", "pods")] == 1
    assert volumes_by_label(third)["alice"]["reused_from"] == second["run"]
    # a server that ran in between (started later than the capture) is read again
    ns.start_server("bob")
    ns.stop_server("bob")
    time.sleep(1.1)  # run ids have one-second resolution, and activity in the run's own second counts as later
    jdr.reset_audit()
    fourth = volumes_by_label(jdr.run("--json", "backup").json()["manifest"])
    assert jdr.calls()[("create", "pods")] == 2
    # unchanged files: bob's mover found the same listing and referenced his earlier archive
    assert fourth["bob"]["reused_from"] == first["run"]
    # a restore changes a volume without any server running: the next backup reads it again
    jdr.run("restore", "--user", "Émile", "--path", "README.md", "--yes")
    pvc = k8s_cluster.core.read_namespaced_persistent_volume_claim(ns.users["Émile"].pvc_name, ns.namespace)
    assert "jdr.hub.jupyter.org/restored-at" in pvc.metadata.annotations
    jdr.reset_audit()
    fifth = volumes_by_label(jdr.run("--json", "backup").json()["manifest"])
    read = sorted(k for k, v in fifth.items() if v["source"]["verified_in"] != fourth[k]["source"]["verified_in"])
    assert read == ["Émile"], {k: fifth[k]["source"] for k in read}
    assert jdr.calls()[("create", "pods")] == 2  # the hub DB and Émile's volume
    assert fifth["bob"]["reused_from"] == first["run"]
    # --full reads everyone
    jdr.reset_audit()
    full = volumes_by_label(jdr.run("--json", "backup", "--full").json()["manifest"])
    # the hub DB, and the five volumes (none in use) in four batch movers: concurrency 4, one batch of two
    assert jdr.calls()[("create", "pods")] == 5
    assert all(v["reused_from"] is None for v in full.values())


def first_files(manifest, label):
    return volumes_by_label(manifest)[label]["files"]
