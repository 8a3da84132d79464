"""The Kubernetes objects jdr builds, and the mapping of users to PVCs, as plain dicts (no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dr.deployments.kubernetes.discovery import find_user_pvc, hub_from_deployment, map_volumes
from dr.deployments.kubernetes.objects import (
    READER,
    WRITER,
    Mount,
    MoverConfig,
    MoverSpec,
    Security,
    container_result,
    jdr_labels,
    make_mover_pod,
    make_pvc,
    make_secret_copy,
    make_volume_snapshot,
    mover_env,
    owner_record,
    parse_quantity,
    pvc_record,
    secret_record,
    short_name,
    volume_security,
)
from dr.errors import ConfigError, UsageError
from dr.hubdb.info import DbInfo, ServerInfo
from dr.model import volume_key
from dr.settings import load_settings

CFG = MoverConfig(image="jdr:1", command=("jdr",), env=(("JDR_REPOSITORY_URL", "s3://b/p"),),
                  env_from_secret="jdr-credentials", secret_keys=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
                  key_env="JDR_KEY", recipients=("age1abc", "age1escrow"), timeout=600, labels={"team": "infra"},
                  requests={"cpu": "100m"}, limits={"memory": "1Gi"})


def secret_ref(key, optional=True):
    ref = {"name": "jdr-credentials", "key": key}
    if optional:
        ref["optional"] = True
    return {"name": key, "valueFrom": {"secretKeyRef": ref}}


def pvc(name, user=None, server=None, uid="u1", **spec):
    ann = {"pv.kubernetes.io/bind-completed": "yes", "volume.kubernetes.io/storage-provisioner": "x"}
    if user is not None:
        ann["hub.jupyter.org/username"] = user
    if server is not None:
        ann["hub.jupyter.org/servername"] = server
    return {"metadata": {"name": name, "uid": uid, "labels": {"component": "singleuser-storage"},
                         "annotations": ann},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                     "resources": {"requests": {"storage": "10Gi"}}, "volumeName": "pv-1", **spec}}


def test_backup_mover_runs_as_the_volume_owner_without_capabilities_token_or_identity():
    """What Pod Security Admission `restricted` accepts (the test control plane enforces it too)."""
    spec = MoverSpec(name="jdr-bk-x", run="20261125T191440Z-a1b2c3", role="backup",
                     args=("backup-volume", "--run", "R"), mounts=(Mount("claim-alice", "/data"),),
                     security=volume_security(None, 1000, 100, writes=False), node_name="node-a")
    pod = make_mover_pod(spec, CFG)
    assert pod["metadata"]["labels"] == {
        "team": "infra", "jdr.hub.jupyter.org/purpose": "backup", "app.kubernetes.io/managed-by": "jdr",
        "jdr.hub.jupyter.org/run": "20261125T191440Z-a1b2c3", "jdr.hub.jupyter.org/role": "mover"}
    ps = pod["spec"]
    assert ps["restartPolicy"] == "Never" and ps["activeDeadlineSeconds"] == 600
    assert ps["automountServiceAccountToken"] is False and ps["nodeName"] == "node-a"
    assert ps["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}  # no fsGroup: read-only
    c = ps["containers"][0]
    assert c["command"] == ["jdr", "agent", "backup-volume", "--run", "R"]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False,
        "capabilities": {"drop": ["ALL"]}, "runAsUser": 1000, "runAsGroup": 100, "runAsNonRoot": True}
    # only the credentials' keys and the public recipients: never the whole Secret, the identity, the hub token
    assert "envFrom" not in c
    assert c["env"] == [{"name": "JDR_REPOSITORY_URL", "value": "s3://b/p"}, secret_ref("AWS_ACCESS_KEY_ID"),
                        secret_ref("AWS_SECRET_ACCESS_KEY"),
                        {"name": "JDR_AGENT_RECIPIENTS", "value": "age1abc,age1escrow"}]
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["resources"] == {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}
    assert {"name": "vol0", "mountPath": "/data", "readOnly": True} in c["volumeMounts"]
    assert {"name": "vol0", "persistentVolumeClaim": {"claimName": "claim-alice", "readOnly": True}} in ps["volumes"]
    assert {"name": "tmp", "emptyDir": {}} in ps["volumes"]
    assert "hub.jupyter.org/network-access-hub" not in pod["metadata"]["labels"]


def test_restore_mover_gets_the_identity_and_fs_group_and_the_privileged_exception():
    spec = MoverSpec("m", "r", "restore", (), (Mount("c", "/data", read_only=False),),
                     volume_security({"owner": [1001, 100]}, 1000, 100, writes=True), decrypts=True)
    w = make_mover_pod(spec, CFG)
    c = w["spec"]["containers"][0]
    assert (c["securityContext"]["runAsUser"], c["securityContext"]["runAsGroup"]) == (1001, 100)
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert w["spec"]["securityContext"]["fsGroup"] == 100
    assert w["spec"]["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert secret_ref("JDR_KEY", optional=False) in c["env"]
    assert not any(e["name"] == "JDR_AGENT_RECIPIENTS" for e in c["env"])
    assert w["spec"]["volumes"][1]["persistentVolumeClaim"]["readOnly"] is False
    # a volume of several owners (recorded by a backup): the documented exception, uid 0 with four capabilities
    several = volume_security({"owner": [1000, 100], "owners": "several"}, 1000, 100, writes=True)
    assert several == WRITER and several.privileged
    sc = make_mover_pod(MoverSpec("m", "r", "restore", (), (), several), CFG)["spec"]["containers"][0][
        "securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]}
    assert (sc["runAsUser"], sc["runAsNonRoot"]) == (0, False)
    assert volume_security({"owners": "several"}, 1000, 100, writes=False) == READER
    assert owner_record({"owner": [1000, 100]}, READER) == {"owner": [1000, 100], "owners": "several"}
    assert owner_record({"owner": [1000, 100]}, volume_security(None, 1000, 100, writes=False)) == {
        "owner": [1000, 100]}
    h = make_mover_pod(MoverSpec("m", "r", "hub-capture", (), (), Security("as-user", 1000, 1000, 1000)), CFG)
    sc = h["spec"]["containers"][0]["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"]) == (1000, 1000, True)
    assert h["spec"]["securityContext"]["fsGroup"] == 1000
    assert "nodeName" not in h["spec"]


def test_pvc_record_keeps_what_a_restore_needs_and_drops_binding():
    rec = pvc_record(pvc("claim-alice", "alice"))
    assert rec == {"name": "claim-alice", "uid": "u1", "labels": {"component": "singleuser-storage"},
                   "annotations": {"hub.jupyter.org/username": "alice"}, "storageClassName": "standard",
                   "accessModes": ["ReadWriteOnce"], "size": "10Gi", "volumeMode": "Filesystem",
                   "volumeName": "pv-1"}
    body = make_pvc(rec)
    assert body == {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "claim-alice", "labels": {"component": "singleuser-storage"},
                                 "annotations": {"hub.jupyter.org/username": "alice"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}},
                             "volumeMode": "Filesystem", "storageClassName": "standard"}}
    snap = make_pvc(rec, snapshot="s1", size="20Gi", labels={"x": "y"})
    assert snap["spec"]["dataSource"] == {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                          "name": "s1"}
    assert snap["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert snap["metadata"]["labels"] == {"component": "singleuser-storage", "x": "y"}
    no_class = make_pvc({**rec, "storageClassName": ""}, storage_class="fallback")
    assert no_class["spec"]["storageClassName"] == "fallback"


def test_snapshot_and_secret_copy():
    vs = make_volume_snapshot("jdr-snap-x", "claim-alice", snapshot_class="", labels=jdr_labels("R", "snapshot"))
    assert vs == {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                  "metadata": {"name": "jdr-snap-x", "labels": {"app.kubernetes.io/managed-by": "jdr",
                                                                "jdr.hub.jupyter.org/run": "R",
                                                                "jdr.hub.jupyter.org/role": "snapshot"}},
                  "spec": {"source": {"persistentVolumeClaimName": "claim-alice"}}}
    assert make_volume_snapshot("n", "p", snapshot_class="c", labels={})["spec"]["volumeSnapshotClassName"] == "c"
    secret = {"metadata": {"name": "hub", "labels": {"app": "jupyterhub"}, "resourceVersion": "7",
                           "annotations": {"meta.helm.sh/release-name": "jh"}},
              "type": "Opaque", "data": {"values.yaml": "eA=="}}
    rec = secret_record(secret)
    assert rec == {"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "hub", "labels": {"app": "jupyterhub"},
                                "annotations": {"meta.helm.sh/release-name": "jh"}},
                   "type": "Opaque", "data": {"values.yaml": "eA=="}}
    copy = make_secret_copy(rec, "hub-jdr-previous-x", {"l": "v"})
    assert copy["metadata"] == {"name": "hub-jdr-previous-x", "labels": {"l": "v"},
                                "annotations": {"jdr.hub.jupyter.org/copy-of": "hub"}}
    assert copy["data"] == rec["data"]


def test_names_are_dns_labels():
    n = short_name("jdr-bk", "20261125T191440Z-a1b2c3", "alice-example-com-" + "x" * 80)
    assert len(n) <= 63 and n.startswith("jdr-bk-alice-example-com") and n == n.lower()
    assert short_name("jdr-bk", "r1", "k") != short_name("jdr-bk", "r2", "k")


def test_quantities():
    assert parse_quantity("1Gi") == 2**30 and parse_quantity("500M") == 500 * 10**6
    assert parse_quantity("1073741824") == 2**30 and parse_quantity(7) == 7


def test_mover_env_has_no_secrets_and_refuses_a_key_file(tmp_path):
    s = load_settings(None, environ={"JDR_REPOSITORY": "s3://b/p", "JDR_ENCRYPTION_KEY_ENV": "JDR_KEY",
                                     "JDR_REPOSITORY_ENDPOINT_URL": "http://s3:9000"})
    env = dict(mover_env(s))
    assert env["JDR_REPOSITORY_URL"] == "s3://b/p" and env["JDR_ENCRYPTION_KEY_ENV"] == "JDR_KEY"
    assert env["JDR_REPOSITORY_ENDPOINT_URL"] == "http://s3:9000"
    assert not any("SECRET" in k or "AWS" in k for k in env)
    s2 = load_settings(None, environ={"JDR_REPOSITORY": "s3://b/p", "JDR_ENCRYPTION_KEY_FILE": "/k"})
    with pytest.raises(ConfigError, match="key_file") as e:
        mover_env(s2)
    assert "key_env" in (e.value.hint or "")


def test_a_file_repository_is_refused_with_kind_kubernetes():
    """Issue #11 item 6: movers cannot see the jdr pod's (or the workstation's) paths; refused, exit 2."""
    s = load_settings(None, environ={"JDR_REPOSITORY": "file:///var/backups/jdr", "JDR_DEPLOYMENT_KIND": "kubernetes"})
    with pytest.raises(ConfigError, match=r"repository.url: file:///var/backups/jdr .*deployment.kind kubernetes") as e:
        mover_env(s)
    assert e.value.exit_code == 2 and "s3://" in (e.value.hint or "")


