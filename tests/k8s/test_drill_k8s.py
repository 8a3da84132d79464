"""``jdr drill`` on the test control plane: a scratch namespace that production never sees.

A drill that passes after an archive backup of a z2jh namespace (report in the repository, RTO/RPO, the
scratch namespace and its PVs gone); one that must fail (a corrupted archive in the store); one killed
mid-way whose scratch namespace the next drill removes. In every case the production namespace is
exactly as before — every PVC, pod, Secret, Deployment and ConfigMap with its resourceVersion, the PVs
bound there, and every file of every PVC — and jdr's audit log shows no write outside the scratch
namespace (PVs bound to it excepted). Also: a run with only snapshots (volumes reported as not drilled), and
drills run as the CronJob's ServiceAccount with exactly the RBAC that restore/DRILL.md documents.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from tests.k8s.conftest import jdr_objects
from tests.treeutil import snapshot_tree

pytestmark = [pytest.mark.k8s, pytest.mark.s3]

DRILL_SELECTOR = "app.kubernetes.io/managed-by=jdr,jdr.hub.jupyter.org/role=drill"
WRITES = {"create", "update", "patch", "delete"}


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


def drill_namespaces(k8s_cluster) -> list[str]:
    return sorted(n.metadata.name for n in k8s_cluster.core.list_namespace(label_selector=DRILL_SELECTOR).items)


def scratch_pvs(k8s_cluster, scratch: str) -> list[str]:
    return [pv.metadata.name for pv in k8s_cluster.core.list_persistent_volume().items
            if pv.spec.claim_ref is not None and pv.spec.claim_ref.namespace == scratch]


def writes_outside(audit: list[dict[str, Any]], production: str) -> list[dict[str, Any]]:
    """Write calls jdr made anywhere but a scratch namespace: to production, or cluster-scoped objects other
    than namespaces (only scratch ones are created/deleted), PVs and the SelfSubjectReview."""
    out = []
    for a in audit:
        if a["verb"] not in WRITES:
            continue
        if a["namespace"]:
            if not a["namespace"].startswith("jdr-drill-") or a["namespace"] == production:
                out.append(a)
        elif a["resource"] not in ("namespaces", "persistentvolumes", "selfsubjectreviews"):
            out.append(a)
    return out


def drill(jdr, *args: str, timeout: float = 600) -> tuple[int, dict[str, Any], str]:
    res = jdr.run("--json", "drill", *args, check=False, timeout=timeout)
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from jdr drill (rc {res.code}):\n{res.stdout}\n{res.stderr[-6000:]}")
    return res.code, doc, res.stderr


def test_drill_passes_in_a_scratch_namespace_and_production_is_untouched(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=("alice",))
    ns.write_file(ns.users["alice"].pvc_name, "work/analysis.ipynb", json.dumps(
        {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    ns.write_file(ns.users["bob"].pvc_name, "data/big.bin", bytes(range(256)) * 4096)
    jdr = jdr_k8s(ns.namespace, hub=ns)
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
    assert scratch == f"jdr-drill-{doc['drill'].lower()}"
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

    # the scratch namespace and its volumes are gone; production is exactly as it was
    assert drill_namespaces(k8s_cluster) == []
    assert scratch_pvs(k8s_cluster, scratch) == []
    after = production_state(k8s_cluster, ns.namespace)
    assert sorted(after) == sorted(before)
    assert {k: v for k, v in after.items() if before[k] != v} == {}
    audit = jdr.audit()
    assert writes_outside(audit, ns.namespace) == []
    assert any(a["verb"] == "create" and a["resource"] == "pods" and a["namespace"] == scratch for a in audit)
    assert jdr_objects(k8s_cluster, ns.namespace) == {"pods": [], "pvcs": [], "snapshots": []}
    print(f"\nbackup {backup_s:.1f}s; drill of {len(doc['volumes'])} volumes in a scratch namespace "
          f"{drill_s:.1f}s (RTO {doc['rto_seconds']:.1f}s), {len(audit)} API calls")


def test_drill_fails_on_a_corrupted_archive_and_says_why(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=())
    jdr = jdr_k8s(ns.namespace, hub=ns)
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
    assert drill_namespaces(k8s_cluster) == []
    assert scratch_pvs(k8s_cluster, doc["target"]["scratch"]) == []
    assert production_state(k8s_cluster, ns.namespace) == before
    assert writes_outside(jdr.audit(), ns.namespace) == []


def test_killed_drill_leaves_a_scratch_namespace_that_the_next_drill_removes(k8s_cluster, z2jh_namespace,
                                                                           jdr_k8s):
    ns = z2jh_namespace(running=())
    for i in range(4):  # enough data that the drill is still restoring when it is killed
        ns.write_file(ns.users["bob"].pvc_name, f"data/part-{i}.bin", bytes(range(256)) * (16 << 12))
    jdr = jdr_k8s(ns.namespace, hub=ns)
    jdr.run("backup")
    before = production_state(k8s_cluster, ns.namespace)

    proc = jdr.popen("drill", "--all")
    deadline = time.monotonic() + 120
    scratch = ""
    while True:
        assert proc.poll() is None, f"the drill ended before it was killed: {proc.communicate()}"
        assert time.monotonic() < deadline, "the drill never started a mover in its scratch namespace"
        names = drill_namespaces(k8s_cluster)
        if names and k8s_cluster.core.list_namespaced_pod(names[0]).items:
            scratch = names[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    ns_obj = k8s_cluster.core.read_namespace(scratch)
    holder = json.loads(ns_obj.metadata.annotations["jdr.hub.jupyter.org/holder"])
    assert holder["pid"] == proc.pid
    assert ns_obj.metadata.labels["jdr.hub.jupyter.org/role"] == "drill"
    assert ns_obj.metadata.deletion_timestamp is None  # still there: nobody cleaned up
    # a namespace that looks like a drill's but whose holder is alive is not a leftover
    alive = f"jdr-drill-alive-{ns.namespace}"
    k8s_cluster.core.create_namespace({"metadata": {
        "name": alive, "labels": {"app.kubernetes.io/managed-by": "jdr", "jdr.hub.jupyter.org/role": "drill",
                                  "jdr.hub.jupyter.org/run": "alive"},
        "annotations": {"jdr.hub.jupyter.org/holder": json.dumps(
            {"host": holder["host"], "pid": __import__("os").getpid()})}}})
    try:
        rc, doc, err = drill(jdr, "--users", "1")
        assert rc == 0, json.dumps(doc, indent=1) + err[-4000:]
        assert doc["leftovers_removed"] == [f"namespace {scratch}"]
        assert drill_namespaces(k8s_cluster) == [alive]
        assert scratch_pvs(k8s_cluster, scratch) == []
        assert scratch_pvs(k8s_cluster, doc["target"]["scratch"]) == []
    finally:
        k8s_cluster.delete_namespace(alive, wait=False)
    assert production_state(k8s_cluster, ns.namespace) == before


def drill_rbac_docs() -> list[dict[str, Any]]:
    """The RBAC that restore/DRILL.md proposes for drills (its YAML block), as documents."""
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[2] / "restore" / "DRILL.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "name: jdr-drill-scratch" in b)
    return [d for d in yaml.safe_load_all(block) if d]


def test_drill_as_the_cronjob_service_account_with_the_documented_rbac(k8s_cluster, z2jh_namespace, jdr_k8s,
                                                                      tmp_path):
    from tests.k8s.shipping import rules
    from tests.k8s.test_rbac import install_rbac

    ns = z2jh_namespace(running=())
    docs, cluster_name = install_rbac(k8s_cluster, ns.namespace)
    drill_docs = drill_rbac_docs()
    # per-test names for the cluster-scoped objects (other tests' installations live beside them)
    names = {"jdr-drill": f"jdr-drill-{ns.namespace}", "jdr-drill-scratch": f"jdr-drill-scratch-{ns.namespace}"}
    for d in drill_docs:
        d["metadata"]["name"] = names[d["metadata"]["name"]]
        if d["kind"] == "ClusterRole":
            for rule in d["rules"]:
                if "resourceNames" in rule:
                    rule["resourceNames"] = [names[n] for n in rule["resourceNames"]]
        else:
            d["roleRef"]["name"] = names[d["roleRef"]["name"]]
            d["subjects"][0]["namespace"] = ns.namespace
    kept = ""
    try:
        for d in drill_docs:
            if d["kind"] == "ClusterRole":
                k8s_cluster.rbac.create_cluster_role(d)
            else:
                k8s_cluster.rbac.create_cluster_role_binding(d)
        token = k8s_cluster.service_account_token(ns.namespace, "jdr")
        kubeconfig = k8s_cluster.write_kubeconfig(tmp_path / "jdr-sa.kubeconfig", token=token, namespace=ns.namespace)
        k8s_cluster.core.create_namespaced_pod(ns.namespace, {
            "metadata": {"name": "jdr-runner"},
            "spec": {"containers": [{"name": "jdr", "image": "jdr-test", "command": ["sleep", "600"]}],
                     "terminationGracePeriodSeconds": 1}})
        jdr = jdr_k8s(ns.namespace, hub=ns, encrypted=True, kubeconfig=kubeconfig, kubernetes={"mover_image": ""})
        env = {"POD_NAME": "jdr-runner", "POD_NAMESPACE": ns.namespace,
               "JDR_DRILL_SCRATCH_ROLE": names["jdr-drill-scratch"]}
        jdr.run("backup", env=env)
        before = production_state(k8s_cluster, ns.namespace)
        jdr.reset_audit()
        t0 = time.monotonic()
        res = jdr.run("--json", "drill", env=env, check=False)
        assert res.code == 0, res.stdout[-4000:] + res.stderr[-4000:]
        doc = res.json()
        assert doc["ok"] and len(doc["volumes"]) == 5
        res = jdr.run("--json", "drill", "--users", "1", "--keep", env=env, check=False)
        assert res.code == 0, res.stdout[-4000:] + res.stderr[-4000:]
        kept = res.json()["target"]["scratch"]
        seconds = time.monotonic() - t0
        ns_obj = k8s_cluster.core.read_namespace(kept)
        assert ns_obj.metadata.annotations["jdr.hub.jupyter.org/kept"] == "true"
        holder = json.loads(ns_obj.metadata.annotations["jdr.hub.jupyter.org/holder"])
        assert holder["pod"] == "jdr-runner" and holder["namespace"] == ns.namespace and holder["uid"]
        assert drill_namespaces(k8s_cluster) == [kept]

        audit = jdr.audit()
        refused = [a for a in audit if a["status"] in (401, 403)]
        assert refused == [], refused
        assert writes_outside(audit, ns.namespace) == []
        in_prod = {(a["group"], a["resource"], a["verb"]) for a in audit if a["namespace"] == ns.namespace}
        in_scratch = {(a["group"], a["resource"], a["verb"]) for a in audit
                      if a["namespace"].startswith("jdr-drill-")}
        cluster = {(a["group"], a["resource"], a["verb"]) for a in audit if not a["namespace"]}
        assert in_prod <= rules(docs, "Role"), in_prod - rules(docs, "Role")
        scratch_rules = rules([d for d in drill_docs if d["metadata"]["name"] == names["jdr-drill-scratch"]],
                              "ClusterRole")
        drill_rules = rules([d for d in drill_docs if d["metadata"]["name"] == names["jdr-drill"]], "ClusterRole")
        # creating the RoleBinding in the scratch namespace is the ClusterRole jdr-drill's right
        assert ("rbac.authorization.k8s.io", "rolebindings", "create") in in_scratch
        in_scratch.discard(("rbac.authorization.k8s.io", "rolebindings", "create"))
        assert in_scratch == scratch_rules, sorted(in_scratch ^ scratch_rules)
        # the binding itself is a namespaced create; SelfSubjectReview is every user's right
        cluster_used = cluster - {("authentication.k8s.io", "selfsubjectreviews", "create")}
        granted = drill_rules | rules(docs, "ClusterRole")
        assert cluster_used <= granted, cluster_used - granted
        unused = drill_rules - cluster_used - {("rbac.authorization.k8s.io", "rolebindings", "create"),
                                               ("rbac.authorization.k8s.io", "clusterroles", "bind")}
        # only the handling of PVs that outlive the namespace (a Retain class, a slow reclaim) may go unused
        # here: the test storage classes delete, and quickly
        assert unused <= {("", "persistentvolumes", v) for v in ("patch", "delete", "watch")}, unused
        assert production_state(k8s_cluster, ns.namespace) == before
        print(f"\ntwo drills (5 volumes, then 1 with --keep) as ServiceAccount jdr: {seconds:.1f}s, "
              f"{len(audit)} API calls, no request refused")
    finally:
        if kept:
            k8s_cluster.delete_namespace(kept, wait=False)
        for d in drill_docs:
            try:
                if d["kind"] == "ClusterRole":
                    k8s_cluster.rbac.delete_cluster_role(d["metadata"]["name"])
                else:
                    k8s_cluster.rbac.delete_cluster_role_binding(d["metadata"]["name"])
            except Exception as e:
                print(f"warning: RBAC cleanup: {e!r}")
        k8s_cluster.rbac.delete_cluster_role_binding(cluster_name)
        k8s_cluster.rbac.delete_cluster_role(cluster_name)


def test_volumes_with_only_a_snapshot_are_reported_as_not_drilled(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=())
    jdr = jdr_k8s(ns.namespace, hub=ns)
    jdr.run("backup", "--method", "snapshot")
    before = production_state(k8s_cluster, ns.namespace)
    rc, doc, err = drill(jdr)
    assert rc == 0, json.dumps(doc, indent=1) + err[-4000:]
    assert doc["volumes"] == [] and doc["hub"]["integrity"] == "ok"
    assert any("no archive in the run (snapshot method)" in n for n in doc["notes"]), doc["notes"]
    assert drill_namespaces(k8s_cluster) == []
    assert production_state(k8s_cluster, ns.namespace) == before
