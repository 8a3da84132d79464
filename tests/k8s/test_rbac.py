"""RBAC: every backup method, every kind of restore, prune and a drill run as the ServiceAccount that
``cronjobs/`` (and ``cronjobs/drill/``) bind, with no request refused — and the Roles and ClusterRoles grant
nothing that those runs did not use. And what a stolen jdr token cannot do, asked of the real API server:
every verb on Namespaces (so no Pod Security label change either), on PersistentVolumes, and on RoleBindings
and ClusterRoleBindings outside the hub and drill namespaces — each refused with 403.

jdr runs as in its CronJob pod: a bearer token of the ``jdr`` ServiceAccount (TokenRequest), no
``mover_image`` configured (so it reads its own pod's image through ``POD_NAME``), and every Kubernetes API
call recorded through ``JDR_KUBE_AUDIT`` (one line per call: verb, apiGroup, resource, status).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.k8s.conftest import jdr_objects
from tests.k8s.shipping import build, rules

pytestmark = [pytest.mark.k8s, pytest.mark.s3]


def install_rbac(k8s_cluster, namespace):
    """Apply the base's ServiceAccount, Role(Binding) and ClusterRole(Binding) (renamed per namespace)."""
    from kubernetes import utils

    docs = [d for d in build() if d["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                                  "ClusterRoleBinding")]
    cluster_name = f"jdr-{namespace}"
    for d in docs:
        if d["kind"] == "ClusterRole":
            d["metadata"]["name"] = cluster_name
        if d["kind"] == "ClusterRoleBinding":
            d["metadata"]["name"] = cluster_name
            d["roleRef"]["name"] = cluster_name
            for s in d["subjects"]:
                s["namespace"] = namespace
    for d in docs:  # built with the base's namespace (jupyterhub): installed into this one instead
        d["metadata"].pop("namespace", None)
        for subject in d.get("subjects", []):
            subject["namespace"] = namespace
    utils.create_from_yaml(k8s_cluster.api, yaml_objects=docs, namespace=namespace)
    return docs, cluster_name


DRILL_RBAC = Path(__file__).resolve().parents[2] / "cronjobs" / "drill" / "rbac.yaml"


def install_drill_rbac(k8s_cluster, namespace, scratch):
    """Apply cronjobs/drill/rbac.yaml in the drill namespace (subjects: jdr in ``namespace``; the
    cluster-scoped names per test, since other tests' installations live beside them)."""
    docs = [d for d in yaml.safe_load_all(DRILL_RBAC.read_text()) if d]
    cluster_name = f"jdr-drill-{namespace}"
    for d in docs:
        if d["kind"].startswith("Cluster"):
            d["metadata"]["name"] = cluster_name
        if d["kind"] == "ClusterRoleBinding":
            d["roleRef"]["name"] = cluster_name
        for s in d.get("subjects", []):
            s["namespace"] = namespace
    for d in docs:
        if d["kind"] == "Role":
            k8s_cluster.rbac.create_namespaced_role(scratch, d)
        elif d["kind"] == "RoleBinding":
            k8s_cluster.rbac.create_namespaced_role_binding(scratch, d)
        elif d["kind"] == "ClusterRole":
            k8s_cluster.rbac.create_cluster_role(d)
        else:
            k8s_cluster.rbac.create_cluster_role_binding(d)
    return docs, cluster_name


def remove_cluster_rbac(k8s_cluster, *names):
    for name in names:
        for fn in (k8s_cluster.rbac.delete_cluster_role_binding, k8s_cluster.rbac.delete_cluster_role):
            try:
                fn(name)
            except Exception as e:  # already gone
                print(f"warning: RBAC cleanup of {name}: {e!r}")


RESTRICTED_POD_SC = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER_SC = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                           "readOnlyRootFilesystem": True}


def runner_pod(k8s_cluster, namespace, name="jdr-runner"):
    """jdr's own pod, as in the CronJob (Pod Security restricted): mover pods default to its image."""
    k8s_cluster.core.create_namespaced_pod(namespace, {
        "metadata": {"name": name},
        "spec": {"securityContext": RESTRICTED_POD_SC, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "jdr", "image": "jdr-test", "command": ["sleep", "600"],
                                 "securityContext": RESTRICTED_CONTAINER_SC}]}})


