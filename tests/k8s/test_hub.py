"""The hub on Kubernetes: its DB captured live by a mover, its Secret stored encrypted, and both restored
with the hub scaled down and back up."""

from __future__ import annotations

import base64
import sqlite3
import time

import pytest

from tests.k8s.conftest import jdr_objects

pytestmark = [pytest.mark.k8s, pytest.mark.s3]


def db_users(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted(r[0] for r in con.execute("select name from users"))
    finally:
        con.close()


def test_restore_hub_database_and_secret(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=("alice",), release="jh")  # names carry the "jh-" prefix
    jdr = jdr_k8s(ns.namespace, hub=ns, encrypted=True)
    out = jdr.run("--json", "backup").json()
    assert out["status"] == "complete", out
    hub = out["manifest"]["hub"]
    assert hub["secret"] is not None and hub["secret"]["encoding"] == "age"
    assert out["manifest"]["deployment"]["hub"]["deployment"] == "jh-hub"
    assert out["manifest"]["deployment"]["hub"]["db_claim"] == "jh-hub-db-dir"
    users_then = db_users(ns.hub_db_path())

    # after the backup: a new user signs up, and someone rotates the cookie secret
    st, _ = ns.api("POST", "/users/zoe")
    assert st == 201
    assert "zoe" in db_users(ns.hub_db_path())
    sec = k8s_cluster.core.read_namespaced_secret(ns.hub_secret, ns.namespace)
    rotated = base64.b64encode(b"rotated-secret").decode()
    sec.data["hub.config.JupyterHub.cookie_secret"] = rotated
    k8s_cluster.core.replace_namespaced_secret(ns.hub_secret, ns.namespace, sec)
    old_pod = ns.hub_pod().metadata.name

    t0 = time.monotonic()
    res = jdr.run("--json", "restore", "--hub", "--yes").json()
    seconds = time.monotonic() - t0
    assert res["status"] == "done", res
    assert res["hub"]["previous"].startswith("/srv/jupyterhub/jupyterhub.sqlite.jdr-previous-")

    # the hub was scaled down (a new pod) and is back and answering
    new_pod = ns.hub_pod()
    assert new_pod is not None and new_pod.metadata.name != old_pod
    assert ns.api("GET", "/")[0] == 200
    dep = k8s_cluster.apps.read_namespaced_deployment(ns.hub_deployment, ns.namespace)
    assert dep.spec.replicas == 1 and dep.status.ready_replicas == 1
    # its DB is the backed-up one, owned by the hub's uid, integrity-checked; the old one kept beside it
    db = ns.hub_db_path()
    assert db_users(db) == users_then and "zoe" not in users_then
    assert (db.stat().st_uid, db.stat().st_gid) == (1000, 1000)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    con.close()
    kept = db.parent / res["hub"]["previous"].rsplit("/", 1)[1]
    assert "zoe" in db_users(kept)
    # the Secret is back, and what it replaced is kept as a labelled copy
    sec = k8s_cluster.core.read_namespaced_secret(ns.hub_secret, ns.namespace)
    assert base64.b64decode(sec.data["hub.config.JupyterHub.cookie_secret"]).decode() == ns.cookie_secret
    copies = k8s_cluster.core.list_namespaced_secret(
        ns.namespace, label_selector="jdr.hub.jupyter.org/role=previous-secret").items
    assert len(copies) == 1 and copies[0].metadata.name.startswith(f"{ns.hub_secret}-jdr-previous-")
    assert copies[0].data["hub.config.JupyterHub.cookie_secret"] == rotated
    # the hub still knows its users' tokens (same cookie secret and DB): the jdr service token works
    st, info = ns.api("GET", "/users/alice")
    assert st == 200 and info["name"] == "alice"
    assert jdr_objects(k8s_cluster, ns.namespace) == {"pods": [], "pvcs": [], "snapshots": []}
    print(f"\nhub restore (scale down, secret, DB by mover, scale up, ready): {seconds:.1f}s")


def test_backup_without_encryption_skips_secret_and_dry_run_writes_nothing(k8s_cluster, z2jh_namespace, jdr_k8s):
    ns = z2jh_namespace(running=())
    jdr = jdr_k8s(ns.namespace, hub=ns)
    jdr.run("backup")  # creates the repository
    repo = jdr.repo()
    before = sorted(o.key for o in repo.store.list(""))
    plan = jdr.run("--json", "backup", "--dry-run").json()
    assert plan["status"] == "dry-run"
    assert {p["user"] for p in plan["planned"]} == {"alice", "bob", "alice@example.com", "Émile"}
    after = sorted(o.key for o in repo.store.list("") if not o.key.startswith("locks/"))
    assert after == [k for k in before if not k.startswith("locks/")]
    assert jdr_objects(k8s_cluster, ns.namespace)["pods"] == []
