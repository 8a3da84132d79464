"""The test control plane itself: real Kubernetes semantics, simulated nodes and storage."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.k8s

SNAP = ("snapshot.storage.k8s.io", "v1")


def pod_spec(command, *, restart="Never", volumes=None, mounts=None, node=None, **kw):
    spec = {
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "main", "image": "jdr-test/none", "command": command,
                        "volumeMounts": mounts or []}],
        "volumes": volumes or [],
    }
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    spec.update(kw)
    return spec


def make_pvc(k, ns, name, size="1Gi", **spec):
    body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, **spec}}
    k.core.create_namespaced_persistent_volume_claim(ns, body)
    return k.wait_pvc_bound(ns, name)


def test_version_and_nodes(k8s_cluster):
    info = k8s_cluster.cp.version_info()
    assert info["gitVersion"] == k8s_cluster.version
    nodes = {n.metadata.name: n for n in k8s_cluster.core.list_node().items}
    assert set(nodes) >= {"node-a", "node-b"}
    assert nodes["node-a"].metadata.labels["kubernetes.io/hostname"] == "node-a"
    # the root CA configmap is published by the real controller-manager
    k8s_cluster.wait_for(lambda: k8s_cluster.core.read_namespaced_config_map("kube-root-ca.crt", "default"),
                         30, "kube-root-ca.crt")


def test_job_runs_to_completion_with_exit_code_and_message(k8s_cluster, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    script = ("import os,sys; open('/dev/termination-log','w').write('done:'+os.environ['POD_NS']); "
              "print('hello from', os.environ['HOSTNAME']); sys.exit(0)")
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ok"},
           "spec": {"backoffLimit": 0, "template": {"spec": pod_spec(["python", "-c", script])}}}
    job["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    k.batch.create_namespaced_job(ns, job)

    def complete():
        j = k.batch.read_namespaced_job("ok", ns)
        return j if (j.status.succeeded or 0) >= 1 and any(
            c.type == "Complete" and c.status == "True" for c in j.status.conditions or []) else None
    k.wait_for(complete, 60, "job ok to complete")
    pods = k.core.list_namespaced_pod(ns, label_selector="job-name=ok").items
    assert len(pods) == 1
    st = pods[0].status.container_statuses[0].state.terminated
    assert st.exit_code == 0 and st.reason == "Completed"
    assert st.message == f"done:{ns}"
    # logs through the API server (kubelet log endpoint of the node agent)
    log = k.core.read_namespaced_pod_log(pods[0].metadata.name, ns)
    assert f"hello from {pods[0].metadata.name}" in log

    # a failing job: exit code reported, job Failed
    job["metadata"]["name"] = "bad"
    job["spec"]["template"]["spec"]["containers"][0]["command"] = ["python", "-c", "import sys; sys.exit(3)"]
    del job["spec"]["template"]["spec"]["containers"][0]["env"]
    k.batch.create_namespaced_job(ns, job)

    def failed():
        j = k.batch.read_namespaced_job("bad", ns)
        return any(c.type == "Failed" and c.status == "True" for c in j.status.conditions or [])
    k.wait_for(failed, 60, "job bad to fail")
    pod = k.core.list_namespaced_pod(ns, label_selector="job-name=bad").items[0]
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3


def test_deployment_scale_to_zero_and_back(k8s_cluster, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": pod_spec(["sleep", "infinity"], restart="Always")}}}
    k.apps.create_namespaced_deployment(ns, dep)

    def ready(n):
        def f():
            d = k.apps.read_namespaced_deployment("web", ns)
            pods = list(k.core.list_namespaced_pod(ns, label_selector="app=web").items)
            return (d.status.ready_replicas or 0) == n and len(pods) == n
        return f
    k.wait_for(ready(1), 60, "deployment web ready (1)")
    first = k.core.list_namespaced_pod(ns, label_selector="app=web").items[0]
    assert first.status.pod_ip == "127.0.0.1"
    assert any(c.type == "Ready" and c.status == "True" for c in first.status.conditions)
    k.apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 0}})
    k.wait_for(ready(0), 60, "deployment web scaled to 0")
    k.apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 1}})
    k.wait_for(ready(1), 60, "deployment web back to 1")
    again = k.core.list_namespaced_pod(ns, label_selector="app=web").items[0]
    assert again.metadata.uid != first.metadata.uid


def test_restart_policy_always_restarts(k8s_cluster, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crashy"},
           "spec": pod_spec(["sh", "-c", "sleep 0.2; exit 1"], restart="Always")}
    k.core.create_namespaced_pod(ns, pod)

    def restarted():
        p = k.core.read_namespaced_pod("crashy", ns)
        cs = (p.status.container_statuses or [None])[0]
        return cs is not None and cs.restart_count >= 1
    k.wait_for(restarted, 60, "pod crashy to be restarted")
    p = k.core.read_namespaced_pod("crashy", ns)
    assert p.status.container_statuses[0].last_state.terminated.exit_code == 1


def test_pvc_in_use_stays_terminating_until_pod_gone(k8s_cluster, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    make_pvc(k, ns, "data")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user"},
           "spec": pod_spec(["sh", "-c", "echo hi > /data/hello; sleep infinity"],
                            volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
                            mounts=[{"name": "d", "mountPath": "/data"}])}
    k.core.create_namespaced_pod(ns, pod)
    k.wait_pod_phase(ns, "user")
    d = k.pvc_dir(ns, "data")
    k.wait_for(lambda: (d / "hello").exists(), 20, "the pod to write into its volume")
    assert (d / "hello").read_text() == "hi\n"
    # the mountPath exists only in the pod's mount namespace
    assert not os.path.exists("/data/hello")

    k.core.delete_namespaced_persistent_volume_claim("data", ns)
    time.sleep(3)
    pvc = k.core.read_namespaced_persistent_volume_claim("data", ns)
    assert pvc.metadata.deletion_timestamp is not None
    assert "kubernetes.io/pvc-protection" in pvc.metadata.finalizers
    assert pvc.status.phase == "Bound"

    k.core.delete_namespaced_pod("user", ns)
    k.wait_gone(k.core.read_namespaced_pod, "user", ns, what="pod user to be deleted")
    k.wait_gone(k.core.read_namespaced_persistent_volume_claim, "data", ns, what="pvc data to be deleted")
    # default reclaim policy Delete: the PV and its directory go too
    k.wait_for(lambda: not d.exists(), 30, "the volume directory to be deleted")


def test_retain_pv_survives_its_pvc(k8s_cluster, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    pvc = make_pvc(k, ns, "keep")
    pv_name = pvc.spec.volume_name
    d = k.pvc_dir(ns, "keep")
    (d / "precious.txt").write_text("keep me")
    k.core.patch_persistent_volume(pv_name, {"spec": {"persistentVolumeReclaimPolicy": "Retain"}})
    k.core.delete_namespaced_persistent_volume_claim("keep", ns)
    k.wait_gone(k.core.read_namespaced_persistent_volume_claim, "keep", ns, what="pvc keep deleted")

    def released():
        pv = k.core.read_persistent_volume(pv_name)
        return pv if pv.status.phase == "Released" else None
    pv = k.wait_for(released, 30, f"pv {pv_name} Released")
    time.sleep(2)
    assert k.core.read_persistent_volume(pv_name).status.phase == "Released"
    assert (k.pv_dir(pv_name) / "precious.txt").read_text() == "keep me"
    assert pv.spec.claim_ref.name == "keep"
    # re-bind the retained volume to a new claim (the way an admin recovers it)
    k.core.patch_persistent_volume(pv_name, {"spec": {"claimRef": None}})
    k.core.create_namespaced_persistent_volume_claim(ns, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "again"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                 "storageClassName": k.storage_class, "volumeName": pv_name}})
    k.wait_pvc_bound(ns, "again")
    assert (k.pvc_dir(ns, "again") / "precious.txt").read_text() == "keep me"
    k.core.delete_namespaced_persistent_volume_claim("again", ns)
    k.wait_gone(k.core.read_namespaced_persistent_volume_claim, "again", ns, what="pvc again deleted")
    k.core.delete_persistent_volume(pv_name)


def test_pvc_restored_from_volumesnapshot(k8s_cluster, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    make_pvc(k, ns, "src")
    d = k.pvc_dir(ns, "src")
    (d / "sub").mkdir()
    (d / "sub" / "notebook.ipynb").write_text("v1")
    os.chown(d / "sub" / "notebook.ipynb", 1000, 100)
    (d / "sub" / "notebook.ipynb").chmod(0o640)
    k.custom.create_namespaced_custom_object(*SNAP, ns, "volumesnapshots", {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": "snap1"},
        "spec": {"volumeSnapshotClassName": k.snapshot_class, "source": {"persistentVolumeClaimName": "src"}}})
    vs = k.wait_snapshot_ready(ns, "snap1")
    content = k.custom.get_cluster_custom_object(*SNAP, "volumesnapshotcontents",
                                                 vs["status"]["boundVolumeSnapshotContentName"])
    assert content["status"]["snapshotHandle"]
    assert content["status"]["restoreSize"] == 2**30
    # later changes do not leak into the snapshot
    (d / "sub" / "notebook.ipynb").write_text("v2")
    make_pvc(k, ns, "restored", dataSource={"kind": "VolumeSnapshot", "name": "snap1",
                                            "apiGroup": "snapshot.storage.k8s.io"})
    r = k.pvc_dir(ns, "restored") / "sub" / "notebook.ipynb"
    assert r.read_text() == "v1"
    st = r.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 100, 0o640)
    # deleting the snapshot (deletionPolicy Delete) removes its content
    k.custom.delete_namespaced_custom_object(*SNAP, ns, "volumesnapshots", "snap1")
    k.wait_gone(k.custom.get_cluster_custom_object, *SNAP, "volumesnapshotcontents", content["metadata"]["name"],
                what="volumesnapshotcontent deleted")


def test_snapshot_failure_injection(k8s_cluster, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    make_pvc(k, ns, "src")
    for name, ann in (("broken", {"test.jdr/fail": "disk on fire"}), ("slow", {"test.jdr/never-ready": "1"})):
        k.custom.create_namespaced_custom_object(*SNAP, ns, "volumesnapshots", {
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name, "annotations": ann},
            "spec": {"source": {"persistentVolumeClaimName": "src"}}})

    def errored():
        vs = k.custom.get_namespaced_custom_object(*SNAP, ns, "volumesnapshots", "broken")
        return (vs.get("status") or {}).get("error")
    err = k.wait_for(errored, 30, "snapshot broken to report an error")
    assert err["message"] == "disk on fire"
    time.sleep(2)
    vs = k.custom.get_namespaced_custom_object(*SNAP, ns, "volumesnapshots", "slow")
    assert not (vs.get("status") or {}).get("readyToUse")
    # a PVC restored from the unready snapshot stays Pending
    k.core.create_namespaced_persistent_volume_claim(ns, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "from-slow"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                 "dataSource": {"kind": "VolumeSnapshot", "name": "slow", "apiGroup": "snapshot.storage.k8s.io"}}})
    # provisioning failure on request
    k.core.create_namespaced_persistent_volume_claim(ns, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "doomed", "annotations": {"test.jdr/fail": "out of space"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})

    def failed_event():
        evs = k.core.list_namespaced_event(ns, field_selector="involvedObject.name=doomed").items
        return any(e.reason == "ProvisioningFailed" and "out of space" in e.message for e in evs)
    k.wait_for(failed_event, 30, "ProvisioningFailed event for doomed")
    for name in ("doomed", "from-slow"):
        assert k.core.read_namespaced_persistent_volume_claim(name, ns).status.phase == "Pending"


def test_service_account_with_narrow_role_gets_403(k8s_cluster, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    k.core.create_namespaced_service_account(ns, {"metadata": {"name": "narrow"}})
    k.rbac.create_namespaced_role(ns, {
        "metadata": {"name": "pvc-reader"},
        "rules": [{"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list"]}]})
    k.rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "narrow-pvc-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pvc-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "narrow", "namespace": ns}]})
    token = k.service_account_token(ns, "narrow")
    core = client.CoreV1Api(k.token_client(token))
    core.list_namespaced_persistent_volume_claim(ns)  # granted
    for call in (lambda: core.list_namespaced_secret(ns),
                 lambda: core.list_namespaced_pod(ns),
                 lambda: core.delete_namespaced_persistent_volume_claim("x", ns),
                 lambda: core.list_namespaced_persistent_volume_claim("default")):
        with pytest.raises(ApiException) as ei:
            call()
        assert ei.value.status == 403
    # a kubeconfig for the same identity works with other clients too
    kc = k.write_kubeconfig(k.cp.workdir / f"{ns}-narrow.kubeconfig", token=token, namespace=ns)
    from kubernetes import config
    c2 = client.CoreV1Api(config.new_client_from_config(str(kc)))
    with pytest.raises(ApiException) as ei:
        c2.list_namespaced_secret(ns)
    assert ei.value.status == 403


def test_pod_sees_service_account_and_volumes(k8s_cluster, k8s_namespace):
    """In-cluster config works inside a pod; secrets, configmaps, subPath, readOnly, runAsUser, fsGroup."""
    k, ns = k8s_cluster, k8s_namespace
    k.core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "stringData": {"key": "sekret"}})
    k.core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"conf.py": "x = 1\n"}})
    make_pvc(k, ns, "home")
    k.rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "default-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]})
    script = """