def test_backup_and_restore_as_the_cronjob_service_account_use_exactly_the_granted_rights(
        k8s_cluster, z2jh_namespace, jdr_k8s, tmp_path):
    ns = z2jh_namespace(running=("alice",))
    docs, cluster_name = install_rbac(k8s_cluster, ns.namespace)
    try:
        token = k8s_cluster.service_account_token(ns.namespace, "jdr")
        kubeconfig = k8s_cluster.write_kubeconfig(tmp_path / "jdr-sa.kubeconfig", token=token,
                                                  namespace=ns.namespace)
        runner_pod(k8s_cluster, ns.namespace)
        jdr = jdr_k8s(ns.namespace, hub=ns, encrypted=True, kubeconfig=kubeconfig,
                      kubernetes={"mover_image": ""}, retention={"keep_last": 1})
        env = {"POD_NAME": "jdr-runner"}
        t0 = time.monotonic()
        jdr.run("backup", env=env)
        jdr.run("backup", "--method", "snapshot", env=env)
        snap_run = jdr.run("--json", "backup", "--method", "snapshot", env=env).json()["run"]
        jdr.run("backup", "--method", "snapshot+archive", env=env)
        (ns.user_dir("bob") / "README.md").unlink()
        jdr.run("restore", "--user", "bob", "--yes", env=env)  # from the snapshot+archive run's archive
        assert (ns.user_dir("bob") / "README.md").exists()
        (ns.user_dir("alice") / "README.md").write_text("changed after the snapshot\n")
        jdr.run("restore", "--user", "alice", "--run", snap_run, "--yes", env=env)  # copied from its snapshot
        emile = ns.users["Émile"].pvc_name  # a vanished PVC: recreated from its snapshot, waited for until bound
        k8s_cluster.core.delete_namespaced_persistent_volume_claim(emile, ns.namespace)
        k8s_cluster.wait_gone(k8s_cluster.core.read_namespaced_persistent_volume_claim, emile, ns.namespace)
        jdr.run("restore", "--user", "Émile", "--run", snap_run, "--yes", env=env)
        assert (ns.user_dir("Émile") / "README.md").exists()
        jdr.run("restore", "--hub", "--yes", env=env)
        jdr.run("prune", env=env)
        seconds = time.monotonic() - t0

        audit = jdr.audit()
        refused = [a for a in audit if a["status"] in (401, 403)]
        assert refused == [], refused
        used_ns = {(a["group"], a["resource"], a["verb"]) for a in audit if a["namespace"]}
        used_cluster = {(a["group"], a["resource"], a["verb"]) for a in audit if not a["namespace"]}
        assert used_ns == rules(docs, "Role"), (sorted(used_ns ^ rules(docs, "Role")))
        assert used_cluster == rules(docs, "ClusterRole"), (sorted(used_cluster ^ rules(docs, "ClusterRole")))
        # the snapshot restore copied into the same PVC (no PV right needed), the replaced file kept beside it
        assert (ns.user_dir("alice") / "README.md").read_text().startswith("# home of alice")
        kept = list(ns.user_dir("alice").glob("jdr-replaced-*/README.md"))
        assert [p.read_text() for p in kept] == ["changed after the snapshot\n"]
        assert ("", "persistentvolumes") not in {(g, r) for g, r, _ in used_cluster}
        assert jdr_objects(k8s_cluster, ns.namespace)["pods"] == []
        print(f"\nRBAC run (4 backups, 4 restores, prune) as ServiceAccount jdr: {seconds:.1f}s, "
              f"{len(audit)} API calls, verbs used = verbs granted ({len(used_ns)} namespaced, "
              f"{len(used_cluster)} cluster-scoped)")
    finally:
        k8s_cluster.rbac.delete_cluster_role_binding(cluster_name)
        k8s_cluster.rbac.delete_cluster_role(cluster_name)


