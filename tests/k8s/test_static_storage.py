"""Static (shared) home storage on the test control plane: one RWX PVC of homes (z2jh
``singleuser.storage.type: static``, subPath ``{escaped_username}`` under the ``safe`` slug scheme, so that
Émile's home is named differently from his ``{username}``), an orphan directory, an extra volume.

One scenario: backup (every home an item, archived by batch movers that mount the shared volume once; the
orphan and the extra volume too), an incremental backup (only the running user's home re-read), restoring
alice (the rest of the shared volume unchanged, byte for byte), restoring everything, and a drill. A second,
smaller one for ``{username}`` homes and the snapshot methods (one VolumeSnapshot of the shared PVC per run).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from tests.k8s.conftest import jdr_objects
from tests.k8s.test_drill_k8s import drill, drill_ns  # noqa: F401 (a fixture)
from tests.treeutil import snapshot_tree

pytestmark = [pytest.mark.k8s, pytest.mark.s3]

USERS = ({"name": "alice"}, {"name": "bob"}, {"name": "Émile"})
HOMES = "home-nfs"
DATA = "datasets-pvc"


def volume_hash(root: Path, skip: str) -> str:
    """A digest of everything on the shared volume (names, modes, owners, contents) except ``skip``/."""
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == skip or rel.startswith(skip + "/"):
            dirs[:] = []
            continue
        dirs.sort()
        for name in sorted(files + dirs):
            p = Path(dirpath) / name
            st = p.lstat()
            h.update(f"{rel}/{name}:{st.st_mode}:{st.st_uid}:{st.st_gid}:{st.st_size}\n".encode())
            if p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
    return h.hexdigest()


def by_label(manifest: dict) -> dict:
    """A run's items by user (homes), subdirectory (orphans) or PVC name (extra volumes)."""
    return {(i.get("user") or i["source"].get("subPath") or i["source"]["pvc"]["name"]): i
            for i in manifest["volumes"]}


def home(path: Path) -> dict:
    return {k: v for k, v in snapshot_tree(path).items()
            if not k.startswith((b".jdr-restore", b"jdr-replaced-")) and k != b"."}


def test_static_homes_backup_incremental_restore_and_drill(k8s_cluster, z2jh_namespace, jdr_k8s,
                                                           drill_ns):  # noqa: F811
    t0 = time.monotonic()
    ns = z2jh_namespace(users=USERS, running=("alice",), static={"pvcName": HOMES, "subPath": "{escaped_username}"},
                        extra_volumes={"datasets": DATA})
    shared = ns.pvc_dir(HOMES)
    assert ns.home_dirs == {"alice": "alice", "bob": "bob", "Émile": "-c3-89mile"}
    ns.write_file(HOMES, "alice/work/a.ipynb", json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                         "nbformat_minor": 5}))
    ns.write_file(HOMES, "bob/private.txt", "only bob\n", mode=0o600)
    ns.write_file(HOMES, "olduser/thesis.tex", "an orphan\n")
    (shared / "bob" / "to-alice").symlink_to("../alice")
    os.lchown(shared / "bob" / "to-alice", 1000, 100)
    jdr = jdr_k8s(ns.namespace, hub=ns, kubernetes={"extra_volumes": ["datasets"], "drill_namespace": drill_ns})

    t1 = time.monotonic()
    jdr.reset_audit()
    first = jdr.run("--json", "backup").json()
    t2 = time.monotonic()
    pods = {"backup": jdr.calls()[("create", "pods")]}
    assert first["status"] == "complete", first
    storage = first["manifest"]["deployment"]["storage"]  # recorded in the run: where the layout came from
    assert storage["kind"] == "static" and storage["claim"] == HOMES and storage["subpath"] == "{escaped_username}"
    assert storage["origin"]["kind"] == "the hub Secret's values.yaml"
    items = by_label(first["manifest"])
    subpaths = {label: i["source"].get("subPath") for label, i in items.items()}
    assert {subpaths[u] for u in ("alice", "bob", "Émile")} == {"alice", "bob", "-c3-89mile"}
    assert "olduser" in subpaths.values()  # the orphan
    assert any(i["source"].get("extra_volume") == "datasets" for i in items.values())
    trees = {key: home(ns.home_dir(key)) for key in ("alice", "bob", "Émile")}

    jdr.reset_audit()
    second = jdr.run("--json", "backup").json()
    t3 = time.monotonic()
    pods["incremental"] = jdr.calls()[("create", "pods")]
    again = by_label(second["manifest"])
    assert not again["alice"].get("reused_from") or again["alice"]["source"]["verified_in"] == second["run"]
    for user in ("bob", "Émile"):  # inactive: referenced without a mover
        assert again[user]["reused_from"] == first["run"], again[user]

    # restore alice: her home comes back; nothing else on the shared volume changes
    ns.write_file(HOMES, "alice/work/a.ipynb", "damaged")
    ns.write_file(HOMES, "alice/new.txt", "written after the backup")
    outside = volume_hash(shared, "alice")
    res = jdr.run("--json", "restore", "--user", "alice", "--yes").json()
    t4 = time.monotonic()
    assert res["status"] == "done", res
    assert home(ns.home_dir("alice")) == trees["alice"]
    assert volume_hash(shared, "alice") == outside

    # restore everything (hub, homes, the orphan, the extra volume)
    ns.write_file(HOMES, "bob/private.txt", "damaged", mode=0o600)
    ns.write_file(HOMES, "olduser/thesis.tex", "damaged")
    ns.write_file(DATA, "shared/data.csv", "damaged")
    res = jdr.run("--json", "restore", "--all", "--yes").json()
    t5 = time.monotonic()
    assert res["status"] == "done", res
    for key in ("bob", "Émile"):
        assert home(ns.home_dir(key)) == trees[key], key
    assert (shared / "olduser" / "thesis.tex").read_text() == "an orphan\n"
    assert (ns.pvc_dir(DATA) / "shared" / "data.csv").read_text() == "a,b\n1,2\n"
    assert os.readlink(shared / "bob" / "to-alice") == "../alice"

    rc, doc, err = drill(jdr)
    assert rc == 0 and doc["ok"], (doc.get("failures"), err[-4000:])
    assert {"alice", "bob", "Émile"} <= {v["label"] for v in doc["volumes"]}
    assert jdr_objects(k8s_cluster, ns.namespace) == {"pods": [], "pvcs": [], "snapshots": []}
    print(f"\nnamespace {t1 - t0:.1f}s, backup {t2 - t1:.1f}s, incremental {t3 - t2:.1f}s, restore alice "
          f"{t4 - t3:.1f}s, restore all {t5 - t4:.1f}s, drill {time.monotonic() - t5:.1f}s; mover pods {pods}")


