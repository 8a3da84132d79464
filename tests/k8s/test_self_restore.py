"""Self-service restores on Kubernetes (issue 13, ``VolumeRestore.while_running``): a user's file comes back
into their PVC while their server runs. The mover is pinned to the node of the server pod (the node agents
refuse a second node for a ReadWriteOnce volume, as the attach/detach controller does), runs as the server's
uid/gid without privileges, creates new files only, and never follows the user's links; the server keeps
running throughout, and nothing that existed changes (but the one file a "replace" swaps, kept beside it).
It runs as jdr serve's ServiceAccount, installed by cronjobs/serve/ (kustomize) into the hub's namespace:
the Role's rules are enough, and every one of them is used.

Then the same as a user does it, end to end (issue 13, "on the test control plane as a Deployment
registered with the hub"): the hub runs with exactly the z2jh values cronjobs/README.md documents
(``hub.services``, ``hub.loadRoles``, rendered as the chart renders them), cronjobs/serve/ is applied
with its Deployment as the README says (tests/k8s/servepod.py), and once the pod is Ready alice logs in
through the hub's OAuth, sees her run, downloads her notebook and restores it into ~/restored/<date>/ while
her server runs; bob reaches none of it, and the pod's ServiceAccount reads no Secret.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest
import requests

from dr.deployments.base import VolumeRestore
from dr.deployments.kubernetes.api import PODS, Kube
from dr.deployments.kubernetes.deployment import KubernetesDeployment
from dr.errors import UsageError
from tests.controlplane.procs import free_port
from tests.fixtures._front_proxy import FrontProxy
from tests.k8s.conftest import jdr_objects
from tests.k8s.kustomize import ROOT, kustomize_build, server_side_apply
from tests.k8s.servepod import PodService, create_secret, install_serve_pod, readme_hub_values, readme_serve_secret
from tests.serveutil import entry_id, entry_url, run_url, start_restore, user_url, wait_job
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
                                                                                 jdr_k8s, s3_server, tmp_path,
                                                                                 monkeypatch):
    t0 = time.monotonic()
    ns = z2jh_namespace(running=("alice",), users=({"name": "alice"}, {"name": "bob"}),
                        hub_values=readme_hub_values())
    print(f"\nself-service: namespace with a running server in {time.monotonic() - t0:.1f}s")
    docs = install_serve(k8s_cluster, ns.namespace, tmp_path)
    token = k8s_cluster.service_account_token(ns.namespace, "jdr-serve")
    kubeconfig = k8s_cluster.write_kubeconfig(tmp_path / "serve.kubeconfig", token=token, namespace=ns.namespace)
    alice = ns.users["alice"]
    home = ns.user_dir("alice")
    ns.write_file(alice.pvc_name, "thesis/thesis.ipynb", THESIS)
    jdr = jdr_k8s(ns.namespace, hub=ns, encrypted=True)
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

    t2 = time.monotonic()
    os.unlink(home / "restored")  # alice removes her link: jdr serve restores into ~/restored/<date>/
    serve_pod_end_to_end(k8s_cluster, ns, jdr, run, s3_server, tmp_path / "serve-pod")
    print(f"self-service: the serve pod installed, used by alice and bob in {time.monotonic() - t2:.1f}s")


def serve_pod_end_to_end(k8s_cluster, ns, jdr, run: str, s3_server, tmp_path) -> None:
    """cronjobs/serve/ with its Deployment, as cronjobs/README.md says, used through the hub by alice and bob."""
    name, keys = readme_serve_secret()
    secret = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
              "JDR_ENCRYPTION_KEY": jdr.env["JDR_TEST_KEY"],  # the backup's key (the jdr_k8s fixture's)
              "JUPYTERHUB_API_TOKEN": ns.hub_values["services"]["jdr"]["apiToken"]}
    assert (name, sorted(keys)) == ("jdr-serve-secrets", sorted(secret)), (name, keys)
    create_secret(k8s_cluster, ns.namespace, name, secret)
    port = free_port()
    install_serve_pod(k8s_cluster, ns.namespace, tmp_path, repo_url=jdr.settings["repository"],
                      endpoint=s3_server.endpoint_url, hub_api_url=ns.hub_api_url, port=port)

    def serve_pods():
        return k8s_cluster.core.list_namespaced_pod(
            ns.namespace, label_selector="app.kubernetes.io/name=jdr,app.kubernetes.io/component=serve").items

    def ready() -> bool:
        pods = serve_pods()
        if pods and pods[0].status.container_statuses and pods[0].status.container_statuses[0].restart_count:
            raise AssertionError(f"jdr serve restarted:\n{k8s_cluster.pod_log(ns.namespace, pods[0].metadata.name)}")
        dep = k8s_cluster.apps.read_namespaced_deployment("jdr-serve", ns.namespace)
        return (dep.status.ready_replicas or 0) == 1
    try:
        k8s_cluster.wait_for(ready, 120, "the jdr-serve Deployment to be ready (its readinessProbe)")
    except TimeoutError:
        pods = serve_pods()
        log = k8s_cluster.pod_log(ns.namespace, pods[0].metadata.name) if pods else "(no pod)"
        status = pods[0].status if pods else None
        try:
            probe = requests.get(f"http://127.0.0.1:{port}/services/jdr/static/jdr.css", timeout=5).status_code
        except OSError as e:
            probe = repr(e)
        raise AssertionError(f"jdr serve not ready (probe: {probe}); status: {status}\nits log:\n{log[-6000:]}"
                             ) from None
    pod = serve_pods()[0]
    # the service `jdr` holds no role: its token (the pod's) reads no user, unlike the backup's (section 1)
    serve_token = secret["JUPYTERHUB_API_TOKEN"]
    assert serve_token != ns.token and ns.api("GET", "/users", token=ns.token)[0] == 200
    assert ns.api("GET", "/users", token=serve_token)[0] == 403
    assert ns.api("DELETE", "/users/alice/server", token=serve_token)[0] == 403
    assert pod.spec.service_account_name == "jdr-serve" and pod.spec.security_context.run_as_user == 65532

    proxy = FrontProxy(ns.hub_url, {"/services/jdr/": f"http://127.0.0.1:{port}"}).start()
    try:
        use_the_pod(k8s_cluster, ns, run, PodService(proxy.url))
    except AssertionError as e:
        log = k8s_cluster.pod_log(ns.namespace, pod.metadata.name)
        raise AssertionError(f"{e}\njdr serve's log:\n{log[-5000:]}\nhub log:\n{ns.hub_log()[-3000:]}") from None
    finally:
        proxy.stop()

    # The pod's ServiceAccount reads no Secret: not the hub's, not its own, not the backup's.
    sa = k8s_cluster.write_kubeconfig(tmp_path / "sa.kubeconfig", namespace=ns.namespace,
                                      token=k8s_cluster.service_account_token(ns.namespace, "jdr-serve"))
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(config.new_client_from_config(str(sa)))
    attempts = {f"get {n}": lambda n=n: core.read_namespaced_secret(n, ns.namespace)
                for n in (ns.hub_secret, "jdr-serve-secrets", "jdr-s3")}
    attempts["list"] = lambda: core.list_namespaced_secret(ns.namespace)
    for what, call in attempts.items():
        with pytest.raises(ApiException) as e:
            call()
        assert e.value.status == 403, (what, e.value.status)


def use_the_pod(k8s_cluster, ns, run: str, sh: PodService) -> None:
    """alice logs in, downloads and restores while her server runs; bob reaches none of it."""
    alice_home = ns.user_dir("alice")
    # alice: the hub's login form, then the service's OAuth with the hub (service-jdr, no confirmation)
    s = sh.login("alice")
    r = s.get(sh.service, timeout=60)
    assert r.status_code == 200 and r.url == user_url(sh, "alice"), (r.status_code, r.url, r.text[:500])
    assert any("/hub/api/oauth2/authorize" in h.url for h in r.history), [h.url for h in r.history]
    assert re.findall(r"/run/([^/]+)/\?server=", r.text) == [run]
    eid = entry_id(s, sh, "alice", run, "thesis/thesis.ipynb")
    r = s.get(entry_url(sh, "alice", run, eid, "download"), timeout=60)
    assert r.status_code == 200 and r.content == THESIS, (r.status_code, r.content[:200])
    server = k8s_cluster.core.read_namespaced_pod(ns.users["alice"].pod_name, ns.namespace)
    r = start_restore(s, sh, "alice", run, eid)
    assert r.status_code == 303, (r.status_code, r.text[:300])
    job_page = sh.url + r.headers["Location"]
    job = wait_job(s, job_page, timeout=180)
    assert job["state"] == "done", job
    copies = list((alice_home / "restored").glob("*/thesis/thesis.ipynb"))
    assert len(copies) == 1 and copies[0].read_bytes() == THESIS, copies
    day = copies[0].parent.parent
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", day.name) and job["target"].endswith(f"restored/{day.name}"), job
    for p in (copies[0], copies[0].parent, day, day.parent):
        assert (os.lstat(p).st_uid, os.lstat(p).st_gid) == (1000, 100), p
    now = k8s_cluster.core.read_namespaced_pod(ns.users["alice"].pod_name, ns.namespace)
    assert now.metadata.uid == server.metadata.uid and now.status.phase == "Running"  # never stopped

    # bob: logged in to the hub and the service, and nothing of alice's by any URL
    b = sh.login("bob")
    assert b.get(sh.service, timeout=60).url == user_url(sh, "bob")
    urls = [user_url(sh, "alice"), user_url(sh, "alice") + "search?q=thesis", run_url(sh, "alice", run),
            entry_url(sh, "alice", run, eid, "preview"), entry_url(sh, "alice", run, eid, "download"),
            job_page, job_page + ".json", user_url(sh, "bob") + f"job/{job['id']}.json", sh.service + "audit"]
    for url in urls:
        r = b.get(url, allow_redirects=False, timeout=30)
        assert r.status_code in (403, 404), (url, r.status_code)
        assert THESIS not in r.content and b"thesis.ipynb" not in r.content, url
    # bob has no run, so no page of his holds a form: his XSRF token is his service cookie's (tornado's
    # check accepts the cookie's token as the form's); tests/security/test_serve_authz.py does the same
    # with a form's token, for every id
    assert b.get(user_url(sh, "bob"), timeout=30).status_code == 200
    token = b.cookies.get("_xsrf", path="/services/jdr/") or ""
    r = b.post(entry_url(sh, "alice", run, eid, "restore"), data={"_xsrf": token, "mode": "into"},
               allow_redirects=False, timeout=30)
    assert r.status_code in (403, 404), r.status_code
    assert len(list((alice_home / "restored").rglob("thesis.ipynb"))) == 1  # nothing restored for bob
