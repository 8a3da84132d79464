"""Issue #14, the scenario: an attacker in the cluster takes the backup CronJob's Secret (the backup role's
credentials, docs/CREDENTIALS.md), deletes what they can in the bucket, then deletes the namespace.
`jdr restore --all` from the repository brings the hub back, because the server (a SeaweedFS enforcing the
IAM policies of docs/policies/, the ``roles`` fixture) refused every delete."""

from __future__ import annotations

import base64
import time

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.roles import BUCKET, URL
from tests.k8s.conftest import jdr_objects
from tests.k8s.test_disaster_recovery import backed_up_namespace, check_user_volumes, db_users

pytestmark = [pytest.mark.k8s, pytest.mark.s3]

LABELS = {"alice", "bob", "bob:analysis", "alice@example.com", "Émile"}  # the volumes of backed_up_namespace


def test_an_attacker_with_the_backup_credentials_deletes_what_they_can_then_the_namespace_restore_all_brings_it_back(
        k8s_cluster, z2jh_namespace, jdr_k8s, roles):
    # jdr and its movers hold only the backup role's keys (in the Secret jdr-s3, as the CronJob would)
    jdr_kw = {"repo_url": URL, "s3_env": roles.backup}
    before: set[str] = set()

    def attack():
        # The attacker holds the same keys: list everything, then delete it one by one and in a batch.
        attacker = roles.client(roles.backup)
        listed = [o["Key"] for page in attacker.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                  for o in page.get("Contents", [])]
        assert any("/runs/" in k for k in listed) and any("/data/" in k for k in listed), listed
        for key in listed:
            with pytest.raises(ClientError) as e:
                attacker.delete_object(Bucket=BUCKET, Key=key)
            assert e.value.response["Error"]["Code"] == "AccessDenied", key
        batch = attacker.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in listed]})
        assert batch.get("Deleted", []) == []
        assert [e["Code"] for e in batch["Errors"]] == ["AccessDenied"] * len(listed)
        before.update(listed)
        assert roles.stored() == before  # nothing gone (and no lock of jdr's left to take)

    t0 = time.monotonic()
    old, _, trees, pvcs, users = backed_up_namespace(k8s_cluster, z2jh_namespace, jdr_k8s, jdr_kw=jdr_kw,
                                                     before_delete=attack, release="jh")
    assert before, "the attack did not run"
    # jdr itself (the CLI and every mover, through the recording proxy) was never refused, never deleted run data
    assert roles.refused() == [] and roles.deletes() == []

    ns = k8s_cluster.create_namespace()
    try:
        dr = jdr_k8s(ns, encrypted=True, **jdr_kw)
        doc = dr.run("--json", "restore", "--all", "--yes").json()
        assert doc["status"] == "done", doc
        assert {i["label"] for i in doc["items"]} == LABELS
        assert all(i["status"] == "ok" for i in doc["items"]), doc["items"]
        sec = k8s_cluster.core.read_namespaced_secret("jh-hub", ns)
        assert base64.b64decode(sec.data["hub.config.JupyterHub.cookie_secret"]).decode() == old.cookie_secret
        assert db_users(k8s_cluster.pvc_dir(ns, "jh-hub-db-dir") / "jupyterhub.sqlite") == users
        check_user_volumes(k8s_cluster, ns, old, trees, pvcs)
        assert jdr_objects(k8s_cluster, ns) == {"pods": [], "pvcs": [], "snapshots": []}
    finally:
        k8s_cluster.delete_namespace(ns, wait=False)
    print(f"\nbackup, attack, namespace deleted, restore --all: {time.monotonic() - t0:.1f}s")
