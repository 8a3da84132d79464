"""CSI VolumeSnapshots (``snapshot.storage.k8s.io/v1``): taken, awaited by watch, recorded, deleted; and
PVCs that jdr itself creates and waits for (from a snapshot, or a vanished user's PVC)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from dr.deployments.kubernetes.api import PVCS, PVS, SNAPSHOT_CONTENTS, SNAPSHOTS, Kube, KubeError, Obj, Resource
from dr.deployments.kubernetes.objects import make_volume_snapshot
from dr.errors import DeploymentError
from dr.model import Snapshot

log = logging.getLogger(__name__)


class SnapshotFailed(DeploymentError):
    """A VolumeSnapshot reported an error or did not become ready in time."""


def wait_object(kube: Kube, res: Resource, name: str, check: Callable[[Obj | None], bool], timeout: float,
                resource_version: str = "") -> Obj | None:
    """Wait, on a watch of this one object, until ``check(obj)`` is true (obj None: deleted); returns it.

    Starts from ``resource_version`` (e.g. the create's), else from a fresh GET. Raises TimeoutError.
    """
    deadline = time.monotonic() + timeout
    obj: Obj | None = None
    if not resource_version:
        obj = kube.get_or_none(res, name)
        if check(obj):
            return obj
        resource_version = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
        if obj is None and not resource_version:
            _, resource_version = kube.list(res, field_selector=f"metadata.name={name}", limit=1)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{res.kind} {name}")
        try:
            for kind, ev in kube.watch(res, field_selector=f"metadata.name={name}", resource_version=resource_version,
                                       timeout_seconds=max(1, min(int(left), 240))):
                resource_version = str((ev.get("metadata") or {}).get("resourceVersion") or resource_version)
                if kind == "BOOKMARK":
                    continue
                obj = None if kind == "DELETED" else ev
                if check(obj):
                    return obj
        except KubeError as e:  # 410 Gone or a broken stream: read the object afresh and watch again
            log.debug("watch of %s %s: %s", res.kind, name, e)
            obj = kube.get_or_none(res, name)
            if check(obj):
                return obj
            resource_version = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
            if not resource_version:
                _, resource_version = kube.list(res, field_selector=f"metadata.name={name}", limit=1)


def take_snapshot(kube: Kube, *, name: str, pvc: str, snapshot_class: str, labels: dict[str, str],
                  annotations: dict[str, str], timeout: float) -> Snapshot:
    """Create a VolumeSnapshot of ``pvc`` and wait (watch) until it is readyToUse.

    On an error status or a timeout the snapshot is deleted and SnapshotFailed raised.
    """
    created = kube.create(SNAPSHOTS, make_volume_snapshot(name, pvc, snapshot_class=snapshot_class, labels=labels,
                                                          annotations=annotations))
    version = str(created["metadata"].get("resourceVersion", ""))

    def done(obj: Obj | None) -> bool:
        if obj is None:
            raise SnapshotFailed(f"VolumeSnapshot {name} of PVC {pvc} was deleted while jdr waited for it")
        st = obj.get("status") or {}
        if st.get("error") and not st.get("readyToUse"):
            raise SnapshotFailed(f"VolumeSnapshot {name} of PVC {pvc} failed: "
                                 f"{(st['error'] or {}).get('message', 'no message')}")
        return bool(st.get("readyToUse"))

    try:
        ready = wait_object(kube, SNAPSHOTS, name, done, timeout, version)
    except TimeoutError:
        delete_quietly(kube, SNAPSHOTS, name)
        raise SnapshotFailed(f"VolumeSnapshot {name} of PVC {pvc} was not ready within {timeout:.0f}s",
                             hint="check the CSI snapshotter and the VolumeSnapshotClass "
                                  "(deployment.kubernetes.snapshot_class, snapshot_timeout)") from None
    except BaseException:
        delete_quietly(kube, SNAPSHOTS, name)
        raise
    assert ready is not None
    st = ready.get("status") or {}
    content = str(st.get("boundVolumeSnapshotContentName") or "")
    handle = ""
    used_class = str((ready.get("spec") or {}).get("volumeSnapshotClassName") or snapshot_class)
    if content:
        try:
            vsc = kube.get(SNAPSHOT_CONTENTS, content)
            handle = str((vsc.get("status") or {}).get("snapshotHandle") or "")
            used_class = used_class or str((vsc.get("spec") or {}).get("volumeSnapshotClassName") or "")
        except KubeError as e:  # recording the handle is a convenience; the snapshot itself is fine
            log.warning("could not read VolumeSnapshotContent %s: %s", content, e)
    return Snapshot(name=name, namespace=kube.namespace, content_name=content, handle=handle,
                    restore_size=str(st.get("restoreSize") or ""), snapshot_class=used_class)


def snapshot_ready(kube: Kube, snap: Snapshot) -> bool:
    obj = kube.get_or_none(SNAPSHOTS, snap.name, snap.namespace or None)
    return bool(obj and (obj.get("status") or {}).get("readyToUse") and not obj["metadata"].get("deletionTimestamp"))


def delete_quietly(kube: Kube, res: Resource, name: str, namespace: str | None = None) -> None:
    try:
        kube.delete(res, name, namespace)
    except KubeError as e:
        log.warning("could not delete %s %s: %s", res.kind, name, e)


def wait_gone(kube: Kube, res: Resource, name: str, timeout: float) -> None:
    try:
        wait_object(kube, res, name, lambda o: o is None, timeout)
    except TimeoutError:
        raise DeploymentError(f"{res.kind} {name} was not deleted within {timeout:.0f}s",
                              hint="something still uses it (a pod mounting a PVC keeps it Terminating)") from None


def wait_bound(kube: Kube, name: str, timeout: float) -> bool:
    """Wait until PVC ``name`` is Bound; False after ``timeout`` (e.g. WaitForFirstConsumer classes)."""
    def bound(obj: Obj | None) -> bool:
        if obj is None:
            raise DeploymentError(f"PVC {name} vanished while jdr waited for it to be bound")
        return (obj.get("status") or {}).get("phase") == "Bound"

    try:
        wait_object(kube, PVCS, name, bound, timeout)
    except TimeoutError:
        return False
    return True


def retain_volume(kube: Kube, pv_name: str) -> None:
    """Set a PV's reclaim policy to Retain, so deleting its claim cannot delete the data."""
    pv = kube.get(PVS, pv_name)
    if (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") != "Retain":
        kube.patch(PVS, pv_name, {"spec": {"persistentVolumeReclaimPolicy": "Retain"}})
        log.info("PersistentVolume %s: reclaim policy set to Retain", pv_name)
