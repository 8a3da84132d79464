"""Batch movers: one mover pod archives several volumes, each into its own archive with its own status.

Volumes not mounted anywhere share a pod; a volume in use gets a mover on its node; a volume of another
owner is batched again as that owner; a batch pod that dies (an OOM kill caused by one volume) costs its
other volumes nothing but a mover each, and fails only the volume that kills its mover.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from dr.model import volume_key
from tests.k8s.conftest import jdr_objects, set_mover_env

pytestmark = [pytest.mark.k8s, pytest.mark.s3, pytest.mark.faults]

FLAKY = Path(__file__).with_name("flaky_mover.py")


def by_label(manifest):
    return {(v["user"] or "pvc:" + v["source"]["pvc"]["name"]) + (":" + v["server"] if v["server"] else ""): v
            for v in manifest["volumes"]}


def test_unmounted_volumes_share_a_mover_and_each_keeps_its_own_status(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=("alice",))
    emile = ns.user_dir("Émile")  # another single owner: its mover must run again as uid 1001
    for root, dirs, files in os.walk(emile):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), 1001, 100)
    os.chown(emile, 1001, 100)
    os.chmod(emile, 0o700)
    jdr = jdr_k8s(ns.namespace, hub=ns, kubernetes={"mover_command": [sys.executable, str(FLAKY)],
                                                    "concurrency": 1, "mover_batch": 10})
    res = jdr.run("--json", "backup")
    m = res.json()["manifest"]
    assert m["status"] == "complete", m["failures"]
    by = by_label(m)
    # the hub DB; alice's volume on her server's node; bob, bob:analysis, alice@example.com and Émile in one
    # batch (Émile answering "wrong user"); Émile again as uid 1001
    assert jdr.calls()[("create", "pods")] == 4, jdr.calls()
    assert by["alice"]["source"]["node"] and by["alice"]["source"]["running"] is True
    assert by["Émile"]["source"]["owner"] == [1001, 100]
    for label in ("bob", "bob:analysis", "alice@example.com"):
        assert by[label]["source"]["owner"] == [1000, 100] and "node" not in by[label]["source"], label
    archives = [v["archive"]["key"] for v in m["volumes"]]
    assert len(set(archives)) == 5  # an archive each
    assert by["bob:analysis"]["files"] > 0 and by["bob"]["files"] > 0
    assert jdr_objects(k8s_cluster, ns.namespace)["pods"] == []

    # bob's volume kills every mover it is in: the batch dies without a result, each of its volumes gets a
    # mover of its own, and only bob's item fails
    set_mover_env(k8s_cluster, ns.namespace, JDR_TEST_CRASH_KEYS=volume_key("bob"))
    jdr.reset_audit()
    res = jdr.run("--json", "backup", "--full", check=False)
    assert res.code == 1, res.stderr[-3000:]
    m2 = res.json()["manifest"]
    assert m2["status"] == "partial"
    by2 = by_label(m2)
    assert [f for f in by2 if by2[f]["status"] == "failed"] == ["bob"]
    assert "exit code 137" in by2["bob"]["error"] and "simulated OOM kill" in by2["bob"]["error"]
    for label in ("alice", "bob:analysis", "alice@example.com", "Émile"):
        assert by2[label]["status"] == "ok" and by2[label]["reused_from"] is None, label
    # hub DB, alice, Émile (now known as 1001: a group of its own), the batch of three that died, and a
    # mover each for those three
    assert jdr.calls()[("create", "pods")] == 7, jdr.calls()
    assert "archiving each of its volumes with a mover of its own" in res.stderr
    assert jdr_objects(k8s_cluster, ns.namespace)["pods"] == []
    set_mover_env(k8s_cluster, ns.namespace, JDR_TEST_CRASH_KEYS=None)