def test_container_result():
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 3, "reason": "Error",
                                                                      "message": "{}"}}}]}}
    assert container_result(pod) == (3, "Error", "{}")
    assert container_result({"status": {}}) == (None, "", "")


# --- users to PVCs --------------------------------------------------------------------------------------

T = datetime(2026, 11, 20, 12, tzinfo=UTC)


def db(*servers, users=None):
    names = sorted(users if users is not None else {s.user for s in servers})
    return DbInfo(revision="x", integrity="ok", size=1, users=names, servers=list(servers))


def test_mapping_by_spawner_state_annotations_unmapped_and_missing():
    pvcs = [
        pvc("claim-alice-example-com---ff8d9819", "alice@example.com"),  # safe scheme, state says so
        pvc("claim-alice-40example-2ecom", "alice@example.com"),  # escape scheme, superseded: no user
        pvc("claim-bob-analysis", "bob", "analysis"),  # found by annotation only
        pvc("claim-bob"),  # no annotation, but the hub's state names it
        pvc("scratch"),  # nobody's
    ]
    info = db(ServerInfo("alice@example.com", pvc_name="claim-alice-example-com---ff8d9819", running=True,
                         started=T),
              ServerInfo("bob", pvc_name="claim-bob"), ServerInfo("bob", "analysis"),
              ServerInfo("carol", pvc_name="claim-carol"), users=["alice@example.com", "bob", "carol", "dave"])
    m = map_volumes(pvcs, info)
    got = {(v.user, v.server): v.source["pvc"]["name"] for v in m.volumes if v.user is not None}
    assert got == {("alice@example.com", ""): "claim-alice-example-com---ff8d9819",
                   ("bob", ""): "claim-bob", ("bob", "analysis"): "claim-bob-analysis"}
    unmapped = sorted(v.source["pvc"]["name"] for v in m.volumes if v.user is None)
    assert unmapped == ["claim-alice-40example-2ecom", "scratch"]
    keys = {v.key for v in m.volumes}
    assert volume_key(None, claim="scratch") in keys and volume_key("bob", "analysis") in keys
    assert m.users_without_volume == ["carol", "dave"]
    assert any("claim-carol" in w for w in m.warnings)
    alice = next(v for v in m.volumes if v.user == "alice@example.com")
    assert alice.running and alice.source["activity"]["started"].startswith("2026-11-20T12:00:00")
    assert next(v for v in m.volumes if v.user is None).running is False
    assert next(v for v in m.volumes if v.source["pvc"]["name"] == "scratch").key == volume_key(None, claim="scratch")


