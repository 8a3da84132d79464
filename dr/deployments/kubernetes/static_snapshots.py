"""Snapshot methods for homes on one shared volume (static storage): one VolumeSnapshot per run, not per home.

- ``snapshot``: the homes that need a new capture (activity-aware reuse first, as for PVCs) share ONE
  VolumeSnapshot of the shared PVC, taken once per run; each home's item records it (``snapshot``) and its
  ``source.subPath``: the manifest says which home lives in which snapshot, at which subdirectory. Prune
  deletes the snapshot once no kept run's item refers to it (its name is shared; dr/operations/prune.py
  keeps a snapshot any kept item names).
- ``snapshot+archive``: that one snapshot, a temporary PVC made from it, and the homes archived from that PVC
  by batch movers (:mod:`.batch`: the PVC mounted once, each home opened safely), so that every home is
  from one point in time; then the temporary PVC and the snapshot are deleted (the archives are the backup).
- Restoring a home from a snapshot-only run: a temporary PVC from the snapshot, mounted whole and read-only,
  and the shared PVC mounted with the home's subPath; the mover opens the home in the snapshot safely
  (``--source-home``: never through a link) and copies it with the staged swap of every restore. Siblings
  are in neither mount's reach for writing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dr.deployments.base import BackupContext, Volume, VolumeRestore, VolumeRestoreResult
from dr.deployments.kubernetes import backup as volume_backups
from dr.deployments.kubernetes import batch as volume_batches
from dr.deployments.kubernetes.api import PVCS, SNAPSHOTS
from dr.deployments.kubernetes.objects import (
    DATA_MOUNT,
    SOURCE_MOUNT,
    Mount,
    jdr_labels,
    make_pvc,
    parse_quantity,
    short_name,
)
from dr.deployments.kubernetes.snapshots import delete_quietly, take_snapshot
from dr.errors import JdrError
from dr.model import Snapshot, VolumeItem

if TYPE_CHECKING:
    from dr.deployments.kubernetes.deployment import KubernetesDeployment
    from dr.repository.repository import Repository

log = logging.getLogger(__name__)


def backup_shared(dep: KubernetesDeployment, volumes: Sequence[Volume], ctx: BackupContext,
                  previous: dict[str, VolumeItem]) -> list[VolumeItem]:
    """Items of the static homes ``volumes`` (in order) by ``ctx.method`` (module doc); failures are items."""
    done: dict[str, VolumeItem] = {}
    todo: dict[str, list[Volume]] = {}
    for vol in volumes:
        try:
            reused = volume_backups.reuse_inactive(dep, vol, ctx, previous.get(vol.key))
        except JdrError as e:
            done[vol.key] = replace(volume_backups.base_item(vol, ctx), status="failed", error=str(e))
            continue
        if reused is not None:
            dep.count("reused_inactive")
            done[vol.key] = reused
            continue
        todo.setdefault(str(vol.source["pvc"]["name"]), []).append(vol)
    for claim, vols in todo.items():
        started = time.monotonic()
        try:
            snap = take_snapshot(dep.kube, name=short_name("jdr-snap", ctx.run, claim), pvc=claim,
                                 snapshot_class=dep.k.snapshot_class, labels=jdr_labels(ctx.run, "snapshot"),
                                 annotations=dict(dep.k.snapshot_annotations), timeout=dep.k.snapshot_timeout)
        except JdrError as e:
            log.error("PVC %s: snapshot failed: %s (its %d homes fail)", claim, e, len(vols))
            for v in vols:
                done[v.key] = replace(volume_backups.base_item(v, ctx), status="failed", error=str(e),
                                      seconds=time.monotonic() - started)
            continue
        dep.count("snapshots")
        log.info("PVC %s: one VolumeSnapshot %s for %d homes", claim, snap.name, len(vols))
        if ctx.method == "snapshot":
            for v in vols:
                done[v.key] = replace(volume_backups.base_item(v, ctx), snapshot=snap,
                                      seconds=time.monotonic() - started)
        else:
            done.update(_archive_from_snapshot(dep, vols, ctx, previous, snap))
    return [done[v.key] for v in volumes]


def _temp_record(record: dict[str, Any], snap: Snapshot) -> dict[str, Any]:
    size = str(record.get("size") or "1Gi")
    if snap.restore_size and parse_quantity(snap.restore_size) > parse_quantity(size):
        size = snap.restore_size
    return {"accessModes": list(record.get("accessModes") or ["ReadWriteMany"]), "size": size,
            "storageClassName": record.get("storageClassName", ""),
            "volumeMode": record.get("volumeMode", "Filesystem")}


def _archive_from_snapshot(dep: KubernetesDeployment, vols: list[Volume], ctx: BackupContext,
                           previous: dict[str, VolumeItem], snap: Snapshot) -> dict[str, VolumeItem]:
    record = dict(vols[0].source["pvc"])
    temp = short_name("jdr-tmp", ctx.run, record["name"])
    try:
        dep.kube.create(PVCS, make_pvc(_temp_record(record, snap), name=temp, snapshot=snap.name,
                                       storage_class=dep.k.storage_class, labels=jdr_labels(ctx.run, "temp")))
        # the homes as found in the temporary PVC (no uid: never mistaken for the shared PVC's last capture)
        staged = [replace(v, source={**v.source, "pvc": {**_temp_record(record, snap), "name": temp, "uid": ""}})
                  for v in vols]
        items = list(volume_batches.backup_batched(dep, staged, ctx, previous))
    except JdrError as e:
        log.error("PVC %s: archiving from snapshot %s failed: %s", record["name"], snap.name, e)
        return {v.key: replace(volume_backups.base_item(v, ctx), status="failed", error=str(e)) for v in vols}
    finally:
        delete_quietly(dep.kube, PVCS, temp)
        delete_quietly(dep.kube, SNAPSHOTS, snap.name)
    by_key = {v.key: v for v in vols}
    return {i.key: replace(i, source={**i.source, "pvc": by_key[i.key].source["pvc"], "snapshot": snap.name})
            for i in items}


def restore_home_from_snapshot(dep: KubernetesDeployment, req: VolumeRestore, claim: str, sub: str, op: str,
                               repo: Repository) -> VolumeRestoreResult:
    """Copy the home recorded at ``source.subPath`` in the item's snapshot into ``sub`` of ``claim`` only."""
    from dr.deployments.kubernetes import restore as volume_restores

    item = req.item
    volume_restores._check_snapshot(dep, item)
    assert item.snapshot is not None
    recorded = str(item.source.get("subPath") or "")
    temp = short_name("jdr-tmp", op, item.key)
    dep.kube.create(PVCS, make_pvc(_temp_record(dict(item.source.get("pvc") or {}), item.snapshot), name=temp,
                                   snapshot=item.snapshot.name, storage_class=dep.k.storage_class,
                                   labels=jdr_labels(op, "temp")))
    try:
        args = ["restore-volume", "--run", op, "--root", DATA_MOUNT, "--source", SOURCE_MOUNT,
                "--source-home", recorded]
        mounts = (Mount(claim, DATA_MOUNT, read_only=False, sub_path=sub),
                  Mount(temp, SOURCE_MOUNT, read_only=True))
        return volume_restores._run_restore_mover(dep, req, claim, op, args, mounts, repo, shared=True)
    finally:
        delete_quietly(dep.kube, PVCS, temp)
