"""RBAC: every backup method, every kind of restore and prune run as the ServiceAccount that ``cronjobs/``
binds, with no request refused — and the Role and ClusterRole grant nothing that those runs did not use.

jdr runs as in its CronJob pod: a bearer token of the ``jdr`` ServiceAccount (TokenRequest), no
``mover_image`` configured (so it reads its own pod's image through ``POD_NAME``), and every Kubernetes API
call recorded through ``JDR_KUBE_AUDIT`` (one line per call: verb, apiGroup, resource, status).
"""

from __future__ import annotations

import time

import pytest

from tests.k8s.conftest import jdr_objects
from tests.k8s.shipping import build, rules

pytestmark = [pytest.mark.k8s, pytest.mark.s3]


def install_rbac(k8s_cluster, namespace):
    """Apply the base's ServiceAccount, Role(Binding) and ClusterRole(Binding) (renamed per namespace)."""
    from kubernetes import utils

    # The backup/restore rights; the drill's own ClusterRoles (drill-rbac.yaml) are installed by its tests.
    docs = [d for d in build() if d["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                                  "ClusterRoleBinding")
            and not d["metadata"]["name"].startswith("jdr-drill")]
    cluster_name = f"jdr-{namespace}"
    for d in docs:
        if d["kind"] == "ClusterRole":
            d["metadata"]["name"] = cluster_name
        if d["kind"] == "ClusterRoleBinding":
            d["metadata"]["name"] = cluster_name
            d["roleRef"]["name"] = cluster_name
            for s in d["subjects"]:
                s["namespace"] = namespace
    utils.create_from_yaml(k8s_cluster.api, yaml_objects=docs, namespace=namespace)
    return docs, cluster_name


def test_backup_and_restore_as_the_cronjob_service_account_use_exactly_the_granted_rights(
        k8s_cluster, z2jh_namespace, jdr_k8s, tmp_path):
    ns = z2jh_namespace(running=("alice",))
    docs, cluster_name = install_rbac(k8s_cluster, ns.namespace)
    try:
        token = k8s_cluster.service_account_token(ns.namespace, "jdr")
        kubeconfig = k8s_cluster.write_kubeconfig(tmp_path / "jdr-sa.kubeconfig", token=token,
                                                  namespace=ns.namespace)
        # jdr's own pod, as in the CronJob: mover pods default to its image
        k8s_cluster.core.create_namespaced_pod(ns.namespace, {
            "metadata": {"name": "jdr-runner"},
            "spec": {"containers": [{"name": "jdr", "image": "jdr-test", "command": ["sleep", "600"]}],
                     "terminationGracePeriodSeconds": 1}})
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
        old_pv = k8s_cluster.core.read_namespaced_persistent_volume_claim(
            ns.users["alice"].pvc_name, ns.namespace).spec.volume_name
        jdr.run("restore", "--user", "alice", "--run", snap_run, "--yes", env=env)  # PVC from its snapshot
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
        # the snapshot restore kept the replaced data on its PV (Retain, patched through the ClusterRole)
        assert k8s_cluster.pv_dir(old_pv).exists()
        assert jdr_objects(k8s_cluster, ns.namespace)["pods"] == []
        print(f"\nRBAC run (4 backups, 3 restores, prune) as ServiceAccount jdr: {seconds:.1f}s, "
              f"{len(audit)} API calls, verbs used = verbs granted ({len(used_ns)} namespaced, "
              f"{len(used_cluster)} cluster-scoped)")
        k8s_cluster.core.delete_persistent_volume(old_pv)
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