def test_running_claims_from_pods_mark_volumes_running():
    m = map_volumes([pvc("claim-x", "x")], db(ServerInfo("x")), running_claims={"claim-x"})
    assert m.volumes[0].running


def test_find_user_pvc():
    pvcs = [pvc("a", "alice"), pvc("b", "bob", "gpu")]
    assert find_user_pvc(pvcs, "alice")["metadata"]["name"] == "a"
    assert find_user_pvc(pvcs, "bob") is None
    assert find_user_pvc(pvcs, "bob", "gpu")["metadata"]["name"] == "b"
    with pytest.raises(UsageError, match="several"):
        find_user_pvc([pvc("a", "alice"), pvc("a2", "alice")], "alice")


def test_hub_from_deployment_with_release_prefix():
    dep = {"metadata": {"name": "jh-hub"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"component": "hub", "release": "jh"}},
                    "template": {"spec": {
                        "securityContext": {"fsGroup": 1000},
                        "volumes": [{"name": "secret", "secret": {"secretName": "jh-hub"}},
                                    {"name": "pvc", "persistentVolumeClaim": {"claimName": "jh-hub-db-dir"}}],
                        "containers": [{"name": "hub", "image": "quay.io/jupyterhub/k8s-hub:4.1.0",
                                        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
                                        "volumeMounts": [{"name": "secret",
                                                          "mountPath": "/usr/local/etc/jupyterhub/secret/"},
                                                         {"name": "pvc", "mountPath": "/srv/jupyterhub"}]}]}}}}
    s = load_settings(None, environ={})
    hub = hub_from_deployment(dep, s.deployment.kubernetes)
    assert (hub.deployment, hub.db_claim, hub.secret, hub.uid, hub.gid, hub.fs_group) == \
        ("jh-hub", "jh-hub-db-dir", "jh-hub", 1000, 1000, 1000)
    assert hub.pod_selector == "component=hub,release=jh" and hub.db_dir == "/srv/jupyterhub"
    no_pvc = {**dep, "spec": {**dep["spec"], "template": {"spec": {"containers": [{"name": "hub"}]}}}}
    with pytest.raises(UsageError, match="sqlite-pvc"):
        hub_from_deployment(no_pvc, s.deployment.kubernetes)
