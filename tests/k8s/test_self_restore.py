"""Self-service restores on Kubernetes (issue 13, ``VolumeRestore.while_running``): a user's file comes back
into their PVC while their server runs. The mover is pinned to the node of the server pod (the node agents
refuse a second node for a ReadWriteOnce volume, as the attach/detach controller does), runs as the server's
uid/gid without privileges, creates new files only, and never follows the user's links; the server keeps
running throughout, and nothing that existed changes (but the one file a "replace" swaps, kept beside it).
It runs as jdr serve's ServiceAccount, installed by cronjobs/serve/ (kustomize) into the hub's namespace:
the Role's rules are enough, and every one of them is used.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from dr.deployments.base import VolumeRestore
from dr.deployments.kubernetes.api import PODS, Kube
from dr.deployments.kubernetes.deployment import KubernetesDeployment
from dr.errors import UsageError
from tests.k8s.conftest import jdr_objects
from tests.k8s.kustomize import ROOT, kustomize_build, server_side_apply
from tests.treeutil import snapshot_tree

pytestmark = [pytest.mark.k8s, pytest.mark.s3]

THESIS = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5, "version": "yesterday"}\n'


def install_serve(k8s_cluster, namespace: str, tmp_path) -> list[dict]:
    """cronjobs/serve/ through an overlay into ``namespace``, as cronjobs/README.md says; the Deployment
    itself is left out (no jdr-serve-secrets nor a hub registration here: what is tested is its rights)."""
    shutil.copytree(ROOT / "cronjobs", tmp_path / "cronjobs")
    overlay = tmp_path / "overlays" / "serve"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(f"namespace: {namespace}\nresources: [../../cronjobs/serve]\n")
    docs = [d for d in kustomize_build(overlay) if d["kind"] != "Deployment"]
    server_side_apply(k8s_cluster.api, docs)
    return docs


def test_restore_while_the_server_runs_creates_new_files_as_the_user_on_its_node(k8s_cluster, z2jh_namespace,
                                                                                 jdr_k8s, tmp_path, monkeypatch):
    t0 = time.monotonic()
    ns = z2jh_namespace(running=("alice",), users=({"name": "alice"}, {"name": "bob"}))
    print(f"\nself-service: namespace with a running server in {time.monotonic() - t0:.1f}s")
    docs = install_serve(k8s_cluster, ns.namespace, tmp_path)
    token = k8s_cluster.service_account_token(ns.namespace, "jdr-serve")
    kubeconfig = k8s_cluster.write_kubeconfig(tmp_path / "serve.kubeconfig", token=token, namespace=ns.namespace)
    alice = ns.users["alice"]
    home = ns.user_dir("alice")
    ns.write_file(alice.pvc_name, "thesis/thesis.ipynb", THESIS)
    jdr = jdr_k8s(ns.namespace, hub=ns)
    run = jdr.run("--json", "backup", "--user", "alice").json()["manifest"]["run"]
    # today: she overwrote her notebook, and plants a link where the restore would go (to her own folder:
    # a restore that followed it would write into "thesis/")
    ns.write_file(alice.pvc_name, "thesis/thesis.ipynb", b"broken\n")
    os.symlink("thesis", home / "restored")
    os.lchown(home / "restored", 1000, 100)
    server = k8s_cluster.core.read_namespaced_pod(alice.pod_name, ns.namespace)
    assert server.status.phase == "Running"
    before = snapshot_tree(home)

    print(f"self-service: backup done at {time.monotonic() - t0:.1f}s")
    repo = jdr.repo()
    item = next(v for v in repo.load_manifest(run).volumes if v.user == "alice" and not v.server)
    audit = tmp_path / "serve-audit.jsonl"
    monkeypatch.setenv("JDR_KUBE_AUDIT", str(audit))
    dep = KubernetesDeployment(jdr.load_settings(), kube=Kube.connect(str(kubeconfig), ns.namespace))
    created: list[dict] = []
    create = dep.kube.create

    def spy(res, body, namespace=None, **kw):
        if res == PODS:
            created.append(body)
        return create(res, body, namespace, **kw)

    dep.kube.create = spy  # type: ignore[method-assign]
    try:
        def req(into: str, replace: bool = False) -> VolumeRestore:
            return VolumeRestore(item=item, target_user="alice", exact_paths=("thesis/thesis.ipynb",), into=into,
                                 while_running=True, replace_file=replace)

        # the planted link: refused by the mover before anything is written
        # (a UsageError, as on the local deployment: jdr serve tells the user, or picks another name)
        with pytest.raises(UsageError, match="symlink"):
            dep.restore_volume(req("restored/2026-12-01"), repo)
        assert snapshot_tree(home) == before

        t1 = time.monotonic()
        res = dep.restore_volume(req("restored-2026-12-01"), repo)
        print(f"self-service: one file restored while the server runs in {time.monotonic() - t1:.1f}s")
        assert res.target == f"PVC {alice.pvc_name}: restored-2026-12-01" and res.files == 1, res
        copy = home / "restored-2026-12-01" / "thesis" / "thesis.ipynb"
        assert copy.read_bytes() == THESIS
        for p in (copy, copy.parent, copy.parent.parent):
            st = os.lstat(p)
            assert (st.st_uid, st.st_gid) == (1000, 100), p
        after = snapshot_tree(home)
        assert {k: v for k, v in after.items() if not k.startswith(b"restored-2026-12-01")} == {
            **before, b".": after[b"."]}  # only the root's mtime moved (a new entry in it)

        # "replace": the current file kept beside it, the restored one in its place
        res = dep.restore_volume(req("restored-2026-12-01-2", replace=True), repo)
        assert (home / "thesis" / "thesis.ipynb").read_bytes() == THESIS
        kept = res.previous.split(": ", 1)[1]
        assert kept.startswith("thesis/thesis.jdr-") and kept.endswith(".ipynb"), res
        assert (home / kept).read_bytes() == b"broken\n"
        assert copy.read_bytes() == THESIS  # the first restore is untouched
        with pytest.raises(UsageError, match="already exists"):  # what jdr serve retries with a new name
            dep.restore_volume(req("restored-2026-12-01"), repo)
        assert copy.read_bytes() == THESIS
    finally:
        dep.close()

    movers = [b for b in created if b["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "jdr"]
    assert len(movers) == 4
    for body in movers:  # on the server's node, as the server's user, nothing privileged
        assert body["spec"]["nodeName"] == server.spec.node_name
        sc = body["spec"]["containers"][0]["securityContext"]
        assert sc["runAsUser"] == 1000 and sc["runAsNonRoot"] is True and not sc["capabilities"].get("add")
        assert body["spec"]["securityContext"].get("fsGroup") == 100  # the server's own: nothing to regroup
    # the server ran throughout: the same pod, never restarted
    now = k8s_cluster.core.read_namespaced_pod(alice.pod_name, ns.namespace)
    assert now.metadata.uid == server.metadata.uid and now.status.phase == "Running"
    assert jdr_objects(k8s_cluster, ns.namespace)["pods"] == []
    # jdr serve's Role, both ways: nothing was refused (the restores ran with its token) and every rule
    # was used — but "get pods", which reads jdr-serve's own pod for the movers' image (set in this test)
    used = {(a["verb"], a["resource"]) for a in map(json.loads, audit.read_text().splitlines())}
    role = next(d for d in docs if d["kind"] == "Role")
    granted = {(v, r) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert used <= granted and granted - used == {("get", "pods")}, (used, granted)
