"""``kubectl apply -k`` as cronjobs/README.md documents it, with the real ``kustomize``: the base (namespace
``jupyterhub``), the documented overlay (another namespace, its ClusterRoleBinding subject, another image)
and the drill kustomization, each built and applied server-side to the test control plane; the
ServiceAccount's token then has the rights in the namespace it was installed to."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.k8s.kustomize import ROOT, kustomize_build, server_side_apply

pytestmark = pytest.mark.k8s

README = ROOT / "cronjobs" / "README.md"


def documented_overlay() -> str:
    """The overlay of cronjobs/README.md ("Install"), as written there."""
    block = re.search(r"```yaml\n(# overlays/prod/kustomization.yaml\n.*?)```", README.read_text(), re.S)
    assert block is not None, "cronjobs/README.md lost its overlay example"
    return block.group(1)


def namespaced(docs):
    return [d for d in docs if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "Namespace")]


def cleanup(k8s_cluster, docs):
    for d in docs:
        try:
            if d["kind"] == "ClusterRole":
                k8s_cluster.rbac.delete_cluster_role(d["metadata"]["name"])
            elif d["kind"] == "ClusterRoleBinding":
                k8s_cluster.rbac.delete_cluster_role_binding(d["metadata"]["name"])
        except Exception as e:
            print(f"warning: cleanup of {d['kind']} {d['metadata']['name']}: {e!r}")


def can(k8s_cluster, namespace, sa, verb, resource, in_ns, group=""):
    token = k8s_cluster.service_account_token(namespace, sa)
    from kubernetes import client

    api = client.AuthorizationV1Api(k8s_cluster.token_client(token))
    review = api.create_self_subject_access_review({"spec": {"resourceAttributes": {
        "namespace": in_ns, "verb": verb, "resource": resource, "group": group}}})
    return review.status.allowed


def test_base_applies_as_documented_into_jupyterhub(k8s_cluster):
    docs = kustomize_build(ROOT / "cronjobs")
    assert {d["metadata"]["namespace"] for d in namespaced(docs)} == {"jupyterhub"}
    crb = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "jdr", "namespace": "jupyterhub"}]
    images = {c["image"] for d in docs if d["kind"] == "CronJob"
              for c in d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]}
    assert images == {"ghcr.io/jupyterhub-dr/jdr:0.1.0"}
    created = "jupyterhub" not in {n.metadata.name for n in k8s_cluster.core.list_namespace().items}
    if created:
        k8s_cluster.create_namespace("jupyterhub")
    try:
        applied = server_side_apply(k8s_cluster.api, docs)
        assert len(applied) == len(docs)
        assert can(k8s_cluster, "jupyterhub", "jdr", "create", "pods", "jupyterhub")
        assert can(k8s_cluster, "jupyterhub", "jdr", "get", "volumesnapshotcontents", "", "snapshot.storage.k8s.io")
        assert not can(k8s_cluster, "jupyterhub", "jdr", "patch", "persistentvolumes", "")
    finally:
        cleanup(k8s_cluster, docs)
        if created:
            k8s_cluster.delete_namespace("jupyterhub", wait=False)


def test_documented_overlay_moves_everything_and_replaces_the_image(k8s_cluster, k8s_namespace, tmp_path):
    shutil.copytree(ROOT / "cronjobs", tmp_path / "cronjobs")
    overlay = tmp_path / "overlays" / "prod"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(documented_overlay().replace("my-hub", k8s_namespace))
    docs = kustomize_build(overlay)
    assert {d["metadata"]["namespace"] for d in namespaced(docs)} == {k8s_namespace}
    crb = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": f"jdr-{k8s_namespace}",
                                "namespace": k8s_namespace}]
    assert crb["metadata"]["name"] == f"jdr-{k8s_namespace}" == crb["roleRef"]["name"]
    jobs = [d for d in docs if d["kind"] == "CronJob"]
    pods = [j["spec"]["jobTemplate"]["spec"]["template"]["spec"] for j in jobs]
    assert {c["image"] for p in pods for c in p["containers"]} == {"registry.example.org/jdr:0.1.0"}
    assert {p["serviceAccountName"] for p in pods} == {f"jdr-{k8s_namespace}"}
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config["data"]["JDR_REPOSITORY_URL"] == "s3://my-bucket/jupyterhub"
    try:
        server_side_apply(k8s_cluster.api, docs)
        sa = f"jdr-{k8s_namespace}"
        assert can(k8s_cluster, k8s_namespace, sa, "create", "pods", k8s_namespace)
        assert can(k8s_cluster, k8s_namespace, sa, "get", "volumesnapshotcontents", "", "snapshot.storage.k8s.io")  # the binding's subject
        assert not can(k8s_cluster, k8s_namespace, sa, "create", "pods", "default")
    finally:
        cleanup(k8s_cluster, docs)


def test_drill_kustomization_makes_a_restricted_namespace_with_the_role_there(k8s_cluster, k8s_namespace, tmp_path):
    docs = kustomize_build(ROOT / "cronjobs" / "drill")
    ns = next(d for d in docs if d["kind"] == "Namespace")
    assert ns["metadata"]["name"] == "jdr-drill"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {d["metadata"]["namespace"] for d in namespaced(docs)} == {"jdr-drill"}
    # an overlay as restore/DRILL.md describes: another drill namespace, jdr's ServiceAccount elsewhere
    shutil.copytree(ROOT / "cronjobs", tmp_path / "cronjobs")
    overlay = tmp_path / "overlays" / "drill"
    overlay.mkdir(parents=True)
    scratch = f"{k8s_namespace}-drill"
    (overlay / "kustomization.yaml").write_text(
        f"namespace: {scratch}\nnameSuffix: -{k8s_namespace}\nresources: [../../cronjobs/drill]\npatches:\n"
        + "".join(f"  - target: {{kind: {kind}}}\n    patch: |\n"
                  f"      - {{op: replace, path: /subjects/0/namespace, value: {k8s_namespace}}}\n"
                  for kind in ("RoleBinding", "ClusterRoleBinding")))
    docs = kustomize_build(overlay)
    assert next(d for d in docs if d["kind"] == "Namespace")["metadata"]["name"] == scratch
    k8s_cluster.core.create_namespaced_service_account(k8s_namespace, {"metadata": {"name": "jdr"}})
    try:
        server_side_apply(k8s_cluster.api, docs)
        assert k8s_cluster.core.read_namespace(scratch).metadata.labels[
            "pod-security.kubernetes.io/enforce"] == "restricted"
        assert can(k8s_cluster, k8s_namespace, "jdr", "create", "pods", scratch)
        assert can(k8s_cluster, k8s_namespace, "jdr", "list", "storageclasses", "", "storage.k8s.io")
        assert not can(k8s_cluster, k8s_namespace, "jdr", "create", "pods", k8s_namespace)
        assert not can(k8s_cluster, k8s_namespace, "jdr", "delete", "namespaces", "")
    finally:
        cleanup(k8s_cluster, docs)
        k8s_cluster.delete_namespace(scratch, wait=False)


def test_copy_kustomization_builds_into_jupyterhub_with_no_rights():
    docs = kustomize_build(ROOT / "cronjobs" / "copy")
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ConfigMap", "CronJob"}
    assert {d["metadata"]["namespace"] for d in docs} == {"jupyterhub"}
    cron = next(d for d in docs if d["kind"] == "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "jdr-copy"
    assert {c["image"] for c in pod["containers"]} == {"ghcr.io/jupyterhub-dr/jdr:0.1.0"}


def test_serve_kustomization_builds_a_non_root_deployment_with_only_its_rights():
    """cronjobs/serve/ (issue 13): jdr serve's Deployment, Service, NetworkPolicy and narrow Role; its rights
    are applied and used by tests/k8s/test_self_restore.py."""
    docs = kustomize_build(ROOT / "cronjobs" / "serve")
    by = {d["kind"]: d for d in docs}
    assert sorted(by) == sorted(["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service",
                                 "NetworkPolicy"]) and len(docs) == len(by)
    assert {d["metadata"]["namespace"] for d in docs} == {"jupyterhub"}
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in by["Role"]["rules"]}
    assert rules == {(("",), ("pods",)): {"get", "list", "watch", "create", "delete"},
                     (("",), ("persistentvolumeclaims",)): {"get", "list", "patch"}}
    assert by["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "jdr-serve",
                                              "namespace": "jupyterhub"}]
    pod = by["Deployment"]["spec"]["template"]
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "jdr-serve" and spec["securityContext"]["runAsNonRoot"] is True
    (c,) = spec["containers"]
    assert c["image"] == "ghcr.io/jupyterhub-dr/jdr:0.1.0" and c["args"][0] == "serve"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["securityContext"]["capabilities"] == {
        "drop": ["ALL"]}
    # the hub's values say url: http://jdr-serve:8080, and the pages live under /services/jdr/
    assert by["Service"]["metadata"]["name"] == "jdr-serve" and by["Service"]["spec"]["ports"][0]["port"] == 8080
    assert "8080" in c["args"] and pod["metadata"]["labels"]["hub.jupyter.org/network-access-hub"] == "true"
    cfg = by["ConfigMap"]["data"]
    assert cfg["JUPYTERHUB_SERVICE_PREFIX"] == "/services/jdr/" and cfg["JUPYTERHUB_CLIENT_ID"] == "service-jdr"
    assert cfg["JDR_DEPLOYMENT_KUBERNETES_MOVER_ENV_FROM_SECRET"] == "jdr-serve-secrets"
    envfrom = [next(iter(e.values()))["name"] for e in c["envFrom"]]
    assert envfrom == ["jdr-config", "jdr-serve-config", "jdr-serve-secrets"]  # later ones override
    assert by["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    # read-only repository credentials: the serve policy grants no write and no delete
    policy = json.loads((ROOT / "docs" / "policies" / "serve-role.json").read_text())
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert actions == {"s3:ListBucket", "s3:GetBucketObjectLockConfiguration", "s3:GetObject"}
