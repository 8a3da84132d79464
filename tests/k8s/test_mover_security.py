"""Mover pods under Pod Security ``restricted`` (the z2jh test namespaces enforce it): they run as the volume
owner with no capabilities, no ServiceAccount token, and only the secrets their job needs — a backup mover
never sees the decryption identity, no mover sees the Hub API token. A volume of another single owner is done
as that owner; a volume of several owners needs the documented exception (a privileged mover), which
``restricted`` refuses with the API's reason and a ``privileged`` namespace allows, with a warning."""

from __future__ import annotations

import os
import threading

import pytest

from tests.k8s.conftest import jdr_objects, set_mover_env

pytestmark = [pytest.mark.k8s, pytest.mark.s3]


class MoverSpy:
    """Every mover pod created in a namespace, as the API server admitted it (a watch in a thread)."""

    def __init__(self, k8s_cluster, namespace):
        from kubernetes import watch

        self.pods: list = []
        self._w = watch.Watch()
        api = k8s_cluster.new_admin_client()
        from kubernetes import client

        core = client.CoreV1Api(api)

        def run():
            try:
                for ev in self._w.stream(core.list_namespaced_pod, namespace,
                                         label_selector="app.kubernetes.io/managed-by=jdr", timeout_seconds=600):
                    if ev["type"] == "ADDED":
                        self.pods.append(ev["object"])
            except Exception as e:  # the stream closed under it by stop()
                print(f"spy stopped: {e!r}")

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()

    def stop(self):
        self._w.stop()

    def by_purpose(self, purpose):
        return [p for p in self.pods if p.metadata.labels.get("jdr.hub.jupyter.org/purpose") == purpose]


def env_names(pod):
    c = pod.spec.containers[0]
    assert not c.env_from, "a mover must not receive a whole Secret"
    return {e.name for e in c.env or []}


def test_movers_run_as_the_owner_without_capabilities_and_get_only_what_their_job_needs(
        k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=("alice",))
    assert k8s_cluster.core.read_namespace(ns.namespace).metadata.labels[
        "pod-security.kubernetes.io/enforce"] == "restricted"
    # the mover Secret also holds the hub token, as the README's jdr-secrets does: it must not reach movers
    jdr = jdr_k8s(ns.namespace, hub=ns, encrypted=True)
    set_mover_env(k8s_cluster, ns.namespace, JDR_HUB_TOKEN=ns.token)
    spy = MoverSpy(k8s_cluster, ns.namespace)
    try:
        out = jdr.run("--json", "backup").json()
        assert out["status"] == "complete", out
        (ns.user_dir("bob") / "README.md").unlink()
        jdr.run("restore", "--user", "bob", "--yes")
        assert (ns.user_dir("bob") / "README.md").exists()
        k8s_cluster.wait_for(lambda: spy.by_purpose("restore"), 30, "the restore mover seen by the watch")
    finally:
        spy.stop()
    backups, restores = spy.by_purpose("backup"), spy.by_purpose("restore")
    captures = spy.by_purpose("hub-capture")
    assert len(backups) == len(ns.users) and len(restores) == 1 and len(captures) == 1
    for pod in [*backups, *restores, *captures]:
        sc = pod.spec.containers[0].security_context
        assert sc.run_as_non_root is True and sc.run_as_user in (1000,) and sc.capabilities.add is None
        assert sc.capabilities.drop == ["ALL"] and sc.read_only_root_filesystem is True
        assert sc.allow_privilege_escalation is False
        assert pod.spec.automount_service_account_token is False
        names = env_names(pod)
        assert "JDR_HUB_TOKEN" not in names and {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names
    for pod in [*backups, *captures]:  # write only: the public recipients, never the identity
        assert "JDR_TEST_KEY" not in env_names(pod) and "JDR_AGENT_RECIPIENTS" in env_names(pod)
        assert pod.spec.security_context.fs_group is None or pod in captures
    assert "JDR_TEST_KEY" in env_names(restores[0])
    assert restores[0].spec.security_context.fs_group == 100
    assert {tuple(v["source"]["owner"]) for v in out["manifest"]["volumes"]} == {(1000, 100)}
    # issue #11 item 7: without a Hub API, the message says the running server was seen in the pod list
    nohub = jdr_k8s(ns.namespace, encrypted=True)
    res = nohub.run("restore", "--user", "alice", "--yes", check=False)
    assert res.code == 3, res.stderr[-3000:]
    alice = ns.users["alice"]
    assert (f"the pod list of namespace {ns.namespace} shows alice's server running (pod {alice.pod_name} mounts "
            f"PVC {alice.pvc_name}; the hub was not asked), and no hub_api is configured to stop it") in res.stderr
    assert all("owners" not in v["source"] for v in out["manifest"]["volumes"])


def test_a_volume_of_another_single_owner_is_done_as_that_owner(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=())
    bob = ns.user_dir("bob")
    ns.write_file(ns.users["bob"].pvc_name, "secret.txt", "only bob\n", uid=1001, mode=0o600)
    for root, dirs, files in os.walk(bob):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), 1001, 100)
    os.chown(bob, 1001, 100)
    jdr = jdr_k8s(ns.namespace, hub=ns)
    res = jdr.run("--json", "backup")
    out = res.json()
    assert out["status"] == "complete", out
    item = next(v for v in out["manifest"]["volumes"] if v["user"] == "bob" and not v["server"])
    assert item["source"]["owner"] == [1001, 100] and "owners" not in item["source"]
    # (as uid 1000 it could not have read secret.txt: the mover ran again as the owner it found, 1001)
    (bob / "secret.txt").unlink()
    res = jdr.run("restore", "--user", "bob", "--yes")
    assert (bob / "secret.txt").read_text() == "only bob\n"
    assert (bob / "secret.txt").stat().st_uid == 1001
    assert "running the mover as" not in res.stderr  # the recorded owner: right the first time


def test_several_owners_need_the_documented_exception(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=())
    alice = ns.users["alice"].pvc_name
    ns.write_file(alice, "installed-by-root.conf", "root's\n", uid=0, gid=0, mode=0o600)
    jdr = jdr_k8s(ns.namespace, hub=ns)
    # restricted refuses the privileged mover: alice's volume fails with the API's reason, the others pass
    res = jdr.run("--json", "backup", check=False)
    assert res.code == 1, res.stderr[-4000:]
    out = res.json()
    failed = [v for v in out["manifest"]["volumes"] if v["status"] == "failed"]
    assert [v["user"] for v in failed] == ["alice"], failed
    assert "violates PodSecurity" in failed[0]["error"] and "restricted" in failed[0]["error"]
    assert "installed-by-root.conf" in res.stderr and "documented exception" in res.stderr
    # the administrator's documented choice: a namespace that allows it
    k8s_cluster.core.patch_namespace(ns.namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "privileged"}}})
    out = jdr.run("--json", "backup").json()
    assert out["status"] == "complete", out
    item = next(v for v in out["manifest"]["volumes"] if v["user"] == "alice" and not v["server"])
    assert item["source"]["owners"] == "several"
    (ns.user_dir("alice") / "installed-by-root.conf").unlink()
    res = jdr.run("restore", "--user", "alice", "--yes")
    restored = ns.user_dir("alice") / "installed-by-root.conf"
    assert restored.read_text() == "root's\n" and (restored.stat().st_uid, restored.stat().st_gid) == (0, 0)
    assert "several owners" in res.stderr and "uid 0 with CHOWN, DAC_OVERRIDE, FOWNER, FSETID" in res.stderr
    assert jdr_objects(k8s_cluster, ns.namespace)["pods"] == []
