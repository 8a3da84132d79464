"""``jdr drill`` on the test control plane, in the one drill namespace that the administrator created.

A drill that passes after an archive backup of a z2jh namespace (report in the repository, RTO/RPO, the
drill namespace left empty and its PVs gone); one that must fail (a corrupted archive in the store); one
killed mid-way whose leftovers the next drill cleans (and one refused while another drill holds the
namespace). In every case the production namespace is exactly as before — every PVC, pod, Secret,
Deployment and ConfigMap with its resourceVersion, the PVs bound there, and every file of every PVC — and
jdr's audit log shows no write outside the drill namespace, cluster-scoped ones included (there are none).
The drill namespace enforces Pod Security ``restricted``, as ``cronjobs/drill/namespace.yaml`` does. Also:
a run with only snapshots (volumes reported as not drilled). The drill as the CronJob's ServiceAccount with
the shipped RBAC is in tests/k8s/test_rbac.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from tests.k8s.conftest import jdr_objects
from tests.treeutil import snapshot_tree

pytestmark = [pytest.mark.k8s, pytest.mark.s3]

WRITES = {"create", "update", "patch", "delete"}
JDR_SELECTOR = "app.kubernetes.io/managed-by=jdr"


@pytest.fixture
def drill_ns(k8s_cluster):
    """The drill namespace, as `kubectl apply -k cronjobs/drill/` makes it (Pod Security restricted)."""
    name = k8s_cluster.create_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted",
                                                "pod-security.kubernetes.io/enforce-version": "latest"})
    yield name
    k8s_cluster.delete_namespace(name, wait=False)


def drill_objects(k8s_cluster, scratch: str) -> list[str]:
    """What jdr left in the drill namespace (pods, PVCs, Secrets, ConfigMaps it labelled)."""
    core = k8s_cluster.core
    found = []
    for kind, fn in (("pod", core.list_namespaced_pod), ("pvc", core.list_namespaced_persistent_volume_claim),
                     ("secret", core.list_namespaced_secret), ("configmap", core.list_namespaced_config_map)):
        found += [f"{kind}/{o.metadata.name}" for o in fn(scratch, label_selector=JDR_SELECTOR).items]
    return found


def production_state(k8s_cluster, namespace: str) -> dict[str, Any]:
    """Everything of the production namespace a drill could change, resourceVersions included."""
    ser = k8s_cluster.api.sanitize_for_serialization
    core, apps = k8s_cluster.core, k8s_cluster.apps
    state: dict[str, Any] = {}
    for kind, items in (("pvc", core.list_namespaced_persistent_volume_claim(namespace).items),
                        ("pod", core.list_namespaced_pod(namespace).items),
                        ("secret", core.list_namespaced_secret(namespace).items),
                        ("configmap", core.list_namespaced_config_map(namespace).items),
                        ("deployment", apps.list_namespaced_deployment(namespace).items),
                        ("serviceaccount", core.list_namespaced_service_account(namespace).items)):
        for obj in items:
            doc = ser(obj)
            state[f"{kind}/{obj.metadata.name}"] = {
                "resourceVersion": obj.metadata.resource_version, "uid": obj.metadata.uid,
                "labels": doc["metadata"].get("labels"), "annotations": doc["metadata"].get("annotations"),
                "spec": doc.get("spec"), "data": doc.get("data")}
    for pv in core.list_persistent_volume().items:
        if pv.spec.claim_ref is not None and pv.spec.claim_ref.namespace == namespace:
            state[f"pv/{pv.metadata.name}"] = {"resourceVersion": pv.metadata.resource_version,
                                               "spec": ser(pv)["spec"]}
    for pvc in core.list_namespaced_persistent_volume_claim(namespace).items:
        state[f"tree/{pvc.metadata.name}"] = snapshot_tree(k8s_cluster.pvc_dir(namespace, pvc.metadata.name))
    return state


def scratch_pvs(k8s_cluster, scratch: str) -> list[str]:
    return [pv.metadata.name for pv in k8s_cluster.core.list_persistent_volume().items
            if pv.spec.claim_ref is not None and pv.spec.claim_ref.namespace == scratch]


def writes_outside(audit: list[dict[str, Any]], scratch: str) -> list[dict[str, Any]]:
    """Write calls jdr made anywhere but the drill namespace: production, another namespace, or anything
    cluster-scoped (a drill needs no cluster-wide write)."""
    return [a for a in audit if a["verb"] in WRITES and a["namespace"] != scratch]


def drill(jdr, *args: str, timeout: float = 600) -> tuple[int, dict[str, Any], str]:
    res = jdr.run("--json", "drill", *args, check=False, timeout=timeout)
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from jdr drill (rc {res.code}):\n{res.stdout}\n{res.stderr[-6000:]}")
    return res.code, doc, res.stderr


def test_drill_passes_in_the_drill_namespace_and_production_is_untouched(k8s_cluster, z2jh_namespace, jdr_k8s,
                                                                         drill_ns):
    ns = z2jh_namespace(running=("alice",))
    ns.write_file(ns.users["alice"].pvc_name, "work/analysis.ipynb", json.dumps(
        {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    ns.write_file(ns.users["bob"].pvc_name, "data/big.bin", bytes(range(256)) * 4096)
    jdr = jdr_k8s(ns.namespace, hub=ns, kubernetes={"drill_namespace": drill_ns})
    t0 = time.monotonic()
    run = jdr.run("--json", "backup").json()["run"]
    backup_s = time.monotonic() - t0
    before = production_state(k8s_cluster, ns.namespace)
    jdr.reset_audit()

    t0 = time.monotonic()
    rc, doc, err = drill(jdr)
    drill_s = time.monotonic() - t0
    assert rc == 0, json.dumps(doc, indent=1) + err[-6000:]
    assert doc["ok"] and doc["run"] == run and not doc["failures"], doc["failures"]
    assert doc["target"]["kind"] == "kubernetes" and not doc["target"]["kept"]
    scratch = doc["target"]["scratch"]
    assert scratch == drill_ns
    assert 0 < doc["rpo_seconds"] < 600
    assert doc["rto"]["method"] == "measured" and 0 < doc["rto_seconds"] < 300
    assert doc["hub"]["integrity"] == "ok" and doc["hub"]["status"] == "ok"
    assert sorted(doc["users"]["db"]) == sorted({"alice", "bob", "alice@example.com", "Émile"})
    labels = sorted(v["label"] for v in doc["volumes"])
    assert labels == sorted(["alice", "bob", "bob:analysis", "alice@example.com", "Émile"])
    for v in doc["volumes"]:
        assert v["status"] == "ok", v
        assert v["target"].startswith(f"{scratch}/")
        assert v["files_on_disk"] == v["index_files"] > 0
    alice = next(v for v in doc["volumes"] if v["label"] == "alice")
    assert alice["notebooks"]["checked"] >= 1
    bob = next(v for v in doc["volumes"] if v["label"] == "bob")
    assert bob["bytes"] >= 1 << 20

    # the report is in the repository
    repo = jdr.repo()
    keys = sorted(o.key for o in repo.store.list("drills/"))
    assert keys == [f"drills/{doc['drill']}/report.{ext}" for ext in ("html", "json", "md")]
    stored = json.loads(repo.store.get(f"drills/{doc['drill']}/report.json"))
    assert stored["ok"] and stored["rto_seconds"] == doc["rto_seconds"] and stored["rpo_seconds"] == doc["rpo_seconds"]
    assert repo.store.get(f"drills/{doc['drill']}/report.md").decode().startswith(f"# jdr drill {doc['drill']}: PASSED")
    assert "<svg" in repo.store.get(f"drills/{doc['drill']}/report.html").decode()

    # the drill namespace is empty again (it stays: the administrator's), its volumes are gone; production is
    # exactly as it was
    assert drill_objects(k8s_cluster, scratch) == []
    assert scratch_pvs(k8s_cluster, scratch) == []
    after = production_state(k8s_cluster, ns.namespace)
    assert sorted(after) == sorted(before)
    assert {k: v for k, v in after.items() if before[k] != v} == {}
    audit = jdr.audit()
    assert writes_outside(audit, scratch) == []
    assert any(a["verb"] == "create" and a["resource"] == "pods" and a["namespace"] == scratch for a in audit)
    # the movers ran as the volumes' owner (restricted admitted them), with only the keys restores need
    copied = [a for a in audit if a["resource"] == "secrets" and a["verb"] == "create"]
    assert [a["namespace"] for a in copied] == [scratch]
    assert jdr_objects(k8s_cluster, ns.namespace) == {"pods": [], "pvcs": [], "snapshots": []}
    print(f"\nbackup {backup_s:.1f}s; drill of {len(doc['volumes'])} volumes in the drill namespace "
          f"{drill_s:.1f}s (RTO {doc['rto_seconds']:.1f}s), {len(audit)} API calls")


def test_drill_fails_on_a_corrupted_archive_and_says_why(k8s_cluster, z2jh_namespace, jdr_k8s, drill_ns):
    ns = z2jh_namespace(running=())
    jdr = jdr_k8s(ns.namespace, hub=ns, kubernetes={"drill_namespace": drill_ns})
    manifest = jdr.run("--json", "backup").json()["manifest"]
    bob = next(v for v in manifest["volumes"] if v["user"] == "bob" and not v["server"])
    repo = jdr.repo()
    data = bytearray(repo.store.get(bob["archive"]["key"]))
    data[len(data) // 2] ^= 0xFF  # one flipped byte in bob's archive
    repo.store.put(bob["archive"]["key"], bytes(data))
    before = production_state(k8s_cluster, ns.namespace)
    jdr.reset_audit()

    rc, doc, err = drill(jdr)
    assert rc == 1, json.dumps(doc, indent=1) + err[-4000:]
    assert not doc["ok"] and doc["status"] == "failed"
    reasons = "\n".join(doc["failures"])
    assert "volume bob: restore failed" in reasons, reasons
    by_label = {v["label"]: v for v in doc["volumes"]}
    assert by_label["bob"]["status"] == "failed"
    assert all(v["status"] == "ok" for label, v in by_label.items() if label != "bob")
    md = repo.store.get(f"drills/{doc['drill']}/report.md").decode()
    assert "FAILED" in md.splitlines()[0] and "volume bob: restore failed" in md
    assert drill_objects(k8s_cluster, drill_ns) == []
    assert scratch_pvs(k8s_cluster, drill_ns) == []
    assert production_state(k8s_cluster, ns.namespace) == before
    assert writes_outside(jdr.audit(), drill_ns) == []


def test_killed_drill_leaves_objects_that_the_next_drill_cleans_and_a_live_one_is_not_disturbed(
        k8s_cluster, z2jh_namespace, jdr_k8s, drill_ns):
    ns = z2jh_namespace(running=())
    for i in range(4):  # enough data that the drill is still restoring when it is killed
        ns.write_file(ns.users["bob"].pvc_name, f"data/part-{i}.bin", bytes(range(256)) * (16 << 12))
    jdr = jdr_k8s(ns.namespace, hub=ns, kubernetes={"drill_namespace": drill_ns})
    jdr.run("backup")
    before = production_state(k8s_cluster, ns.namespace)

    proc = jdr.popen("drill", "--all")
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"the drill ended before it was killed: {proc.communicate()}"
        assert time.monotonic() < deadline, "the drill never started a mover in the drill namespace"
        if k8s_cluster.core.list_namespaced_pod(drill_ns).items:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    cm = k8s_cluster.core.read_namespaced_config_map("jdr-drill", drill_ns)
    holder = json.loads(cm.metadata.annotations["jdr.hub.jupyter.org/holder"])
    assert holder["pid"] == proc.pid
    left = drill_objects(k8s_cluster, drill_ns)
    assert "configmap/jdr-drill" in left and any(o.startswith("pvc/") for o in left), left

    rc, doc, err = drill(jdr, "--users", "1")
    assert rc == 0, json.dumps(doc, indent=1) + err[-4000:]
    assert doc["leftovers_removed"] == [f"namespace {drill_ns}"]
    assert drill_objects(k8s_cluster, drill_ns) == []
    assert scratch_pvs(k8s_cluster, drill_ns) == []

    # a drill whose holder lives (this test's process) keeps the namespace: the next one is refused, untouched
    k8s_cluster.core.create_namespaced_config_map(drill_ns, {"metadata": {
        "name": "jdr-drill", "labels": {"app.kubernetes.io/managed-by": "jdr", "jdr.hub.jupyter.org/role": "drill"},
        "annotations": {"jdr.hub.jupyter.org/holder": json.dumps({"host": holder["host"], "pid": os.getpid()})}}})
    rc, doc, err = drill(jdr, "--users", "1")
    assert rc == 3, json.dumps(doc, indent=1) + err[-4000:]
    assert f"the scratch namespace {drill_ns} is held by another drill" in err
    assert drill_objects(k8s_cluster, drill_ns) == ["configmap/jdr-drill"]
    assert production_state(k8s_cluster, ns.namespace) == before


def test_drill_namespace_must_be_configured_and_exist(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=(), start_hub=False)
    jdr = jdr_k8s(ns.namespace)
    jdr.run("backup", "--method", "snapshot")
    rc, _doc, err = drill(jdr)
    assert rc == 3 and "deployment.kubernetes.drill_namespace: required" in err, err[-3000:]
    jdr = jdr_k8s(ns.namespace, kubernetes={"drill_namespace": "jdr-drill-nowhere"})
    rc, _doc, err = drill(jdr)
    assert rc == 3 and "namespace jdr-drill-nowhere does not exist" in err, err[-3000:]
    assert "jdr-drill-nowhere" not in {n.metadata.name for n in k8s_cluster.core.list_namespace().items}


def test_volumes_with_only_a_snapshot_are_reported_as_not_drilled(k8s_cluster, z2jh_namespace, jdr_k8s,
                                                                  drill_ns):
    ns = z2jh_namespace(running=())
    jdr = jdr_k8s(ns.namespace, hub=ns, kubernetes={"drill_namespace": drill_ns})
    jdr.run("backup", "--method", "snapshot")
    before = production_state(k8s_cluster, ns.namespace)
    rc, doc, err = drill(jdr)
    assert rc == 0, json.dumps(doc, indent=1) + err[-4000:]
    assert doc["volumes"] == [] and doc["hub"]["integrity"] == "ok"
    assert any("no archive in the run (snapshot method)" in n for n in doc["notes"]), doc["notes"]
    assert drill_objects(k8s_cluster, drill_ns) == []
    assert production_state(k8s_cluster, ns.namespace) == before