def test_username_homes_one_snapshot_per_run(k8s_cluster, z2jh_namespace, jdr_k8s, drill_ns):  # noqa: F811
    """``{username}`` homes, snapshot methods: one VolumeSnapshot of the shared PVC per run, recorded in every
    home's item with its subPath; restoring alice from the snapshot changes nothing else on the shared volume;
    ``snapshot+archive`` archives every home from one snapshot; prune deletes a snapshot no kept run names."""
    t0 = time.monotonic()
    ns = z2jh_namespace(users=USERS, static={"pvcName": HOMES, "subPath": "{username}"})
    shared = ns.pvc_dir(HOMES)
    assert ns.home_dirs["alice"] == "alice" and ns.home_dirs["bob"] == "bob"
    ns.write_file(HOMES, "alice/notes.md", "alice's notes\n")
    ns.write_file(HOMES, "bob/private.txt", "only bob\n", mode=0o600)
    jdr = jdr_k8s(ns.namespace, hub=ns, backup={"method": "snapshot"}, retention={"keep_last": 1},
                  kubernetes={"drill_namespace": drill_ns})
    trees = {key: home(ns.home_dir(key)) for key in ("alice", "bob", "Émile")}

    t1 = time.monotonic()
    first = jdr.run("--json", "backup").json()
    assert first["status"] == "complete", first
    assert first["manifest"]["deployment"]["storage"]["subpath"] == "{username}"
    homes = {u: by_label(first["manifest"])[u] for u in ("alice", "bob", "Émile")}
    snap = {i["snapshot"]["name"] for i in homes.values()}
    assert len(snap) == 1 and all(i["archive"] is None for i in homes.values())  # one snapshot for all homes
    assert {u: i["source"]["subPath"] for u, i in homes.items()} == ns.home_dirs
    taken = jdr_objects(k8s_cluster, ns.namespace)["snapshots"]
    assert taken == list(snap), taken  # one VolumeSnapshot in the namespace, not one per home

    # restore alice from the snapshot only: her subdirectory comes back, nothing else on the volume changes
    t2 = time.monotonic()
    ns.write_file(HOMES, "alice/notes.md", "damaged")
    ns.write_file(HOMES, "alice/new.txt", "written after the backup")
    outside = volume_hash(shared, "alice")
    res = jdr.run("--json", "restore", "--user", "alice", "--yes").json()
    assert res["status"] == "done", res
    assert home(ns.home_dir("alice")) == trees["alice"]
    assert volume_hash(shared, "alice") == outside

    # snapshot+archive: every home archived from one new snapshot, which is then deleted
    t3 = time.monotonic()
    second = jdr.run("--json", "backup", "--method", "snapshot+archive").json()
    assert second["status"] == "complete", second
    homes2 = {u: by_label(second["manifest"])[u] for u in ("alice", "bob", "Émile")}
    assert all(i["archive"] and i["snapshot"] is None for i in homes2.values()), homes2
    assert len({i["source"]["snapshot"] for i in homes2.values()} - snap) == 1
    assert jdr_objects(k8s_cluster, ns.namespace) == {"pods": [], "pvcs": [], "snapshots": list(snap)}

    # prune keeps the last run: the first run's snapshot, named by its three homes, is deleted once
    pruned = jdr.run("--json", "prune").json()
    assert pruned["snapshots_deleted"] == 1, pruned
    k8s_cluster.wait_for(lambda: not jdr_objects(k8s_cluster, ns.namespace)["snapshots"], 30, "snapshot gone")

    t4 = time.monotonic()
    rc, doc, err = drill(jdr)
    assert rc == 0 and doc["ok"], (doc.get("failures"), err[-4000:])
    assert {"alice", "bob", "Émile"} <= {v["label"] for v in doc["volumes"]}
    print(f"\nnamespace {t1 - t0:.1f}s, snapshot backup {t2 - t1:.1f}s, restore alice {t3 - t2:.1f}s, "
          f"snapshot+archive and prune {t4 - t3:.1f}s, drill {time.monotonic() - t4:.1f}s")