import os, json
from kubernetes import client, config
config.load_incluster_config()
pods = client.CoreV1Api().list_namespaced_pod(os.environ['NS'])
out = {
  'uid': os.getuid(), 'groups': sorted(os.getgroups()),
  'pods': [p.metadata.name for p in pods.items],
  'secret_env': os.environ['SECRET'], 'secret_file': open('/etc/s/key').read(),
  'conf': open('/etc/app/conf.py').read(),
  'ns': open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read(),
}
try:
    open('/etc/s/new', 'w')
    out['ro'] = False
except OSError:
    out['ro'] = True
open('/home/jovyan/out.json', 'w').write(json.dumps(out))
"""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
           "spec": pod_spec(
               ["python", "-c", script], node="node-b",
               securityContext={"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 100},
               volumes=[{"name": "home", "persistentVolumeClaim": {"claimName": "home"}},
                        {"name": "s", "secret": {"secretName": "s"}},
                        {"name": "c", "configMap": {"name": "c"}}],
               mounts=[{"name": "home", "mountPath": "/home/jovyan"},
                       {"name": "s", "mountPath": "/etc/s", "readOnly": True},
                       {"name": "c", "mountPath": "/etc/app/conf.py", "subPath": "conf.py"}])}
    pod["spec"]["containers"][0]["env"] = [
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "key"}}}]
    k.core.create_namespaced_pod(ns, pod)
    p = k.wait_pod_phase(ns, "probe", ("Succeeded", "Failed"), timeout=60)
    assert p.spec.node_name == "node-b"
    assert p.status.phase == "Succeeded", k.pod_log(ns, "probe")
    import json
    out = json.loads((k.pvc_dir(ns, "home") / "out.json").read_text())
    assert out["uid"] == 1000 and 100 in out["groups"]
    assert out["pods"] == ["probe"]
    assert out["secret_env"] == out["secret_file"] == "sekret"
    assert out["conf"] == "x = 1\n" and out["ns"] == ns and out["ro"] is True
    assert not os.path.exists("/home/jovyan/out.json")


def test_namespace_deletion_completes(k8s_cluster):
    k = k8s_cluster
    ns = k.create_namespace()
    make_pvc(k, ns, "vol")
    k.core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                      "spec": pod_spec(["sleep", "infinity"], volumes=[
                                          {"name": "v", "persistentVolumeClaim": {"claimName": "vol"}}],
                                          mounts=[{"name": "v", "mountPath": "/vol"}])})
    k.wait_pod_phase(ns, "p")
    d = k.pvc_dir(ns, "vol")
    k.delete_namespace(ns, wait=True, timeout=90)
    k.wait_for(lambda: not d.exists(), 30, "volume directory removed")


def test_no_orphan_processes_after_pod_delete(k8s_cluster, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    marker = f"jdr-orphan-check-{ns}"
    k.core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tree"},
                                      "spec": pod_spec(["sh", "-c", f"python -c 'import time; time.sleep(1000)' {marker} & "
                                                        f"exec python -c 'import time; time.sleep(1000)' {marker}"],
                                                       restart="Always")})
    k.wait_pod_phase(ns, "tree")
    k.wait_for(lambda: subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0, 10,
               "pod process")
    k.core.delete_namespaced_pod("tree", ns)
    k.wait_gone(k.core.read_namespaced_pod, "tree", ns, what="pod tree deleted")
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1


def test_z2jh_hub_api_and_stopping_a_server_removes_its_pod(k8s_cluster, z2jh_namespace):
    k = k8s_cluster
    z = z2jh_namespace(release="myrel", running=["alice"])
    ns = z.namespace
    # what the chart makes
    dep = k.apps.read_namespaced_deployment("myrel-hub", ns)
    assert dep.spec.strategy.type == "Recreate" and dep.spec.replicas == 1
    assert dep.metadata.labels["component"] == "hub" and dep.metadata.labels["release"] == "myrel"
    secret = k.core.read_namespaced_secret("myrel-hub", ns)
    assert {"values.yaml", "hub.config.JupyterHub.cookie_secret", "hub.config.CryptKeeper.keys",
            "hub.config.ConfigurableHTTPProxy.auth_token", "hub.services.jdr.apiToken"} <= set(secret.data)
    pvcs = {p.metadata.name: p for p in k.core.list_namespaced_persistent_volume_claim(
        ns, label_selector="component=singleuser-storage").items}
    assert set(pvcs) == set(z.pvc_names.values())
    assert "claim-alice-40example-2ecom" in pvcs  # legacy 'escape' name, remembered in spawner state
    assert pvcs["claim-bob--analysis"].metadata.annotations["hub.jupyter.org/servername"] == "analysis"
    assert {p.metadata.annotations["hub.jupyter.org/username"] for p in pvcs.values()} == {
        "alice", "bob", "alice@example.com", "Émile"}
    assert z.hub_db_path().exists()

    # the real hub answers its REST API, with spawner state
    st, root = z.api("GET", "/")
    assert st == 200 and root["version"]
    st, users = z.api("GET", "/users")
    assert st == 200 and {u["name"] for u in users} >= {"alice", "bob", "alice@example.com", "Émile"}
    st, emile = z.api("GET", "/users/%C3%89mile?include_stopped_servers=1")
    assert st == 200 and emile["servers"][""]["state"]["pvc_name"] == z.users["Émile"].pvc_name
    st, alice = z.api("GET", "/users/alice")
    assert alice["servers"][""]["ready"] is True
    assert alice["servers"][""]["state"]["pvc_name"] == "claim-alice"
    pod = k.core.read_namespaced_pod(z.users["alice"].pod_name, ns)
    assert pod.metadata.labels["component"] == "singleuser-server"
    claims = [v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim]
    assert claims == ["claim-alice"]
    # a token without the scope is refused
    st, _ = z.api("DELETE", "/users/alice/server", token=z.users["bob"].token)
    assert st in (403, 404)  # JupyterHub answers 404 for users the token may not even see

    # the hub restarts (as in a hub restore: scale to 0, swap the DB, scale to 1) and finds alice still running
    z.scale_hub(0)
    assert k.core.read_namespaced_pod(z.users["alice"].pod_name, ns).status.phase == "Running"
    z.scale_hub(1)
    st, alice = z.api("GET", "/users/alice")
    assert alice["servers"][""]["ready"] is True

    st, _ = z.api("DELETE", "/users/alice/server")
    assert st in (202, 204)
    k.wait_gone(k.core.read_namespaced_pod, z.users["alice"].pod_name, ns, timeout=60,
                what="alice's server pod to be deleted")
    st, alice = z.api("GET", "/users/alice")
    assert alice["servers"] == {}
    # the user's volume stays
    assert (z.user_dir("alice") / "README.md").exists()


def test_wait_for_first_consumer_pins_volume_and_rwo_is_single_node(k8s_cluster, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    k.core.create_namespaced_persistent_volume_claim(ns, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "late"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                 "storageClassName": k.storage_class_wffc}})
    time.sleep(2)
    assert k.core.read_namespaced_persistent_volume_claim("late", ns).status.phase == "Pending"
    vol = [{"name": "v", "persistentVolumeClaim": {"claimName": "late"}}]
    mnt = [{"name": "v", "mountPath": "/data"}]
    k.core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "first"},
                                      "spec": pod_spec(["sleep", "infinity"], volumes=vol, mounts=mnt,
                                                       node="node-b")})
    pvc = k.wait_pvc_bound(ns, "late")
    pv = k.core.read_persistent_volume(pvc.spec.volume_name)
    terms = pv.spec.node_affinity.required.node_selector_terms
    assert terms[0].match_expressions[0].values == ["node-b"]
    k.wait_pod_phase(ns, "first")
    # the scheduler keeps every user of that volume on node-b
    k.core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "second"},
                                      "spec": pod_spec(["sleep", "infinity"], volumes=vol, mounts=mnt)})
    assert k.wait_pod_phase(ns, "second").spec.node_name == "node-b"


def test_rwo_volume_in_use_cannot_be_mounted_on_another_node(k8s_cluster, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    make_pvc(k, ns, "home")
    vol = [{"name": "v", "persistentVolumeClaim": {"claimName": "home"}}]
    mnt = [{"name": "v", "mountPath": "/home/jovyan"}]
    k.core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user"},
                                      "spec": pod_spec(["sleep", "infinity"], volumes=vol, mounts=mnt,
                                                       node="node-a")})
    k.wait_pod_phase(ns, "user")
    k.core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "elsewhere"},
                                      "spec": pod_spec(["true"], volumes=vol, mounts=mnt, node="node-b")})
    k.core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "same-node"},
                                      "spec": pod_spec(["true"], volumes=vol, mounts=mnt, node="node-a")})
    assert k.wait_pod_phase(ns, "same-node", ("Succeeded",)).status.phase == "Succeeded"

    def blocked():
        p = k.core.read_namespaced_pod("elsewhere", ns)
        w = p.status.container_statuses and p.status.container_statuses[0].state.waiting
        return w and "Multi-Attach" in (w.message or "")
    k.wait_for(blocked, 20, "elsewhere to report a Multi-Attach error")
    assert k.core.read_namespaced_pod("elsewhere", ns).status.phase == "Pending"
    k.core.delete_namespaced_pod("user", ns)
    assert k.wait_pod_phase(ns, "elsewhere", ("Succeeded",), timeout=60).status.phase == "Succeeded"
