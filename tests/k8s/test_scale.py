"""Scale: a backup of 1,000 user PVCs, then a nightly run where only a few users were active.

The first run must archive every volume once (nothing to reference yet): no server runs, so the volumes
share batch movers (``mover_batch`` volumes at most per pod, at least ``concurrency`` pods): at most 100
mover pods for 1,000 PVCs. The second run starts movers only for the users whose server ran since
(activity-aware incremental); every other volume is referenced from the first run. Wall time, mover pods
and Kubernetes API calls of both runs are printed (``-s``); the mover counts are asserted.
``JDR_SCALE_USERS`` changes the number of users (default 1000; CI runs 250); ``JDR_SCALE_BATCH=1`` runs
a mover per volume, as before batching, for comparison.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from tests.k8s.conftest import jdr_objects

pytestmark = [pytest.mark.k8s, pytest.mark.s3, pytest.mark.slow, pytest.mark.timeout(7200)]

USERS = int(os.environ.get("JDR_SCALE_USERS", "1000"))
ACTIVE = 10
CONCURRENCY = 16
BATCH = int(os.environ.get("JDR_SCALE_BATCH", "25"))  # 1: a mover per volume (as before batching), to compare


def populate_hub_db(path, names):
    """Users with a default server each, KubeSpawner state naming their PVC, never started (JupyterHub ORM)."""
    from jupyterhub import orm

    session = orm.new_session_factory(f"sqlite:///{path}")()
    try:
        users = [orm.User(name=n) for n in names]
        session.add_all(users)
        session.flush()
        session.add_all([orm.Spawner(user=u, name="", state={"pvc_name": f"claim-{u.name}"}) for u in users])
        session.commit()
    finally:
        session.close()
    os.chown(path, 1000, 1000)


def test_backup_of_a_thousand_volumes_then_an_incremental_night(k8s_cluster, z2jh_namespace, jdr_k8s):
    t_setup = time.monotonic()
    ns = z2jh_namespace(users=(), running=(), start_hub=False)
    names = [f"user{i:04}" for i in range(USERS)]
    populate_hub_db(ns.hub_db_path(), names)
    labels = {**ns.chart_labels, "component": "singleuser-storage"}

    def make(name):
        ns._pvc(f"claim-{name}", labels, {"hub.jupyter.org/username": name})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(make, names))

    def all_bound():
        items = k8s_cluster.core.list_namespaced_persistent_volume_claim(
            ns.namespace, label_selector="component=singleuser-storage").items
        return sum(1 for p in items if p.status.phase == "Bound") == USERS
    k8s_cluster.wait_for(all_bound, 600, f"{USERS} PVCs bound", interval=2)
    pvs = {pv.spec.claim_ref.name: pv for pv in k8s_cluster.core.list_persistent_volume().items
           if pv.spec.claim_ref and pv.spec.claim_ref.namespace == ns.namespace}
    for name in names:  # a tiny home each
        d = k8s_cluster.storage.pv_dir(pvs[f"claim-{name}"])
        (d / "hello.txt").write_text(f"hello {name}\n")
        os.chown(d / "hello.txt", 1000, 100)
    setup_s = time.monotonic() - t_setup
    print(f"\nscale: {USERS} users and PVCs set up in {setup_s:.0f}s", flush=True)

    jdr = jdr_k8s(ns.namespace, kubernetes={"concurrency": CONCURRENCY, "mover_batch": BATCH, "mover_timeout": 600})
    t0 = time.monotonic()
    first = jdr.run("--json", "backup", timeout=7200).json()
    first_s = time.monotonic() - t0
    calls1 = jdr.calls()
    print(f"scale: first run {first_s:.0f}s", flush=True)
    assert first["status"] == "complete", first["manifest"]["failures"][:5]
    assert len(first["manifest"]["volumes"]) == USERS
    assert all(v["status"] == "ok" and v["archive"] for v in first["manifest"]["volumes"])
    assert len({v["archive"]["key"] for v in first["manifest"]["volumes"]}) == USERS  # an archive each
    # batches of at most BATCH, in whole waves of CONCURRENCY pods; and the hub DB's mover
    waves = math.ceil(math.ceil(USERS / BATCH) / CONCURRENCY)
    pods = USERS if BATCH == 1 else min(USERS, max(CONCURRENCY, waves * CONCURRENCY))
    assert calls1[("create", "pods")] == pods + 1, calls1
    assert BATCH == 1 or USERS < 1000 or calls1[("create", "pods")] <= 100

    # a day passes: ACTIVE users start their servers and write something
    now = datetime.now(UTC).replace(tzinfo=None)
    active = names[:: USERS // ACTIVE][:ACTIVE]
    con = sqlite3.connect(ns.hub_db_path())
    with con:
        for n in active:
            con.execute("update spawners set started = ?, last_activity = ? where user_id = "
                        "(select id from users where name = ?)", (now, now + timedelta(minutes=5), n))
    con.close()
    writers = active[: ACTIVE // 2]
    for n in writers:
        (k8s_cluster.storage.pv_dir(pvs[f"claim-{n}"]) / "today.txt").write_text("new work\n")
        os.chown(k8s_cluster.storage.pv_dir(pvs[f"claim-{n}"]) / "today.txt", 1000, 100)
    jdr.reset_audit()
    t0 = time.monotonic()
    second = jdr.run("--json", "backup", timeout=3600).json()
    second_s = time.monotonic() - t0
    calls2 = jdr.calls()
    assert second["status"] == "complete"
    vols = second["manifest"]["volumes"]
    fresh = sorted(v["user"] for v in vols if v["reused_from"] is None)
    assert fresh == sorted(writers)  # the other active users' files did not change (fingerprint-equal)
    moved = calls2[("create", "pods")] - 1
    assert moved == ACTIVE, moved
    assert sum(1 for v in vols if v["reused_from"] == first["run"]) == USERS - len(writers)
    assert jdr_objects(k8s_cluster, ns.namespace)["pods"] == []
    print(f"\nscale: {USERS} user PVCs (setup {setup_s:.0f}s, concurrency {CONCURRENCY}, mover_batch {BATCH}, "
          f"2 simulated nodes)\n"
          f"  first run:  {first_s:7.1f}s wall, {sum(calls1.values()):6d} Kubernetes API calls, "
          f"{calls1[('create', 'pods')]} mover pods\n"
          f"  second run: {second_s:7.1f}s wall, {sum(calls2.values()):6d} Kubernetes API calls, "
          f"{calls2[('create', 'pods')]} mover pods ({ACTIVE} active users + the hub DB)\n"
          f"  calls by verb (second run): {dict(sorted(calls2.items()))}")
