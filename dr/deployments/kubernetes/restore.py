"""Restoring one volume on Kubernetes, safely.

Whatever the source, a restore never writes into a PVC that a running pod mounts: it waits for the user's
pod to go (the operation has asked the hub to stop the server), removes movers that an interrupted earlier
attempt left on that PVC, and otherwise refuses. (The exception: a self-service restore, ``while_running``,
creates new files only and runs beside the server: :mod:`.live_restore`.) Then, by what the run holds:

- an archive (``archive`` and ``snapshot+archive``): a mover mounts the PVC read-write and restores into
  it staged, then swapped (``jdr agent restore-volume`` → :func:`dr.deployments.volume_swap.restore_into`);
  the replaced contents are handed to the volume's owner as ``jdr-replaced-<time>/`` in it. A vanished PVC is first
  recreated under its remembered name with its recorded labels, annotations, class, access modes and size
  (KubeSpawner 7.1 does not recreate a remembered PVC).
- only a snapshot, and the PVC is gone: it is recreated under its remembered name, with its recorded
  metadata, from the VolumeSnapshot (nothing to keep).
- only a snapshot, and the PVC exists (whole volume, ``--path``, ``--into`` or ``--as``): a temporary PVC is
  made from the snapshot and a mover copies from it into the target PVC through the same staged swap (so
  selections, safety checks and ``.jdr-restore/previous-*`` are those of an archive restore), then the
  temporary PVC is deleted. jdr never deletes a user's PVC, so it needs no right on PersistentVolumes (a
  cluster-scoped ``patch persistentvolumes`` could not be limited to this namespace's volumes).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dr.deployments.base import VolumeRestore, VolumeRestoreResult
from dr.deployments.kubernetes.api import PODS, PVCS, KubeConflict, Obj
from dr.deployments.kubernetes.discovery import find_user_pvc
from dr.deployments.kubernetes.live_restore import restore_while_running
from dr.deployments.kubernetes.objects import (
    DATA_MOUNT,
    MANAGED_BY,
    RESTORED_ANNOTATION,
    SOURCE_MOUNT,
    WRITER,
    Mount,
    MoverSpec,
    jdr_labels,
    make_pvc,
    parse_quantity,
    short_name,
    volume_security,
)
from dr.deployments.kubernetes.snapshots import (
    delete_quietly,
    snapshot_ready,
    wait_bound,
)
from dr.errors import DeploymentError, UsageError
from dr.model import VolumeItem, new_run_id
from dr.repository.repository import Repository
from dr.util.timefmt import iso, utcnow

if TYPE_CHECKING:
    from dr.deployments.kubernetes.deployment import KubernetesDeployment

log = logging.getLogger(__name__)


def find_target_pvc(dep: KubernetesDeployment, user: str, server: str, item: VolumeItem | None) -> str | None:
    """The PVC of ``user``'s (``server``'s) volume: the one annotated as theirs, else (restoring their own
    item) the name the run recorded, which may have vanished."""
    found = find_user_pvc(dep.user_pvcs(), user, server)
    if found is not None:
        return str(found["metadata"]["name"])
    if item is not None and item.user == user and item.server == server:
        return str((item.source.get("pvc") or {}).get("name") or "") or None
    return None


def restore_volume(dep: KubernetesDeployment, req: VolumeRestore, repo: Repository) -> VolumeRestoreResult:
    item = req.item
    record: dict[str, Any] = dict(item.source.get("pvc") or {})
    if req.target_user is None:
        claim = str(record.get("name") or "")
        same = True
    else:
        claim = find_target_pvc(dep, req.target_user, req.target_server, item) or ""
        same = req.target_user == item.user and req.target_server == item.server
    if not claim:
        whose = f"{req.target_user!r}" + (f" (server {req.target_server!r})" if req.target_server else "")
        raise UsageError(f"no PVC of {whose} in {dep.namespace} (none is annotated hub.jupyter.org/username "
                         "with that name)",
                         hint="start the user's server once so that KubeSpawner creates their volume")
    if item.archive is None and item.snapshot is None:
        raise DeploymentError(f"{item.label}: the run holds neither an archive nor a snapshot of this volume")
    if req.while_running:  # self-service: new files only, beside the running server (never waits for it)
        return restore_while_running(dep, req, claim, repo)
    op = new_run_id(utcnow())
    ensure_free(dep, claim)
    existing = dep.kube.get_or_none(PVCS, claim)
    if item.archive is None:
        assert item.snapshot is not None
        if same and not req.paths and not req.exact_paths and req.into is None and existing is None:
            return _recreate_from_snapshot(dep, item, claim, record)
        return _copy_from_snapshot(dep, req, claim, record, existing, op, repo)
    if existing is None:
        _create_pvc(dep, record, claim)
    else:
        mark_restored(dep, claim)
    args = ["restore-volume", "--run", op, "--root", DATA_MOUNT, "--item-json",
            json.dumps(replace(item, source={}, warnings=()).to_dict(), separators=(",", ":"))]
    return _run_restore_mover(dep, req, claim, op, args, (Mount(claim, DATA_MOUNT, read_only=False),), repo)


def ensure_free(dep: KubernetesDeployment, claim: str) -> None:
    """Return once no pod but jdr's mounts ``claim``; refuse (DeploymentError) if one keeps it.

    Leftover jdr movers on the claim (an interrupted earlier restore) are deleted and waited for. While
    jdr itself stopped the hub (a full restore), a user's server pod is deleted: no hub can restart it.
    """
    cache = dep.cache
    for pod in cache.users_of(claim):
        if _is_jdr(pod):
            log.warning("removing mover %s left on PVC %s by an interrupted run", pod["metadata"]["name"], claim)
            delete_quietly(dep.kube, PODS, pod["metadata"]["name"])
    if dep._hub_stopped:
        for pod in cache.users_of(claim):
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if labels.get("component") == "singleuser-server":
                log.warning("deleting the server pod %s of a stopped hub: it mounts PVC %s", pod["metadata"]["name"],
                            claim)
                delete_quietly(dep.kube, PODS, pod["metadata"]["name"])
    # A stopped server's pod takes a moment to go (grace period); wait for it, as for any PVC change.
    if cache.wait(lambda c: True if not c.users_of(claim) else None, dep.k.pvc_timeout) is None:
        names = ", ".join(p["metadata"]["name"] for p in cache.users_of(claim))
        raise DeploymentError(f"refusing to write into PVC {claim}: it is mounted by running pod(s) {names}",
                              hint="stop the user's server (jdr does so through the Hub API when hub_api is "
                                   "configured) and retry")


def mark_restored(dep: KubernetesDeployment, claim: str) -> None:
    """Annotate the PVC before jdr writes into it, so the next backup reads it again (even if killed)."""
    dep.kube.patch(PVCS, claim, {"metadata": {"annotations": {RESTORED_ANNOTATION: iso(utcnow())}}})


def _restored_now() -> dict[str, str]:
    return {RESTORED_ANNOTATION: iso(utcnow())}


def _is_jdr(pod: Obj) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY) == "jdr"


def _create_pvc(dep: KubernetesDeployment, record: dict[str, Any], claim: str) -> None:
    log.info("PVC %s does not exist: recreating it as recorded", claim)
    try:
        dep.kube.create(PVCS, make_pvc({**record, "name": claim}, storage_class=dep.k.storage_class,
                                       annotations=_restored_now()))
    except KubeConflict:
        log.info("PVC %s appeared meanwhile; restoring into it", claim)


def _run_restore_mover(dep: KubernetesDeployment, req: VolumeRestore, claim: str, op: str, args: list[str],
                       mounts: tuple[Mount, ...], repo: Repository) -> VolumeRestoreResult:
    for p in req.paths:
        args += ["--path", p]
    for p in req.exact_paths:
        args += ["--exact-path", p]
    if req.into is not None:
        args += ["--into", req.into]
    if not req.keep_previous:
        args.append("--discard-previous")
    decrypts = "--item-json" in args  # an archive: read back from the repository (a copy reads a volume)
    security = volume_security(req.item.source, dep.k.volume_uid, dep.k.volume_gid, writes=True)
    if security.privileged:
        log.warning("%s: the backup found several owners on this volume: running the mover as %s (the documented "
                    "exception to Pod Security 'restricted')", req.item.label, security.describe())
    spec = MoverSpec(name=short_name("jdr-rs", op, claim), run=op, role="restore", args=tuple(args), mounts=mounts,
                     security=security, decrypts=decrypts)
    result, _ = dep.movers.run_as_owner(spec, repo, privileged=WRITER, label=req.item.label)
    previous = result.get("previous")
    if previous and str(previous).startswith(DATA_MOUNT + "/"):
        previous = f"PVC {claim}: {str(previous)[len(DATA_MOUNT) + 1:]}"
    return VolumeRestoreResult(target=f"PVC {claim}" + (f" ({req.into}/)" if req.into else ""),
                               files=int(result.get("files", 0)), bytes=int(result.get("bytes", 0)),
                               previous=str(previous) if previous else None)


def _size(record: dict[str, Any], restore_size: str) -> str:
    size = str(record.get("size") or "1Gi")
    if restore_size and parse_quantity(restore_size) > parse_quantity(size):
        return restore_size
    return size


def _check_snapshot(dep: KubernetesDeployment, item: VolumeItem) -> None:
    snap = item.snapshot
    assert snap is not None
    if snap.namespace and snap.namespace != dep.namespace:
        raise DeploymentError(f"{item.label}: VolumeSnapshot {snap.name} is in namespace {snap.namespace}; a PVC can "
                              f"only be made from a snapshot of its own namespace ({dep.namespace})")
    if not snapshot_ready(dep.kube, snap):
        raise DeploymentError(f"{item.label}: VolumeSnapshot {snap.namespace}/{snap.name} no longer exists or is not "
                              "ready", hint="pick a run with an archive (methods archive, snapshot+archive)")


def _recreate_from_snapshot(dep: KubernetesDeployment, item: VolumeItem, claim: str,
                            record: dict[str, Any]) -> VolumeRestoreResult:
    _check_snapshot(dep, item)
    assert item.snapshot is not None
    previous = None
    body = make_pvc({**record, "name": claim}, snapshot=item.snapshot.name, storage_class=dep.k.storage_class,
                    size=_size(record, item.snapshot.restore_size), annotations=_restored_now())
    dep.kube.create(PVCS, body)
    warnings: tuple[str, ...] = ()
    if not wait_bound(dep.kube, claim, dep.k.pvc_timeout):
        warnings = (f"PVC {claim} is not bound yet after {dep.k.pvc_timeout}s (a WaitForFirstConsumer storage "
                    "class binds it when the user's server starts)",)
    log.info("%s: PVC %s recreated from VolumeSnapshot %s", item.label, claim, item.snapshot.name)
    return VolumeRestoreResult(target=f"PVC {claim}", files=item.files, bytes=item.bytes, previous=previous,
                               warnings=warnings)


def _copy_from_snapshot(dep: KubernetesDeployment, req: VolumeRestore, claim: str, record: dict[str, Any],
                        existing: Obj | None, op: str, repo: Repository) -> VolumeRestoreResult:
    item = req.item
    _check_snapshot(dep, item)
    assert item.snapshot is not None
    if existing is None:
        _create_pvc(dep, record, claim)
    else:
        mark_restored(dep, claim)
    temp = short_name("jdr-tmp", op, item.key)
    temp_record = {"accessModes": ["ReadWriteOnce"], "size": _size(record, item.snapshot.restore_size),
                   "storageClassName": record.get("storageClassName", ""),
                   "volumeMode": record.get("volumeMode", "Filesystem")}
    dep.kube.create(PVCS, make_pvc(temp_record, name=temp, snapshot=item.snapshot.name,
                                   storage_class=dep.k.storage_class, labels=jdr_labels(op, "temp")))
    try:
        args = ["restore-volume", "--run", op, "--root", DATA_MOUNT, "--source", SOURCE_MOUNT]
        mounts = (Mount(claim, DATA_MOUNT, read_only=False), Mount(temp, SOURCE_MOUNT, read_only=True))
        return _run_restore_mover(dep, req, claim, op, args, mounts, repo)
    finally:
        delete_quietly(dep.kube, PVCS, temp)