def test_a_missing_right_is_refused_with_a_hint(k8s_cluster, z2jh_namespace, jdr_k8s, tmp_path):
    ns = z2jh_namespace(running=(), start_hub=True)
    docs, cluster_name = install_rbac(k8s_cluster, ns.namespace)
    try:
        role = next(d for d in docs if d["kind"] == "Role")
        for rule in role["rules"]:
            if rule["resources"] == ["pods"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
        k8s_cluster.rbac.replace_namespaced_role("jdr", ns.namespace, role)
        token = k8s_cluster.service_account_token(ns.namespace, "jdr")
        kubeconfig = k8s_cluster.write_kubeconfig(tmp_path / "sa.kubeconfig", token=token, namespace=ns.namespace)
        jdr = jdr_k8s(ns.namespace, hub=ns, kubeconfig=kubeconfig)
        res = jdr.run("backup", check=False)
        assert res.code == 3, res.stderr
        assert "create pods" in res.stderr and "HTTP 403" in res.stderr
        assert "grant jdr's ServiceAccount the verb 'create' on pods" in res.stderr
        assert jdr.repo().run_ids() == []  # nothing committed
    finally:
        k8s_cluster.rbac.delete_cluster_role_binding(cluster_name)
        k8s_cluster.rbac.delete_cluster_role(cluster_name)


def test_drill_as_the_cronjob_service_account_uses_exactly_the_drill_namespace_rights(
        k8s_cluster, z2jh_namespace, jdr_k8s, tmp_path):
    ns = z2jh_namespace(running=())
    scratch = k8s_cluster.create_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})
    docs, cluster_name = install_rbac(k8s_cluster, ns.namespace)
    drill_docs, drill_cluster = install_drill_rbac(k8s_cluster, ns.namespace, scratch)
    try:
        token = k8s_cluster.service_account_token(ns.namespace, "jdr")
        kubeconfig = k8s_cluster.write_kubeconfig(tmp_path / "jdr-sa.kubeconfig", token=token,
                                                  namespace=ns.namespace)
        runner_pod(k8s_cluster, ns.namespace)
        jdr = jdr_k8s(ns.namespace, hub=ns, encrypted=True, kubeconfig=kubeconfig,
                      kubernetes={"mover_image": "", "drill_namespace": scratch})
        env = {"POD_NAME": "jdr-runner", "POD_NAMESPACE": ns.namespace}
        jdr.run("backup", env=env)
        jdr.reset_audit()
        t0 = time.monotonic()
        res = jdr.run("--json", "drill", "--users", "2", "--keep", env=env, check=False)
        assert res.code == 0, res.stdout[-4000:] + res.stderr[-4000:]
        assert res.json()["target"]["kept"]
        # the next quarter's drill runs in a new Job pod; the kept drill's pod is gone, so it cleans that first
        k8s_cluster.core.delete_namespaced_pod("jdr-runner", ns.namespace, grace_period_seconds=0)
        runner_pod(k8s_cluster, ns.namespace, "jdr-runner-2")
        env = {"POD_NAME": "jdr-runner-2", "POD_NAMESPACE": ns.namespace}
        res = jdr.run("--json", "drill", "--users", "1", env=env, check=False)
        assert res.code == 0, res.stdout[-4000:] + res.stderr[-4000:]
        doc = res.json()
        assert doc["ok"] and doc["leftovers_removed"] == [f"namespace {scratch}"]
        seconds = time.monotonic() - t0

        audit = jdr.audit()
        assert [a for a in audit if a["status"] in (401, 403)] == []
        in_prod = {(a["group"], a["resource"], a["verb"]) for a in audit if a["namespace"] == ns.namespace}
        in_scratch = {(a["group"], a["resource"], a["verb"]) for a in audit if a["namespace"] == scratch}
        cluster = {(a["group"], a["resource"], a["verb"]) for a in audit if not a["namespace"]}
        assert in_prod == {("", "pods", "get"), ("", "secrets", "get")}, in_prod  # its own pod, the mover Secret
        assert in_prod <= rules(docs, "Role")
        assert in_scratch == rules(drill_docs, "Role"), sorted(in_scratch ^ rules(drill_docs, "Role"))
        assert cluster == rules(drill_docs, "ClusterRole") == {("storage.k8s.io", "storageclasses", "list")}
        assert not [a for a in audit if a["verb"] in ("create", "update", "patch", "delete")
                    and a["namespace"] != scratch]
        print(f"\ntwo drills (--keep, then one that cleans it) as ServiceAccount jdr: {seconds:.1f}s, "
              f"{len(audit)} API calls; used = granted in the drill namespace, nothing cluster-wide but "
              "listing StorageClasses")
    finally:
        k8s_cluster.delete_namespace(scratch, wait=False)
        remove_cluster_rbac(k8s_cluster, cluster_name, drill_cluster)


def test_a_stolen_jdr_token_cannot_touch_namespaces_pvs_or_bindings_outside_its_two_namespaces(
        k8s_cluster, k8s_namespace):
    """The token of jdr's ServiceAccount with every right the shipped manifests grant (base and drill),
    asked by the real API server to do what a thief would: each request refused (403). Writes are dry runs,
    so a wrongly granted right could not do harm here either."""
    hub_ns = k8s_namespace
    scratch = k8s_cluster.create_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})
    other = k8s_cluster.create_namespace()
    _, cluster_name = install_rbac(k8s_cluster, hub_ns)
    _, drill_cluster = install_drill_rbac(k8s_cluster, hub_ns, scratch)
    pv_name = f"pv-{other}"
    k8s_cluster.core.create_persistent_volume({
        "metadata": {"name": pv_name}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                                                "persistentVolumeReclaimPolicy": "Retain",
                                                "hostPath": {"path": f"/nonexistent/{other}"}}})
    try:
        token = k8s_cluster.service_account_token(hub_ns, "jdr")

        ctx = ssl.create_default_context(cafile=str(k8s_cluster.ca_file))

        def call(method, path, body=None, query=None):
            q = dict(query or {})
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                q["dryRun"] = "All"
            url = f"{k8s_cluster.server}{path}" + (f"?{urllib.parse.urlencode(q)}" if q else "")
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                       "Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"}
            req = urllib.request.Request(url, method=method, headers=headers,
                                         data=json.dumps(body).encode() if body is not None else None)
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        ns_body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "stolen"}}
        psa = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}
        pv_body = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "stolen"},
                   "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                            "hostPath": {"path": "/"}}}
        rb = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "stolen"},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
              "subjects": [{"kind": "ServiceAccount", "name": "jdr", "namespace": hub_ns}]}
        crb = {**rb, "kind": "ClusterRoleBinding"}
        attempts = {}
        for target in ("kube-system", "default", other, hub_ns, scratch):
            base = f"/api/v1/namespaces/{target}"
            attempts[f"get namespace {target}"] = call("GET", base)
            attempts[f"patch namespace {target} (Pod Security label)"] = call("PATCH", base, psa)
            attempts[f"update namespace {target}"] = call("PUT", base, {**ns_body, "metadata": {"name": target}})
            attempts[f"delete namespace {target}"] = call("DELETE", base)
        attempts["list namespaces"] = call("GET", "/api/v1/namespaces")
        attempts["watch namespaces"] = call("GET", "/api/v1/namespaces", query={"watch": "true", "timeoutSeconds": 1})
        attempts["create namespace"] = call("POST", "/api/v1/namespaces", ns_body)
        attempts["deletecollection namespaces"] = call("DELETE", "/api/v1/namespaces")
        for verb, method, body in (("get", "GET", None), ("patch (Delete policy)", "PATCH",
                                                          {"spec": {"persistentVolumeReclaimPolicy": "Delete"}}),
                                   ("update", "PUT", {**pv_body, "metadata": {"name": pv_name}}),
                                   ("delete", "DELETE", None)):
            attempts[f"{verb} PersistentVolume {pv_name}"] = call(method, f"/api/v1/persistentvolumes/{pv_name}", body)
        attempts["list persistentvolumes"] = call("GET", "/api/v1/persistentvolumes")
        attempts["create persistentvolume"] = call("POST", "/api/v1/persistentvolumes", pv_body)
        attempts["deletecollection persistentvolumes"] = call("DELETE", "/api/v1/persistentvolumes")
        for target in ("kube-system", "default", other):
            path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{target}/rolebindings"
            attempts[f"create RoleBinding in {target}"] = call("POST", path, rb)
            attempts[f"list RoleBindings in {target}"] = call("GET", path)
            attempts[f"delete RoleBindings in {target}"] = call("DELETE", path)
            attempts[f"patch RoleBinding jdr in {target}"] = call("PATCH", f"{path}/jdr", {"metadata": {}})
        for target in (hub_ns, scratch):  # not even in its own two namespaces: jdr binds nothing
            attempts[f"create RoleBinding in {target}"] = call(
                "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{target}/rolebindings", rb)
        attempts["create ClusterRoleBinding"] = call(
            "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", crb)
        attempts["create ClusterRole"] = call("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                                              {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                               "metadata": {"name": "stolen"}, "rules": []})
        allowed = {what: status for what, status in attempts.items() if status != 403}
        assert allowed == {}, json.dumps(allowed, indent=1)
        # the token is real: what jdr needs is allowed (a dry-run pod in its namespace, its drill ConfigMap)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
               "spec": {"containers": [{"name": "c", "image": "x"}]}}
        assert call("POST", f"/api/v1/namespaces/{hub_ns}/pods", pod) == 201  # created (dry run)
        assert call("GET", f"/api/v1/namespaces/{scratch}/configmaps/none") == 404
        print(f"\nstolen jdr token: {len(attempts)} requests on namespaces, PVs and bindings, all refused (403)")
    finally:
        k8s_cluster.core.delete_persistent_volume(pv_name)
        for n in (scratch, other):
            k8s_cluster.delete_namespace(n, wait=False)
        remove_cluster_rbac(k8s_cluster, cluster_name, drill_cluster)
